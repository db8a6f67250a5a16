"""`tune()`: the search over freeze depth and learning rates, sharing the head phase.

It checks its arguments, makes one `TransferHyperModel` (one per fold when
cross-validating), hands them to a keras-tuner Tuner (`tuners.py`), runs the
trials here or in their own processes (`isolated.py`), and returns a
`TuningResult` (`results.py`).
"""

import os

import numpy as np

from tftransfer import checks, files
from tftransfer.data.bundle import DatasetBundle
from tftransfer.tuning.folds import _fold_bundles, _labelled_arrays, _resolve_folds
from tftransfer.tuning.hypermodel import TransferHyperModel
from tftransfer.tuning.isolated import _isolated_search
from tftransfer.tuning.results import _tuning_result
from tftransfer.tuning.tuners import _make_tuner, atomic_search_files

TUNERS = ("bayesian", "hyperband", "random")
OBJECTIVES = ("val_accuracy", "val_loss", "accuracy", "loss")


def _check_choices(max_trials, tuner, objective):
    """Raises `ValueError` for a bad `max_trials`, `tuner` or `objective`."""
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials: expected an int of at least 1; received {max_trials!r}.")
    if tuner not in TUNERS:
        raise ValueError(f"tuner: expected one of {TUNERS}; received {tuner!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: the model reports {list(OBJECTIVES)}; received "
                         f"{objective!r}.")


def _as_bundle(data, objective, refit, seed):
    """`(bundle, arrays)`: an `(x, y)` pair split into a bundle (arrays: the pair, else
    None), checked with `objective` and `refit`."""
    given = None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        given = tuple(np.asarray(part) for part in data)
        if len(given[0]) != len(given[1]):
            raise ValueError(f"data: x and y have different lengths ({len(given[0])} and "
                             f"{len(given[1])}).")
        from tftransfer.data.images import from_arrays
        from tftransfer.data.text import from_texts

        if given[0].dtype.kind in "USO":
            given = (given[0].astype(str), given[1])
            data = from_texts(list(given[0]), given[1], validation_split=0.2, seed=seed)
        else:
            data = from_arrays(*given, validation_split=0.2, seed=seed)
    if isinstance(data, DatasetBundle) and objective.startswith("val_") and data.validation is None:
        raise ValueError(f"objective: {objective!r} needs a validation split, and the data has "
                         "none; build it with validation_split > 0 or use 'loss'/'accuracy'.")
    if refit not in ("auto", True, False):
        raise ValueError(f"refit: expected 'auto', True or False; received {refit!r}.")
    if not isinstance(data, DatasetBundle):
        raise TypeError("data: expected a DatasetBundle (tftransfer.data.from_*) or an (x, y) "
                        "pair of arrays; "
                        f"received {type(data).__name__}.")
    return data, given


def _project_name(backbone, project_name):
    """`project_name`, or `"<backbone>_search"`, checked to be a plain folder name."""
    name = backbone if isinstance(backbone, str) else getattr(backbone, "name", "model")
    project_name = project_name or "".join(
        c if c.isalnum() else "_" for c in str(name).split("/")[-1]) + "_search"
    if not isinstance(project_name, str) or project_name in ("", ".", "..") or any(
            sep in project_name for sep in ("/", "\\", os.sep)):
        raise ValueError("project_name: expected a plain folder name inside `directory` (no "
                         f"'/', '\\' or '..'); received {project_name!r}.")
    return project_name


def _hypermodels(backbone, data, given, folds, project_dir, settings, seed):
    """`(hypermodel, fold_models, arrays)`: the search's hypermodel, one per fold when
    cross-validating, and the labelled arrays the folds (and the refit) use."""
    hypermodel = TransferHyperModel(backbone, data, cache_dir=os.path.join(project_dir, "heads"),
                                    **settings)
    arrays, fold_models = given, []
    if folds:
        arrays = given or _labelled_arrays(data)
        fold_models = [TransferHyperModel(backbone, bundle, cache_dir=os.path.join(
            project_dir, "heads", f"fold{index}"), **settings)
            for index, bundle in enumerate(_fold_bundles(*arrays, data, folds, seed,
                                                         hypermodel._batch_size()))]
    return hypermodel, fold_models, arrays


def tune(backbone, data, *, search_space=None, tuner="random", max_trials=10,
         objective="val_accuracy", directory="tuning", project_name=None, overwrite=False,
         head_epochs="auto", fine_tune_epochs="auto", folds="auto", refit="auto",
         executions_per_trial=1, weights="imagenet", isolate_trials=False, seed=1337,
         verbose=0, activation_cache_mb=1024, keep=2, rank_method="logme"):
    """Searches freeze depth and learning rates with keras-tuner, sharing the head phase.

    The first trial is `fit()`'s defaults (the whole backbone, BatchNorm
    frozen, at 1e-3 after a head at 3e-3, dropout 0.2), and every trial
    trains as `fit()` does (its data-sized budget, cosine schedules with
    warmup, layer-wise decay when searched), so the search starts from the
    fixed recipe and keeps it unless another configuration scores better.
    With fewer than 1,000 labelled examples (`folds="auto"`), a 20 %
    hold-out is a handful of images and picks by noise: each trial is then
    scored by 3-fold stratified cross-validation over train + validation;
    the best configuration replaces `fit`'s defaults only if it scores at
    least as well on every fold and better on average (the best of several
    noisy scores is biased upwards by the choice itself), and the choice is
    trained again by `fit()` on all of them (`refit`).

    Backbone features are computed once per search (per fold); each distinct
    head setting (head learning rate, dropout) trains its head once, on those
    features, and every trial that fine-tunes from it starts from the same
    head weights (kept under `<directory>/<project_name>/heads/`).
    Fine-tuning, too, reuses what does not change: the frozen part's
    activations at the first open block are computed once for all searched
    depths, and each trial trains only its open blocks and head on them. The
    session is cleared between trials. Run again with `overwrite=False`
    after a kill and the search goes on without repeating finished trials.
    With KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT
    set, processes act as keras-tuner's chief (`KERASTUNER_TUNER_ID=chief`,
    which serves the oracle) and workers (any other id), for a search across
    machines.

    Args:
        backbone: str or Keras object. As in `build_classifier()`, or a
            text encoder as in `build_text_classifier()` when the data's
            inputs are strings (every trial then takes raw strings). Every
            trial starts from the same pretrained weights, and a Keras
            object you pass is left as it was. A list (or a dict naming
            them) of several: they are ranked on `data` first
            (`tftransfer.selection.rank_backbones`, by `rank_method`), the
            top `keep` are searched with `max_trials` split between them,
            and the best search is returned, with `ranking` and `searches`
            set (`tftransfer.tuning.backbone_choice`).
        data: `DatasetBundle` with a validation split, or an `(x, y)` pair
            of images (or texts) and integer labels as `fit()` takes: folds are
            drawn from them (or a seeded 20 % validation split, from 1,000
            examples) and the refit trains on them in the order given, so a
            search that keeps `fit`'s defaults returns the model
            `fit(model, (x, y), seed=seed)` would (on the same initial weights).
        search_space: dict or None. See `TransferHyperModel`. The default
            searches unfreeze depth 0 (head only) to all blocks, the
            fine-tuning learning rate 3e-5..3e-3 (log; 1e-5..3e-4 for a text
            encoder, whose first trial fine-tunes at 5e-5), head learning rate
            {1e-3, 3e-3}, dropout {0, 0.2, 0.5} and layer-wise decay
            {1.0, 0.8}.
        tuner: `"random"`, `"bayesian"` or `"hyperband"`. Defaults to
            `"random"`. (Random and Bayesian start with `fit`'s defaults.)
        max_trials: int. Defaults to `10`.
        objective: `"val_accuracy"`, `"val_loss"`, `"accuracy"` or
            `"loss"`. Defaults to `"val_accuracy"`.
        directory: str. Defaults to `"tuning"`.
        project_name: str or None. Defaults to `"<backbone>_search"`.
        overwrite: bool. Start over. Defaults to `False` (resume).
        head_epochs: int or `"auto"` (`fit`'s data-sized budget, on each
            trial's training examples). Defaults to `"auto"`.
        fine_tune_epochs: int or `"auto"`. Defaults to `"auto"`.
        folds: `"auto"`, None or an int >= 2. Score each trial by k-fold
            stratified cross-validation over train + validation (held in
            memory). `"auto"`: 3 folds below 1,000 labelled examples when the
            data allows it (a multiclass bundle without pipeline
            augmentation, a `val_*` objective, random or Bayesian search,
            trials in this process), else the validation split. Defaults to
            `"auto"`.
        refit: `"auto"` or bool. Train the best configuration again with
            `fit()` on train + validation and return that model. `"auto"`:
            when cross-validated (no trial model is the answer then).
            Defaults to `"auto"`.
        executions_per_trial: int. Defaults to `1`.
        weights: as in `build_classifier()`. Defaults to `"imagenet"`.
        isolate_trials: bool. Run each trial in its own process, for the memory
            that Keras and TensorFlow keep after a trial even when the session
            is cleared (about 35 MB per MobileNetV2 trial with Keras 3.15).
            This process serves keras-tuner's oracle; the data is written once
            to `<directory>/<project_name>/data/` for the trial processes, and
            the backbone must be a name or handle. Defaults to `False`.
        seed: int. Defaults to `1337`.
        verbose: int. Defaults to `0`.
        activation_cache_mb: int. Fine-tuning trains only the open blocks and
            the head, on the frozen part's activations computed once per
            search, for the depths whose activations fit in this many MB
            (train and validation splits together). `0` turns it off.
            Defaults to `1024`.
        keep: int. With several backbones: how many of the best-ranked are
            searched. Defaults to `2`.
        rank_method: str. With several backbones: `"logme"`, `"knn"` or
            `"probe"`. Defaults to `"logme"`.

    Returns:
        A `TuningResult`.

    Example:

    >>> import numpy as np, tftransfer
    >>> data = tftransfer.data.from_arrays(
    ...     np.random.uniform(0, 255, (24, 16, 16, 3)), np.arange(24) % 2, seed=0)
    >>> result = tftransfer.tune("FashionCNN", data, max_trials=2, head_epochs=2,
    ...                          fine_tune_epochs=2, directory="/tmp/tftransfer_tune_doc",
    ...                          overwrite=True)
    >>> result.selection, result.refit, result.best_model.output_shape
    ('3-fold cross-validation', True, (None, 2))
    """
    if isinstance(backbone, (list, tuple, dict)):
        from tftransfer.tuning.backbone_choice import tune_backbones

        return tune_backbones(
            backbone, data, max_trials=max_trials, project_name=project_name, weights=weights,
            verbose=verbose, search_space=search_space, tuner=tuner, objective=objective,
            directory=directory, overwrite=overwrite, head_epochs=head_epochs,
            fine_tune_epochs=fine_tune_epochs, folds=folds, refit=refit,
            executions_per_trial=executions_per_trial, isolate_trials=isolate_trials, seed=seed,
            activation_cache_mb=activation_cache_mb, keep=keep, rank_method=rank_method)
    directory = checks.check_path(directory, "directory")
    _check_choices(max_trials, tuner, objective)
    data, given = _as_bundle(data, objective, refit, seed)
    folds = _resolve_folds(folds, data, objective, tuner, isolate_trials)
    refit = bool(folds) if refit == "auto" else refit
    if refit and isolate_trials:
        raise ValueError("refit: not with isolate_trials=True (the backbone is rebuilt in the "
                         "trial processes); load the best trial's model instead.")
    project_name = _project_name(backbone, project_name)
    project_dir = os.path.join(directory, project_name)
    settings = dict(search_space=search_space, head_epochs=head_epochs,
                    fine_tune_epochs=fine_tune_epochs, weights=weights, seed=seed,
                    verbose=verbose, activation_cache_mb=activation_cache_mb)
    hypermodel, fold_models, arrays = _hypermodels(backbone, data, given, folds, project_dir,
                                                   settings, seed)
    # What a killed search was writing (under temporary names) goes first.
    files.remove_temporaries(project_dir, recursive=True)
    with atomic_search_files():
        search = _make_tuner(hypermodel, fold_models, tuner=tuner, objective=objective,
                             max_trials=max_trials, executions_per_trial=executions_per_trial,
                             seed=seed, directory=directory, project_name=project_name,
                             overwrite=overwrite)
        if overwrite and os.path.isdir(hypermodel.cache_dir):
            import shutil

            shutil.rmtree(hypermodel.cache_dir, ignore_errors=True)
        if isolate_trials:
            _isolated_search(search, hypermodel, project_dir, dict(
                backbone=backbone, search_space=search_space, tuner=tuner, max_trials=max_trials,
                objective=objective, directory=directory, project_name=project_name,
                head_epochs=head_epochs, fine_tune_epochs=fine_tune_epochs,
                executions_per_trial=executions_per_trial, weights=weights, seed=seed,
                activation_cache_mb=activation_cache_mb, folds=None, refit=False),
                epochs=hypermodel.fine_tune_epochs)
        else:
            search.search(epochs=hypermodel.fine_tune_epochs)
        return _tuning_result(search, hypermodel, fold_models, data, arrays,
                              objective=objective, folds=folds, refit=refit,
                              isolate_trials=isolate_trials, project_dir=project_dir,
                              head_epochs=head_epochs, fine_tune_epochs=fine_tune_epochs,
                              seed=seed, verbose=verbose)
