"""Input checks and target matrices shared by the scoring methods."""

import numpy as np

TASKS = ("multiclass", "binary", "multilabel", "regression")


def check_features(features, argument="features"):
    """`features` as a finite float64 `[examples, dimensions]` array."""
    try:
        array = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argument}: expected a numeric [examples, dimensions] array; "
                         f"received {type(features).__name__}.") from None
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{argument}: expected a 2-D array of at least 2 examples and 1 "
                         f"dimension; received shape {array.shape}. Pool feature maps first.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{argument}: holds NaN or infinite values.")
    return array


def infer_task(labels):
    """The task `labels` imply: int 1-D -> multiclass, 0/1 2-D -> multilabel, else regression."""
    labels = np.asarray(labels)
    if labels.ndim == 1 and (np.issubdtype(labels.dtype, np.integer)
                             or np.issubdtype(labels.dtype, np.bool_)):
        return "multiclass"
    if labels.ndim == 2 and labels.shape[1] > 1 and np.isin(labels, (0, 1)).all():
        return "multilabel"
    return "regression"


def target_matrix(labels, task="auto", *, examples=None, argument="targets"):
    """Returns `(targets, task)`: a float64 `[examples, columns]` matrix and the task.

    Classes become one-hot columns (one column per class present, as LogME
    scores a multiclass target), multi-label rows stay 0/1 columns and
    regression targets stay as they are (a 1-D target becomes one column).
    """
    if task != "auto" and task not in TASKS:
        raise ValueError(f"task: expected 'auto' or one of {TASKS}; received {task!r}.")
    try:
        labels = np.asarray(labels)
    except Exception:  # ragged lists and the like
        raise ValueError(f"{argument}: expected an array of labels or targets.") from None
    if labels.dtype == object or labels.dtype.kind in "US":
        raise ValueError(f"{argument}: expected numeric labels (class indices, 0/1 rows or "
                         f"regression values); received {labels.dtype} values.")
    if labels.ndim == 2 and labels.shape[1] == 1 and task in ("multiclass", "binary"):
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or len(labels) == 0:
        raise ValueError(f"{argument}: expected a 1-D or 2-D array; received shape "
                         f"{labels.shape}.")
    if examples is not None and len(labels) != examples:
        raise ValueError(f"{argument}: {len(labels)} targets for {examples} feature rows; "
                         "expected one per example.")
    if not np.all(np.isfinite(labels.astype(np.float64))):
        raise ValueError(f"{argument}: holds NaN or infinite values.")
    task = infer_task(labels) if task == "auto" else task
    if task in ("multiclass", "binary"):
        if labels.ndim != 1 or not np.all(labels == np.round(labels)):
            raise ValueError(f"{argument}: task {task!r} needs 1-D integer class labels; "
                             f"received shape {labels.shape} of {labels.dtype}.")
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(f"{argument}: found one class only ({classes.tolist()}); ranking "
                             "needs at least two.")
        return (labels[:, None] == classes[None, :]).astype(np.float64), task
    if task == "multilabel" and not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{argument}: task 'multilabel' needs 0/1 rows; received other values.")
    matrix = labels.astype(np.float64)
    return (matrix[:, None] if matrix.ndim == 1 else matrix), task


def class_indices(targets, task):
    """Class index per row for one-hot `targets` (multiclass, binary)."""
    return np.argmax(targets, axis=1) if task in ("multiclass", "binary") else None


def fold_ids(targets, task, folds, seed):
    """A fold number per example, stratified by class for class targets."""
    count = len(targets)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not (
            2 <= folds <= count):
        raise ValueError(f"folds: expected an int from 2 to the number of examples ({count}); "
                         f"received {folds!r}.")
    rng = np.random.default_rng(seed)
    ids = np.empty(count, dtype=np.int64)
    if task in ("multiclass", "binary"):
        labels = class_indices(targets, task)
        offset = 0
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            ids[members] = (np.arange(len(members)) + offset) % folds
            offset += len(members)
    else:
        ids[rng.permutation(count)] = np.arange(count) % folds
    return ids


def prediction_score(predicted, targets, task):
    """Accuracy of held-out predictions (per label for multi-label, thresholded at 0.5), or
    R² averaged over the target columns for regression."""
    if task == "regression":
        total = np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
        error = np.sum((targets - predicted) ** 2, axis=0)
        return float(np.mean(1.0 - error / np.maximum(total, np.finfo(np.float64).tiny)))
    if task == "multilabel":
        return float(np.mean((predicted > 0.5) == (targets > 0.5)))
    return float(np.mean(np.argmax(predicted, axis=1) == np.argmax(targets, axis=1)))
