"""kNN accuracy: how well the nearest neighbours in feature space predict the label.

Reference: Cedric Renggli, André Susano Pinto, Luka Rimanic, Joan
Puigcerver, Carlos Riquelme, Ce Zhang, Mario Lucic. "Which Model to
Transfer? Finding the Needle in the Growing Haystack", CVPR 2022
(arXiv:2010.06402): the accuracy of a kNN classifier on a model's frozen
features is a cheap proxy of its fine-tuned accuracy, and a strong baseline
for model search.

Here each example is classified by its `k` nearest other examples
(Euclidean distance; leave-one-out by default, or `folds`-fold
cross-validation), by majority vote with ties broken by the nearest
neighbour. Multi-label: a vote per label, scored by the mean per-label
accuracy. Regression: the neighbours' mean, scored by R^2.
"""

import numpy as np

from tftransfer.selection._checks import (
    check_features,
    fold_ids,
    prediction_score,
    target_matrix,
)

_CHUNK = 512


def _neighbours(query, reference, k, exclude_self):
    """Indices `[queries, k]` of the `k` nearest reference rows, nearest first."""
    found = []
    reference_norms = np.sum(reference ** 2, axis=1)
    for start in range(0, len(query), _CHUNK):
        block = query[start:start + _CHUNK]
        distances = (np.sum(block ** 2, axis=1)[:, None] - 2.0 * block @ reference.T
                     + reference_norms[None, :])
        if exclude_self:
            rows = np.arange(len(block))
            distances[rows, start + rows] = np.inf
        nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(distances, nearest, axis=1), axis=1,
                           kind="stable")
        found.append(np.take_along_axis(nearest, order, axis=1))
    return np.concatenate(found)


def _predict(neighbour_targets, task):
    """`neighbour_targets`: `[queries, k, columns]`, nearest first."""
    if task == "regression":
        return neighbour_targets.mean(axis=1)
    votes = neighbour_targets.sum(axis=1)
    if task == "multilabel":
        # A tie between 0 and 1 goes to the nearest neighbour's label.
        half = neighbour_targets.shape[1] / 2.0
        return np.where(votes == half, neighbour_targets[:, 0, :], votes > half)
    votes = votes + 1e-3 * neighbour_targets[:, 0, :]  # ties: the nearest neighbour's class
    return np.eye(neighbour_targets.shape[2])[np.argmax(votes, axis=1)]


def knn_score(features, labels, *, task="auto", k=5, folds=None, seed=0):
    """kNN accuracy of `features` (leave-one-out or cross-validated).

    Args:
        features: array `[examples, dimensions]`. Pooled backbone features.
        labels: array. As in `logme_score()`.
        task: str. As in `logme_score()`. Defaults to `"auto"`.
        k: int. Neighbours that vote. Defaults to `5`.
        folds: int or None. None: leave-one-out (every other example is a
            neighbour); an int: that many folds (stratified by class), each
            classified by the others. Defaults to None.
        seed: int. Fold assignment. Defaults to `0`.

    Returns:
        A float: the accuracy (multiclass, binary), the mean per-label
        accuracy (multilabel) or R^2 (regression). Higher is better.

    Example:

    >>> import numpy as np
    >>> from tftransfer.selection import knn_score
    >>> features = np.array([[0.0], [1.0], [3.0], [10.0], [11.0], [14.0]])
    >>> knn_score(features, [0, 0, 1, 1, 1, 1], k=1)  # the point at 3 is closest to 1
    0.8333333333333334
    """
    features = check_features(features)
    targets, task = target_matrix(labels, task, examples=len(features), argument="labels")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < len(features):
        raise ValueError(f"k: expected an int from 1 to {len(features) - 1} (examples - 1); "
                         f"received {k!r}.")
    # Centering changes no distance; it keeps the squared-norm expansion accurate.
    features = features - features.mean(axis=0)
    if folds is None:
        predicted = _predict(targets[_neighbours(features, features, k, True)], task)
        return prediction_score(predicted, targets, task)
    ids = fold_ids(targets, task, folds, seed)
    predicted = np.zeros_like(targets)
    for fold in range(folds):
        held_out, kept = ids == fold, ids != fold
        if k > int(kept.sum()):
            raise ValueError(f"k: {k} neighbours but only {int(kept.sum())} examples outside "
                             f"fold {fold}; lower k or folds.")
        nearest = _neighbours(features[held_out], features[kept], k, False)
        predicted[held_out] = _predict(targets[kept][nearest], task)
    return prediction_score(predicted, targets, task)
