"""PNG plots: training curves, confusion matrix, top losses, maps, learning-rate finder.

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


def plot_top_losses(evaluation, path, *, columns=4, model=None, alpha=0.5):
    """A grid of the examples the model got most wrong, with label, prediction and loss.

    With `model`, each image carries a map of where the model looked to make
    its (wrong) prediction: Grad-CAM for CNN backbones, attention rollout for
    ViT-family ones (see `explain()`). A model that cannot be explained (a
    TF-Hub backbone, for example) gives the plain grid, its title saying why.

    Args:
        evaluation: `EvaluationResult` (its `top_losses`).
        path: str. The PNG to write.
        columns: int. Defaults to `4`.
        model: `keras.Model` or None. The evaluated model, to draw maps.
            Defaults to None (no maps).
        alpha: float. Opacity of the maps. Defaults to `0.5`.

    Returns:
        The path.
    """
    return _top_losses_figure(evaluation, path, columns=columns, model=model, alpha=alpha)[0]


def _top_losses_figure(evaluation, path, *, columns=4, model=None, alpha=0.5):
    """`plot_top_losses()`, returning `(path, explanation or None, why no maps or None)`."""
    _require(evaluation, "evaluation", "evaluation")
    _check_columns(columns)
    entries = [entry for entry in evaluation.top_losses
               if isinstance(entry.get("image"), np.ndarray) and entry["image"].ndim == 3]
    if not entries:
        raise ValueError("evaluation: it holds no image examples among its top losses "
                         "(evaluate() with top_losses > 0 on image data).")
    explanation, reason = None, None
    if model is not None:
        from tftransfer.evaluation.explanations import explain

        try:
            explanation = explain(model, np.stack([entry["image"] for entry in entries]))
        except (ValueError, TypeError) as error:
            reason = str(error)
    plt, figure, axes = _image_grid(len(entries), columns, 2.9)
    for index, (axis, entry) in enumerate(zip(axes.ravel(), entries)):
        _show(axis, entry["image"], None if explanation is None
              else explanation.heatmaps[index], alpha)
        axis.set_title(f"true {entry['label']}\npred {entry['predicted']} "
                       f"({entry['probability']:.2f})\nloss {entry['loss']:.2f}", fontsize=8)
    if explanation is not None:
        title = f"Top losses, with {_METHOD_NAMES[explanation.method]} of the prediction"
    elif reason is not None:
        title = "Top losses (no maps: see the model card)"
    else:
        title = "Top losses"
    figure.suptitle(title)
    return _save(figure, path), explanation, reason


_METHOD_NAMES = {"gradcam": "Grad-CAM", "rollout": "attention rollout",
                 "attention": "last-layer attention", "saliency": "pixel gradients"}


def _check_columns(columns):
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns: expected a positive int; received {columns!r}.")


def _image_grid(count, columns, row_height):
    """`(pyplot, figure, axes)`: a grid for `count` images, axes off."""
    rows = int(np.ceil(count / columns))
    plt = _pyplot()
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, row_height * rows),
                                squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    return plt, figure, axes


def _show(axis, image, heatmap, alpha):
    """Draws an image, and a heatmap over it when given."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        axis.imshow(image[..., :3])
    if heatmap is not None:
        axis.imshow(heatmap, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0,
                    interpolation="bilinear")


def plot_explanations(images, explanation, path, *, class_names=None, columns=4, alpha=0.5):
    """The maps of `explain()` over their images, one panel per image.

    Args:
        images: array `[n, height, width, channels]` or None. The images
            explained (raw [0, 255] pixels). Defaults to None:
            `explanation.images`.
        explanation: `Explanation`, from `tftransfer.evaluation.explain()`.
        path: str. The PNG to write.
        class_names: list of str or None. Defaults to `"0"`, `"1"`, ...
        columns: int. Defaults to `4`.
        alpha: float. Opacity of the maps, in [0, 1]. Defaults to `0.5`.

    Returns:
        The path.

    Example:

    >>> import numpy as np, tftransfer
    >>> from tftransfer.evaluation import explain, plot_explanations
    >>> model = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3))
    >>> result = explain(model, images)
    >>> plot_explanations(images, result, "/tmp/maps.png").endswith("maps.png")
    True
    """
    from tftransfer.evaluation.explanations import Explanation

    if not isinstance(explanation, Explanation):
        raise TypeError("explanation: expected the Explanation of tftransfer.evaluation."
                        f"explain(); received {type(explanation).__name__}.")
    images = explanation.images if images is None else np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.shape[:3] != explanation.heatmaps.shape:
        raise ValueError(f"images: {images.shape[:3]} images for {explanation.heatmaps.shape} "
                         "maps; pass the images given to explain() (or None).")
    _check_columns(columns)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a float in [0, 1]; received {alpha!r}.")
    classes = explanation.probabilities.shape[1]
    names = list(class_names) if class_names is not None else [
        str(i) for i in range(max(2, classes))]
    if len(names) < max(2, classes):
        raise ValueError(f"class_names: {len(names)} names for a model with "
                         f"{max(2, classes)} classes.")
    columns = min(columns, len(images))
    plt, figure, axes = _image_grid(len(images), columns, 2.7)
    for index, axis in enumerate(axes.ravel()[:len(images)]):
        _show(axis, images[index], explanation.heatmaps[index], alpha)
        predicted = int(explanation.predicted[index])
        if classes > 1:
            probability = explanation.probabilities[index, predicted]
        else:  # one sigmoid unit: the probability of class 1
            probability = abs(1 - predicted - explanation.probabilities[index, 0])
        title = f"pred {names[predicted]} ({probability:.2f})"
        if int(explanation.class_index[index]) != predicted:
            title += f"\nmap of {names[int(explanation.class_index[index])]}"
        axis.set_title(title, fontsize=8)
    figure.suptitle(f"Where the model looks ({_METHOD_NAMES[explanation.method]})")
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


def plot_comparison(scores, path, *, ylabel="test accuracy", chance=None, title=None):
    """A bar chart of named scores, each bar labelled with its value to 3 decimals.

    Args:
        scores: dict. Name -> float, in the order to draw.
        path: str. Where to write the PNG.
        ylabel: str. Defaults to `"test accuracy"`.
        chance: float or None. Draws a dotted line at this level, e.g.
            `1 / num_classes`. Defaults to None.
        title: str or None. Defaults to None.

    Returns:
        `path`.

    Example:

    >>> from tftransfer.evaluation.plots import plot_comparison
    >>> plot_comparison({"scratch": 0.61, "transfer": 0.88}, "/tmp/compare.png", chance=0.2)
    '/tmp/compare.png'
    """
    if not isinstance(scores, dict) or not scores:
        raise TypeError(f"scores: expected a non-empty dict of name -> float; received "
                        f"{scores!r}.")
    plt = _pyplot()
    names, values = list(scores), [float(value) for value in scores.values()]
    figure, axis = plt.subplots(figsize=(max(4.0, 1.3 * len(names) + 1.5), 3.4))
    bars = axis.bar(names, values, color="tab:blue")
    axis.bar_label(bars, labels=[f"{value:.3f}" for value in values], padding=2)
    if chance is not None:
        axis.axhline(float(chance), color="black", linestyle=":", label="chance")
        axis.legend(loc="lower right")
    top = max(values + [float(chance or 0)])
    axis.set_ylim(0, 1.0 if 0 <= top <= 1 else top * 1.15)
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    return _save(figure, path)


def plot_trials(trials, path, *, objective="validation accuracy"):
    """A search's trials: the objective against unfreeze depth and fine-tuning learning rate.

    The depth axis has a tick per whole number of blocks (never 0.25 blocks).

    Args:
        trials: list of dicts, as in `TuningResult.trials` (`"hyperparameters"`
            and `"score"`).
        path: str. Where to write the PNG.
        objective: str. The y label. Defaults to `"validation accuracy"`.

    Returns:
        `path`, or None when no trial has a score.

    Example:

    >>> from tftransfer.evaluation.plots import plot_trials
    >>> trials = [{"hyperparameters": {"unfreeze_blocks": 1, "fine_tune_learning_rate": 1e-3},
    ...            "score": 0.8}]
    >>> plot_trials(trials, "/tmp/trials.png")
    '/tmp/trials.png'
    """
    scored = [trial for trial in trials if trial.get("score") is not None]
    if not scored:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    depth = [int(t["hyperparameters"].get("unfreeze_blocks", 0)) for t in scored]
    rates = [float(t["hyperparameters"].get("fine_tune_learning_rate", 0)) for t in scored]
    scores = [float(t["score"]) for t in scored]
    axes[0].scatter(depth, scores)
    axes[0].set_xticks(range(min(depth), max(depth) + 1))
    axes[0].set_xlabel("unfreeze_blocks")
    axes[0].set_ylabel(objective)
    axes[1].scatter(rates, scores)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("fine_tune_learning_rate")
    figure.suptitle(f"{len(scored)} trials")
    return _save(figure, path)
