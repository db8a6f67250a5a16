"""Linear-probe score: the cross-validated accuracy of a linear model on frozen features.

Reference: the linear evaluation protocol of self-supervised learning
(Kolesnikov, Zhai, Beyer, "Revisiting Self-Supervised Visual Representation
Learning", CVPR 2019; Kornblith, Shlens, Le, "Do Better ImageNet Models
Transfer Better?", CVPR 2019, who show that it tracks fine-tuned accuracy
across ImageNet architectures), used as a transferability baseline by
Renggli et al. (CVPR 2022) and You et al. (LogME, ICML 2021).

The linear model here is ridge regression on one-hot targets (scikit-learn's
`RidgeClassifierCV`, written in numpy): features standardized on the
training folds, an intercept, and the ridge penalty chosen on each training
fold by its exact leave-one-out error (one SVD serves every penalty). It
trains in closed form, with no learning rate and no iterations, so it ranks
backbones in milliseconds and gives the same number every run. Classes:
the argmax; multi-label: each output above 0.5; regression: R^2.
"""

import numpy as np

from tftransfer.selection._checks import (
    check_features,
    fold_ids,
    prediction_score,
    target_matrix,
)

PENALTIES = tuple(10.0 ** p for p in range(-3, 4))


def _ridge(features, targets):
    """`(predict, penalty)`: ridge on standardized features, penalty chosen by exact LOO."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale[scale == 0] = 1.0
    x = (features - mean) / scale
    target_mean = targets.mean(axis=0)
    y = targets - target_mean
    u, s, vh = np.linalg.svd(x, full_matrices=False)
    uy = u.T @ y
    sigma = s ** 2
    # Penalties relative to the mean eigenvalue: the same grid whatever the dimension.
    unit = max(float(np.mean(sigma)), np.finfo(np.float64).tiny)
    best = None
    for penalty in PENALTIES:
        shrink = sigma / (sigma + penalty * unit)
        fitted = u @ (shrink[:, None] * uy)
        # Leverage of each row, with the intercept's 1/n (the features are centered).
        leverage = np.sum(u ** 2 * shrink[None, :], axis=1) + 1.0 / len(x)
        loo = (y - fitted) / np.maximum(1.0 - leverage, 1e-12)[:, None]
        error = float(np.mean(loo ** 2))
        if best is None or error < best[0]:
            best = (error, penalty)
    penalty = best[1] * unit
    weights = vh.T @ ((s / (sigma + penalty))[:, None] * uy)

    def predict(new_features):
        return ((new_features - mean) / scale) @ weights + target_mean

    return predict, best[1]


def linear_probe_score(features, labels, *, task="auto", folds=5, seed=0):
    """Cross-validated accuracy of a ridge linear probe on `features`.

    Args:
        features: array `[examples, dimensions]`. Pooled backbone features.
        labels: array. As in `logme_score()`.
        task: str. As in `logme_score()`. Defaults to `"auto"`.
        folds: int. Cross-validation folds (stratified by class), at most
            the number of examples. Defaults to `5`.
        seed: int. Fold assignment. Defaults to `0`.

    Returns:
        A float: held-out accuracy (multiclass, binary), mean per-label
        accuracy (multilabel) or R^2 (regression), over all folds. Higher
        is better.

    Example:

    >>> import numpy as np
    >>> from tftransfer.selection import linear_probe_score
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1], 20)
    >>> features = rng.normal(size=(40, 5)) + 4.0 * labels[:, None]
    >>> linear_probe_score(features, labels)
    1.0
    """
    features = check_features(features)
    targets, task = target_matrix(labels, task, examples=len(features), argument="labels")
    ids = fold_ids(targets, task, folds, seed)
    predicted = np.zeros_like(targets)
    for fold in range(folds):
        held_out = ids == fold
        if not held_out.any():
            continue
        predict, _ = _ridge(features[~held_out], targets[~held_out])
        predicted[held_out] = predict(features[held_out])
    return prediction_score(predicted, targets, task)
