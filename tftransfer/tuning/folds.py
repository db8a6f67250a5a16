"""Cross-validation for small data: stratified folds and how their scores decide.

With a few hundred labelled examples a 20 % hold-out is a handful of images:
`tune()` then scores each trial on k stratified folds of train + validation
(one `TransferHyperModel` per fold) and keeps `fit`'s defaults unless the best
trial beats them fold by fold.
"""

import dataclasses

import numpy as np

#: Labelled examples (train + validation) below which `folds="auto"` selects by k-fold.
FOLDS_BELOW = 1000
#: The folds `folds="auto"` uses.
AUTO_FOLDS = 3


def _labelled_examples(data):
    """Labelled examples in the train and validation splits."""
    return sum(sum(data.counts.get(split, {}).values()) for split in ("train", "validation"))


def _resolve_folds(folds, data, objective, tuner, isolate_trials):
    """The number of folds (None: the validation split), checked."""
    if folds is None:
        return None
    if folds == "auto":
        counts = [data.counts.get("train", {}).get(name, 0)
                  + data.counts.get("validation", {}).get(name, 0) for name in data.class_names]
        small = _labelled_examples(data) < FOLDS_BELOW
        usable = (data.task == "multiclass" and not data.augmented and tuner != "hyperband"
                  and not isolate_trials and objective.startswith("val_")
                  and min(counts or [0]) >= AUTO_FOLDS)
        return AUTO_FOLDS if small and usable else None
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected 'auto', None or an int of at least 2; received "
                         f"{folds!r}.")
    problems = []
    if data.task != "multiclass":
        problems.append(f"the task is {data.task!r} (folds are stratified by class)")
    if data.augmented:
        problems.append("the training split is augmented in the pipeline (folds hold the "
                        "labelled images in memory as they are)")
    if tuner == "hyperband":
        problems.append("tuner='hyperband' scores partial trials")
    if isolate_trials:
        problems.append("isolate_trials=True")
    if not objective.startswith("val_"):
        problems.append(f"objective {objective!r} is a training metric")
    if problems:
        raise ValueError(f"folds={folds}: cross-validation cannot be used here: "
                         + "; ".join(problems) + ". Pass folds=None to choose on the "
                         "validation split.")
    return folds


def _labelled_arrays(data):
    """Train and validation examples as `(x, y)` arrays, in memory."""
    xs, ys = [], []
    for split in (data.train, data.validation):
        if split is None:
            continue
        for inputs, labels in split:
            xs.append(np.asarray(inputs))
            ys.append(np.asarray(labels))
    return np.concatenate(xs), np.concatenate(ys)


def _fold_bundles(x, y, data, folds, seed, batch_size):
    """`folds` bundles: each holds one stratified fold out as its validation split."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=int)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        fold_of[members] = (np.arange(len(members)) + int(rng.integers(folds))) % folds
    bundles = []
    for fold in range(folds):
        train, held = fold_of != fold, fold_of == fold
        counts = {split: {name: int(np.sum(y[mask] == index))
                          for index, name in enumerate(data.class_names)}
                  for split, mask in (("train", train), ("validation", held))}
        bundles.append(dataclasses.replace(
            data, test=None, counts=counts, augmented=False,
            train=tf.data.Dataset.from_tensor_slices((x[train], y[train])).shuffle(
                int(train.sum()), seed=seed + fold, reshuffle_each_iteration=True).batch(
                batch_size),
            validation=tf.data.Dataset.from_tensor_slices((x[held], y[held])).batch(
                batch_size)))
    return bundles


def _fold_scores(fold_models, values, objective):
    """Each fold's best-epoch objective for the trial with these values, or None."""
    pick = min if objective.endswith("loss") else max
    scores = []
    for model in fold_models:
        runs = [entry for entry in model.log if entry["hyperparameters"] == values]
        if not runs or objective not in runs[-1]["history"]:
            return None
        scores.append(pick(runs[-1]["history"][objective]))
    return np.asarray(scores)


def _keep_defaults_unless_beaten(best, defaults, fold_models, objective):
    """`(values, kept_defaults)`: fit's defaults stay the choice unless the best
    trial scores at least as well on every fold and better on average.

    With a few images per fold the best of several trials wins partly by
    chance (its mean is biased upwards by the choice itself); asking it to
    beat the fixed recipe fold by fold keeps the search from trading a known
    recipe for noise.
    """
    if best == defaults:
        return best, True
    mine, theirs = _fold_scores(fold_models, best, objective), _fold_scores(
        fold_models, defaults, objective)
    if mine is None or theirs is None:
        return best, False
    gain = (theirs - mine) if objective.endswith("loss") else (mine - theirs)
    if np.all(gain >= 0) and gain.mean() > 0:
        return best, False
    return defaults, True
