"""LogME: the evidence of a Bayesian linear model on frozen features.

Reference: Kaichao You, Yong Liu, Jianmin Wang, Mingsheng Long. "LogME:
Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021
(arXiv:2102.11005), with the fixed-point iteration and the SVD trick of You
et al., "Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting
Model Hubs", JMLR 2022 (arXiv:2110.10545); the reference code is
`LogME.py` of github.com/thuml/LogME (`_fit_fixed_point`).

For features `F` (`N x D`) and one target column `y`, the model is
`w ~ N(0, I / alpha)`, `y | F, w ~ N(F w, I / beta)`. LogME maximises the log
evidence `log p(y | F, alpha, beta)` over `alpha` and `beta` by MacKay's
fixed point (`gamma = sum(sigma / (sigma + alpha / beta))`,
`alpha = gamma / |m|^2`, `beta = (N - gamma) / |y - F m|^2`), computed in
the basis of `F`'s singular vectors so that each iteration costs `O(k)` for
`k = rank(F)`, and returns the maximum divided by `N`. A multiclass target is
one-hot encoded and the evidences of its columns averaged; multi-label and
regression targets are scored column by column the same way.

Where this differs from the reference code, and why:

- the log-determinant counts the `D - k` zero singular values (each adds
  `log(alpha)`), which `_fit_fixed_point` leaves out when `N < D`: with few
  examples and wide features it would otherwise favour wide backbones;
- the rank threshold is relative to the largest singular value (not
  `1e-10`) and the denominators are not offset by `1e-5`, so the score does
  not change when the features are multiplied by a constant;
- `|y - F m|^2` and `|m|^2` have relative floors (`1e-10` of `|y|^2`), so
  that a perfect fit (wide features, few examples) scores high but finite;
- the iteration runs to a relative change of `alpha / beta` below `1e-7`
  (at most 100 steps) instead of `1e-3` (at most 11).
"""

import dataclasses

import numpy as np

from tftransfer.selection._checks import check_features, target_matrix

TOLERANCE = 1e-7
MAX_ITERATIONS = 100
# Relative floors of |y - F m|^2 and |m|^2 (see logme_fit).
FLOOR = 1e-10
_TINY = np.finfo(np.float64).tiny


@dataclasses.dataclass
class LogMEFit:
    """The maximised evidence of each target column.

    Attributes:
        evidences: array `[columns]`. Log evidence per column, divided by the
            number of examples.
        alphas: array `[columns]`. The prior precision of the weights at the
            maximum.
        betas: array `[columns]`. The noise precision at the maximum.
        weights: array `[dimensions, columns]`. The posterior mean weights.
        iterations: list of int. Fixed-point steps taken per column.
    """

    evidences: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray
    weights: np.ndarray
    iterations: list

    @property
    def score(self):
        return float(np.mean(self.evidences))


def _spectrum(features):
    """`(u, s, vh)` of `features`, rank-truncated; by the Gram matrix when `N > D`."""
    count, dimensions = features.shape
    if count > dimensions:
        # The SVD trick: eigenvectors of the D x D Gram matrix, then u = F v / s.
        eigenvalues, v = np.linalg.eigh(features.T @ features)
        order = np.argsort(eigenvalues)[::-1]
        s = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
        vh = v[:, order].T
    else:
        _, s, vh = np.linalg.svd(features, full_matrices=False)
    if s[0] <= 0:
        raise ValueError("features: every feature is zero; LogME needs informative features.")
    # Relative threshold: eigh loses precision below ~sqrt(eps) of the largest value.
    threshold = s[0] * (np.sqrt(np.finfo(np.float64).eps) if count > dimensions
                        else max(features.shape) * np.finfo(np.float64).eps)
    rank = int(np.sum(s > threshold))
    s, vh = s[:rank], vh[:rank]
    u = (features @ vh.T) / s
    return u, s, vh


def _evidence(count, dimensions, alpha, beta, sigma, residual, weight_norm):
    rank = len(sigma)
    log_det = np.sum(np.log(alpha + beta * sigma)) + (dimensions - rank) * np.log(alpha)
    return (dimensions / 2.0 * np.log(alpha) + count / 2.0 * np.log(beta) - 0.5 * log_det
            - beta / 2.0 * residual - alpha / 2.0 * weight_norm
            - count / 2.0 * np.log(2.0 * np.pi)) / count


def logme_fit(features, targets):
    """Maximises the LogME evidence of every column of `targets`.

    Args:
        features: array `[examples, dimensions]`.
        targets: array `[examples, columns]` of floats (one-hot classes,
            0/1 labels or regression values).

    Returns:
        A `LogMEFit`.

    Example:

    >>> import numpy as np
    >>> from tftransfer.selection.logme import logme_fit
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(50, 3))
    >>> y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.1 * rng.normal(size=(50, 1))
    >>> fit = logme_fit(x, y)
    >>> np.round(fit.weights[:, 0], 1)
    array([ 1. , -2. ,  0.5])
    """
    features = check_features(features)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or len(targets) != len(features):
        raise ValueError(f"targets: expected [examples, columns] with {len(features)} rows; "
                         f"received shape {targets.shape}.")
    count, dimensions = features.shape
    u, s, vh = _spectrum(features)
    sigma = s ** 2
    evidences, alphas, betas, weights, iterations = [], [], [], [], []
    for column in targets.T:
        x = u.T @ column
        x2 = x ** 2
        # What of y lies outside the span of F: no weight can fit it (the SVD correction).
        outside = max(float(column @ column - x2.sum()), 0.0)
        # Floors, in the units of y and F: a perfect fit (y inside span(F), as with fewer
        # examples than dimensions) would send beta, or a zero target alpha, to infinity.
        energy = max(float(column @ column), _TINY)
        residual_floor = FLOOR * energy
        weight_floor = FLOOR * energy / sigma[0]
        alpha, beta = 1.0, 1.0
        for step in range(1, MAX_ITERATIONS + 1):
            ratio = alpha / beta
            gamma = float(np.sum(sigma / (sigma + ratio)))
            weight_norm = float(np.sum(sigma * x2 / (sigma + ratio) ** 2))
            residual = float(np.sum(x2 * (ratio / (sigma + ratio)) ** 2)) + outside
            alpha = gamma / max(weight_norm, weight_floor)
            beta = max(count - gamma, _TINY) / max(residual, residual_floor)
            if abs(alpha / beta - ratio) <= TOLERANCE * ratio:
                break
        ratio = alpha / beta
        weight_norm = float(np.sum(sigma * x2 / (sigma + ratio) ** 2))
        residual = float(np.sum(x2 * (ratio / (sigma + ratio)) ** 2)) + outside
        evidences.append(_evidence(count, dimensions, alpha, beta, sigma,
                                   max(residual, residual_floor), max(weight_norm, weight_floor)))
        alphas.append(alpha)
        betas.append(beta)
        weights.append(vh.T @ (s * x / (sigma + ratio)))
        iterations.append(step)
    return LogMEFit(np.array(evidences), np.array(alphas), np.array(betas),
                    np.stack(weights, axis=1), iterations)


def logme_score(features, labels, *, task="auto"):
    """LogME: the mean per-example log evidence of a linear model on `features`.

    Higher is better. Scores of different backbones on the same labels are
    comparable; the value itself has no unit (about -1 to 2 on one-hot
    targets). No training and no hyperparameters: one SVD, then a few
    scalar iterations per target column.

    Args:
        features: array `[examples, dimensions]`. Pooled backbone features.
        labels: array. Class indices `[examples]` (multiclass, binary), 0/1
            rows `[examples, labels]` (multilabel) or values `[examples]` or
            `[examples, outputs]` (regression).
        task: str. `"auto"` (integer 1-D labels are classes, 0/1 rows are
            multi-label, anything else is regression), `"multiclass"`,
            `"binary"`, `"multilabel"` or `"regression"`. Defaults to
            `"auto"`.

    Returns:
        A float: the evidence averaged over target columns.

    Example:

    >>> import numpy as np
    >>> from tftransfer.selection import logme_score
    >>> rng = np.random.default_rng(0)
    >>> labels = np.repeat([0, 1, 2], 20)
    >>> good = np.eye(3)[labels] + 0.1 * rng.normal(size=(60, 3))
    >>> bad = rng.normal(size=(60, 3))
    >>> logme_score(good, labels) > logme_score(bad, labels)
    True
    """
    features = check_features(features)
    targets, _ = target_matrix(labels, task, examples=len(features), argument="labels")
    return logme_fit(features, targets).score
