"""A search over several backbones: rank them first, spend the trials on the best.

Fine-tuning every candidate costs a search per backbone. Ranking their frozen
features (`tftransfer.selection.rank_backbones`, LogME by default) costs one
forward pass each, and predicts which will fine-tune best. So `tune()` given
a list of backbones ranks them, keeps the top `keep` (2 by default), and
splits `max_trials` between them (the best-ranked gets the remainder); each
search starts from `fit`'s defaults as a single-backbone search does, under
its own project folder (`<project_name>_<candidate>`). The answer is the search whose best trial scored
best, with the ranking attached: a search over five backbones costs about
what a search over two did, plus the ranking.
"""

import dataclasses

from tftransfer.tuning.results import TuningResult

DEFAULT_KEEP = 2


def _candidates(backbones):
    if isinstance(backbones, dict):
        candidates = dict(backbones)
    else:
        candidates = {}
        for backbone in backbones:
            name = backbone if isinstance(backbone, str) else getattr(backbone, "name", None)
            if not name or name in candidates:
                raise ValueError(
                    "backbone: every candidate needs a distinct name; pass a dict "
                    "{name: backbone} to name Keras objects (received duplicate or unnamed "
                    f"{backbone!r}).")
            candidates[name] = backbone
    if len(candidates) < 2:
        raise ValueError(f"backbone: a list of at least 2 candidates to choose from; received "
                         f"{len(candidates)}. Pass one backbone as a str or Keras object.")
    return candidates


def _best_score(result):
    oracle = result.tuner.oracle
    trials = oracle.get_best_trials(1)
    if not trials or trials[0].score is None:
        return None
    direction = oracle.objective.direction
    return trials[0].score if direction == "max" else -trials[0].score


def tune_backbones(backbones, data, *, keep=DEFAULT_KEEP, rank_method="logme", max_trials=10,
                   project_name=None, weights="imagenet", verbose=0, **tune_arguments):
    """Ranks `backbones` on `data`, then searches the top `keep` with the trials split.

    `tftransfer.tune(backbone=[...])` calls this; see the module docstring.

    Args:
        backbones: list or dict of candidates (names, handles or Keras
            objects as `build_classifier()` takes; a dict names them).
        data: as in `tune()`.
        keep: int. Candidates searched, best-ranked first. Defaults to `2`.
        rank_method: str. `"logme"`, `"knn"` or `"probe"`
            (`tftransfer.selection.rank_backbones`). Defaults to `"logme"`.
        max_trials: int. Trials in all, split between the kept candidates
            (at least 1 each). Defaults to `10`.
        project_name: str or None. Each candidate's search goes under
            `<directory>/<project_name>_<candidate>`. Defaults to
            `"backbone_search"`.
        weights, verbose: as in `tune()`.
        **tune_arguments: the rest of `tune()`'s arguments.

    Returns:
        The best search's `TuningResult`, with `ranking` (the
        `RankingResult`) and `searches` (`{candidate: TuningResult}`) set.

    Example:

    >>> import numpy as np, tftransfer
    >>> data = tftransfer.data.from_arrays(
    ...     np.random.uniform(0, 255, (24, 16, 16, 3)), np.arange(24) % 2, seed=0)
    >>> random_init = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> result = tftransfer.tune({"pretrained": "FashionCNN", "random": random_init}, data,
    ...                          keep=1, max_trials=1, head_epochs=1, fine_tune_epochs=1,
    ...                          directory="/tmp/tftransfer_tune_backbones_doc", overwrite=True)
    >>> sorted(result.searches) == [result.ranking.best]
    True
    """
    from tftransfer.selection import rank_backbones
    from tftransfer.tuning.search import tune

    candidates = _candidates(backbones)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"keep: expected an int >= 1; received {keep!r}.")
    if not isinstance(max_trials, int) or isinstance(max_trials, bool) or max_trials < 1:
        raise ValueError(f"max_trials: expected an int >= 1; received {max_trials!r}.")
    ranking = rank_backbones(data, candidates, method=rank_method,
                             weights="pretrained" if weights == "imagenet" else weights,
                             verbose=verbose)
    kept = ranking.names[:min(keep, len(candidates))]
    share, extra = divmod(max_trials, len(kept))
    project_name = project_name or "backbone_search"
    searches, scores = {}, {}
    for index, name in enumerate(kept):
        trials = max(1, share + (extra if index == 0 else 0))
        searches[name] = tune(candidates[name], data, max_trials=trials,
                              project_name=f"{project_name}_{_folder_name(name)}",
                              weights=weights, verbose=verbose, **tune_arguments)
        scores[name] = _best_score(searches[name])
    best = max(kept, key=lambda name: (scores[name] is not None,
                                       scores[name] if scores[name] is not None else 0.0,
                                       -kept.index(name)))
    return dataclasses.replace(searches[best], backbone=best, ranking=ranking,
                               searches=searches)


def _folder_name(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "backbone"


__all__ = ["DEFAULT_KEEP", "TuningResult", "tune_backbones"]
