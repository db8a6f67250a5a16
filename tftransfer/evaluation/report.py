"""A markdown report / model card, with its plots, written next to an export."""

import datetime
import json
import os

from tftransfer import checks
from tftransfer.evaluation import plots


def _number(value):
    return f"{value:.4f}"


def write_report(directory, evaluation, *, training=None, export=None, title="Model card",
                 model_name=None, backbone=None, data_description=None, extra=None,
                 model=None):
    """Writes `model_card.md`, `evaluation.json` and the PNG plots to `directory`.

    The card holds the evaluation's figures (accuracy, top-k accuracy when k
    is below the number of classes, macro
    F1, calibration error, loss, the per-class table and the confusion
    matrix), how the model was trained and exported when given, and links to
    the plots: training curves with the phase boundary, confusion matrix,
    reliability diagram and the top-loss grid (for images). Given the model,
    the grid shows where it looked on each of the worst examples (Grad-CAM,
    or attention for ViT-family backbones; see `explain()`); when the model
    cannot be explained the card says why.

    Args:
        directory: str. Created if needed; for an export, a folder beside
            the version folders (TF Serving ignores folders that are not
            numbers), e.g. `saved_models/flowers/v3_report`.
        evaluation: `EvaluationResult`.
        training: `TrainingResult` or None.
        export: `ExportResult` or None.
        title: str. Defaults to `"Model card"`.
        model_name: str or None. For the serving command.
        backbone: str or None.
        data_description: str or None. One line about the data.
        extra: dict or None. More `name: value` lines for the summary.
        model: `keras.Model` or None. The evaluated model, to draw maps of
            where it looks on the top losses. Defaults to None.

    Returns:
        The path of `model_card.md`.

    Example:

    >>> import numpy as np, tftransfer
    >>> model = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> x, y = np.random.uniform(0, 255, (8, 32, 32, 3)), np.arange(8) % 2
    >>> evaluation = tftransfer.evaluate(model, (x, y))
    >>> path = tftransfer.evaluation.write_report("/tmp/card", evaluation)
    >>> open(path).read().startswith("# Model card")
    True
    """
    from tftransfer.evaluation.metrics import EvaluationResult

    checks.check_path(directory, "directory")
    if not isinstance(evaluation, EvaluationResult):
        raise TypeError("evaluation: expected the EvaluationResult of tftransfer.evaluate(); "
                        f"received {type(evaluation).__name__}.")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    images = {}
    if training is not None:
        images["Training curves"] = plots.plot_history(
            training, os.path.join(directory, "training_curves.png"))
    images["Confusion matrix"] = plots.plot_confusion_matrix(
        evaluation, os.path.join(directory, "confusion_matrix.png"))
    images["Reliability"] = plots.plot_reliability(
        evaluation, os.path.join(directory, "reliability.png"))
    maps = None
    try:
        images["Top losses"], explanation, reason = plots._top_losses_figure(
            evaluation, os.path.join(directory, "top_losses.png"), model=model)
        maps = _maps_note(explanation, reason, model)
    except ValueError:
        pass  # text data, or no top losses kept
    with open(os.path.join(directory, "evaluation.json"), "w") as handle:
        json.dump(evaluation.to_dict(), handle, indent=2)

    lines = [f"# {title}", "",
             f"Written by tftransfer on {datetime.date.today().isoformat()}.", ""]
    lines += ["## Summary", "", "| | |", "|---|---|"]
    if backbone:
        lines.append(f"| backbone | {backbone} |")
    if data_description:
        lines.append(f"| data | {data_description} |")
    lines.append(f"| classes | {', '.join(evaluation.class_names)} |")
    for name, value in (extra or {}).items():
        lines.append(f"| {name} | {value} |")
    lines += ["", "## Evaluation", "", f"On {evaluation.count} held-out examples.", "",
              "| metric | value |", "|---|---|",
              f"| accuracy | {_number(evaluation.accuracy)} |"]
    if evaluation.top_k is not None:  # only for k below the number of classes
        lines.append(f"| top-{evaluation.top_k} accuracy | "
                     f"{_number(evaluation.top_k_accuracy)} |")
    lines += [f"| macro F1 | {_number(evaluation.macro_f1)} |",
              f"| calibration error (ECE) | {_number(evaluation.calibration_error)} |",
              f"| loss (cross-entropy) | {_number(evaluation.loss)} |", "",
              "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, row in evaluation.per_class.items():
        lines.append(f"| {name} | {_number(row['precision'])} | {_number(row['recall'])} | "
                     f"{_number(row['f1'])} | {row['support']} |")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(evaluation.class_names) + " |",
              "|---" * (len(evaluation.class_names) + 1) + "|"]
    for name, row in zip(evaluation.class_names, evaluation.confusion_matrix):
        lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
    if training is not None:
        history = training.history
        phases = history.get("phase", [])
        lines += ["", "## Training", "",
                  f"- epochs: {phases.count('head')} head, {phases.count('fine_tune')} "
                  "fine-tuning",
                  f"- best epoch: {training.best.get('epoch')} "
                  f"({', '.join(f'{k} {_number(v)}' for k, v in training.best.get('logs', {}).items() if isinstance(v, float))})",
                  f"- feature cache: {training.feature_cache}",
                  f"- mixed precision: {training.mixed_precision}",
                  f"- seconds per phase: "
                  f"{', '.join(f'{k} {v:.1f}' for k, v in training.timings.items())}"]
    if export is not None:
        model_dir = os.path.dirname(os.path.abspath(export.path))
        name = model_name or os.path.basename(model_dir)
        lines += ["", "## Export", "", f"- SavedModel: `{export.path}` (version {export.version})",
                  f"- signatures: {', '.join(f'`{s}`' for s in export.signatures)}"]
        if export.parity_max_abs_diff is not None:
            lines.append(f"- checked in a fresh process: largest difference from Keras "
                         f"{export.parity_max_abs_diff:.2e}")
        lines += ["", "Serve it with TF Serving:", "", "```sh",
                  serving_command(model_dir, name), "```"]
    if maps is not None:
        lines += ["", "## Where the model looks", "", maps]
    lines += ["", "## Plots", ""]
    for caption, path in images.items():
        lines.append(f"![{caption}]({os.path.basename(path)})")
    lines += ["", "## Limits", "",
              "Figures hold for data like the evaluation split; check them on data from "
              "where the model will run before trusting them there.", ""]
    path = os.path.join(directory, "model_card.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    return path


def _maps_note(explanation, reason, model):
    if model is None:
        return ("Not drawn: pass `model=` to `write_report()` to see, on the top losses, where "
                "the model looked (`tftransfer.evaluation.explain()`).")
    if explanation is None:
        return f"Not available for this model: {reason}"
    what = {"gradcam": f"Grad-CAM maps (feature map of `{explanation.layer}`)",
            "rollout": f"attention rollout maps (`{explanation.layer}`)",
            "attention": f"last-layer attention maps (`{explanation.layer}`)",
            "saliency": "pixel-gradient maps"}[explanation.method]
    return (f"The top-loss grid overlays {what} of the predicted class on each of the "
            f"{len(explanation.heatmaps)} worst examples: red marks where the evidence for the "
            "prediction came from. A map on the background rather than on the object points "
            "to a shortcut in the data.")


def serving_command(model_dir, name):
    """The `docker run` command that serves a model folder with TF Serving (REST on 8501).

    Example:

    >>> from tftransfer.evaluation.report import serving_command
    >>> print(serving_command("/srv/models/demo", "demo"))  # doctest: +NORMALIZE_WHITESPACE
    docker run --rm -p 8501:8501 -p 8500:8500 --mount type=bind,source=/srv/models/demo,target=/models/demo -e MODEL_NAME=demo tensorflow/serving
    """
    checks.check_path(model_dir, "model_dir")
    if not isinstance(name, str) or not name:
        raise TypeError(f"name: expected the model name as a string; received {name!r}.")
    return (f"docker run --rm -p 8501:8501 -p 8500:8500 --mount type=bind,"
            f"source={os.path.abspath(model_dir)},target=/models/{name} -e MODEL_NAME={name} "
            "tensorflow/serving")
