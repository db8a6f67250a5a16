"""PNG plots: training curves, confusion matrix, top losses, learning-rate finder.

Each function writes one PNG (matplotlib's Agg backend, no display needed) and
returns its path, so that it works the same in a notebook, a script and CI.
"""

import os

import numpy as np


def _require(value, argument, kind):
    if kind == "evaluation":
        from tftransfer.evaluation.metrics import EvaluationResult as expected
        what = "the EvaluationResult of tftransfer.evaluate()"
    else:
        from tftransfer.training.lr_finder import LearningRateFinderResult as expected
        what = "the result of tftransfer.find_learning_rate()"
    if not isinstance(value, expected):
        raise TypeError(f"{argument}: expected {what}; received {type(value).__name__}.")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    _pyplot().close(figure)
    return path


def plot_history(history, path):
    """Loss and accuracy per epoch, train and validation, the phase boundary marked.

    Args:
        history: `TrainingResult`, or its `history` dict (lists per metric,
            with a `"phase"` list as `fit()` writes it).
        path: str. The PNG to write.

    Returns:
        The path.

    Example:

    >>> from tftransfer.evaluation import plot_history
    >>> history = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.7],
    ...            "phase": ["head", "head", "fine_tune"]}
    >>> plot_history(history, "/tmp/curves.png").endswith("curves.png")
    True
    """
    history = getattr(history, "history", history)
    if not isinstance(history, dict) or not any(
            isinstance(v, list) and v and not isinstance(v[0], str) for v in history.values()):
        raise ValueError("history: expected a TrainingResult or a dict of per-epoch lists, "
                         "such as TrainingResult.history.")
    metrics = [name for name in ("loss", "accuracy") if name in history] or [
        name for name, values in history.items()
        if not name.startswith("val_") and values and not isinstance(values[0], str)][:2]
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    phases = history.get("phase") or []
    boundary = next((i for i in range(1, len(phases)) if phases[i] != phases[i - 1]), None)
    for axis, name in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[name]) + 1)
        axis.plot(epochs, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            axis.plot(epochs, history[f"val_{name}"], marker="o", label="validation")
        if boundary is not None:
            axis.axvline(boundary + 0.5, color="gray", linestyle="--")
            axis.text(boundary + 0.55, axis.get_ylim()[1], "fine-tuning", va="top",
                      fontsize=8, color="gray")
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.legend()
    figure.suptitle("Training (head phase, then fine-tuning)" if boundary else "Training")
    return _save(figure, path)


def plot_confusion_matrix(evaluation, path, *, normalize=False):
    """The confusion matrix of an `EvaluationResult`, rows true and columns predicted.

    Args:
        evaluation: `EvaluationResult`.
        path: str. The PNG to write.
        normalize: bool. Show each row as fractions. Defaults to `False`.

    Returns:
        The path.
    """
    _require(evaluation, "evaluation", "evaluation")
    matrix = np.asarray(evaluation.confusion_matrix, np.float64)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    names = evaluation.class_names
    plt = _pyplot()
    side = max(4.0, 0.6 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(side, side))
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(names) <= 20:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, f"{value:.2f}" if normalize else f"{int(value)}",
                      ha="center", va="center", fontsize=8,
                      color="white" if value > threshold else "black")
    axis.set_title(f"Confusion matrix (accuracy {evaluation.accuracy:.3f})")
    return _save(figure, path)


def plot_top_losses(evaluation, path, *, columns=4):
    """A grid of the examples the model got most wrong, with label, prediction and loss.

    Args:
        evaluation: `EvaluationResult` (its `top_losses`).
        path: str. The PNG to write.
        columns: int. Defaults to `4`.

    Returns:
        The path.
    """
    _require(evaluation, "evaluation", "evaluation")
    entries = [entry for entry in evaluation.top_losses
               if isinstance(entry.get("image"), np.ndarray) and entry["image"].ndim == 3]
    if not entries:
        raise ValueError("evaluation: it holds no image examples among its top losses "
                         "(evaluate() with top_losses > 0 on image data).")
    rows = int(np.ceil(len(entries) / columns))
    plt = _pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.9 * rows),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, entry in zip(axes.ravel(), entries):
        image = entry["image"]
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image[..., :3],
                    cmap="gray" if image.shape[-1] == 1 else None)
        axis.set_title(f"true {entry['label']}\npred {entry['predicted']} "
                       f"({entry['probability']:.2f})\nloss {entry['loss']:.2f}", fontsize=8)
    figure.suptitle("Top losses")
    return _save(figure, path)


def plot_learning_rate_finder(result, path):
    """The loss against the learning rate of a `find_learning_rate()` sweep.

    Args:
        result: `LearningRateFinderResult`.
        path: str. The PNG to write.

    Returns:
        The path.
    """
    _require(result, "result", "lr_finder")
    from tftransfer.training.lr_finder import _plot

    return _plot(result, os.fspath(path))


def plot_reliability(evaluation, path):
    """Accuracy against confidence per bin (a reliability diagram)."""
    _require(evaluation, "evaluation", "evaluation")
    bins = evaluation.reliability
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfect calibration")
    axis.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins],
             width=[b["high"] - b["low"] for b in bins], alpha=0.6, edgecolor="black",
             label="accuracy")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"Calibration error {evaluation.calibration_error:.3f}")
    axis.legend()
    return _save(figure, path)
