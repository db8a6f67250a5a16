"""The offline demo behind `make demo` and `tftransfer demo`.

Transfer learning, for real, with no network: the embedded backbone
(`"FashionCNN"`, pretrained by tftransfer on Fashion-MNIST classes 0-4) is
transferred to the small target set shipped with the package (Fashion-MNIST
classes 5-9) with 10 labelled images per class: a head phase on the frozen
backbone, then fine-tuning, with progress bars. Next to it, the same
architecture is trained from scratch on the same images, with the same
optimizer, learning rate and number of epochs. The transferred model is evaluated on the held-out test images,
plotted, exported for TF Serving, checked in a fresh process, and described
in a model card.
"""

import os
import subprocess
import sys
import time

import keras
import numpy as np

#: The demo's recipe, shared with the notebooks.
RECIPE = {
    "image_size": 32,
    "labels_per_class": 10,
    "head_epochs": 5,
    "fine_tune_epochs": 25,
    "unfreeze_blocks": 3,
    "head_learning_rate": 3e-3,
    "fine_tune_learning_rate": 3e-3,
    "dropout_rate": 0.2,
    "seeds": (0, 1, 2),
}


def _summary(values):
    values = np.asarray(values)
    each = " ".join(f"{v:.3f}" for v in values)
    return f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f}); {each}"


def demo_data(image_size=32, *, labels_per_class=10, seed=0):
    """The embedded target set: `(bundle, test dataset)`.

    The bundle trains on `labels_per_class` images per class of the shipped
    training folder (60 per class) and validates on the others; the test
    dataset is the shipped test folder (100 per class).

    Example:

    >>> from tftransfer.demo import demo_data
    >>> data, test = demo_data(labels_per_class=10)
    >>> data.class_names, data.counts["train"]["bag"], data.counts["validation"]["bag"]
    (['ankle_boot', 'bag', 'sandal', 'shirt', 'sneaker'], 10, 50)
    """
    import tftransfer

    folder = tftransfer.datasets.demo_target_folder
    available = min(len(os.listdir(os.path.join(folder("train"), name)))
                    for name in os.listdir(folder("train")))
    if isinstance(labels_per_class, bool) or not isinstance(labels_per_class, int) or not (
            1 <= labels_per_class <= available):
        raise ValueError(f"labels_per_class: expected an int in [1, {available}]; received "
                         f"{labels_per_class!r}.")
    data = tftransfer.data.from_directory(folder("train"), image_size,
                                          validation_split=1 - labels_per_class / available,
                                          seed=seed)
    test = tftransfer.data.from_directory(folder("test"), image_size, validation_split=0.0,
                                          class_names=data.class_names, seed=seed).train
    return data, test


def _fit(model, data, recipe, *, scratch, verbose, seed):
    import tftransfer

    if scratch:
        # From scratch every layer trains from the first epoch, for the same
        # number of epochs as head phase and fine-tuning together.
        return tftransfer.fit(model, data, head_epochs=0,
                              fine_tune_epochs=recipe["head_epochs"] + recipe["fine_tune_epochs"],
                              unfreeze_fraction=1.0,
                              fine_tune_learning_rate=recipe["fine_tune_learning_rate"],
                              early_stopping_patience=None, seed=seed, verbose=verbose)
    return tftransfer.fit(model, data, head_epochs=recipe["head_epochs"],
                          fine_tune_epochs=recipe["fine_tune_epochs"],
                          unfreeze_blocks=recipe["unfreeze_blocks"],
                          head_learning_rate=recipe["head_learning_rate"],
                          fine_tune_learning_rate=recipe["fine_tune_learning_rate"],
                          early_stopping_patience=None, seed=seed, verbose=verbose)


def compare(recipe, seed, *, verbose=0):
    """One run of transfer and scratch on one draw of the labelled images.

    Returns:
        `(transfer TrainingResult, transfer EvaluationResult, scratch
        EvaluationResult, class names)`.
    """
    import tftransfer
    from tftransfer.backbones import embedded

    data, test = demo_data(recipe["image_size"], labels_per_class=recipe["labels_per_class"],
                           seed=seed)
    keras.utils.set_random_seed(seed)
    model = tftransfer.build_classifier(embedded.NAME, data.num_classes,
                                        image_size=recipe["image_size"],
                                        dropout_rate=recipe["dropout_rate"])
    result = _fit(model, data, recipe, scratch=False, verbose=verbose, seed=seed)
    evaluation = tftransfer.evaluate(result.model, test, class_names=data.class_names, top_k=2)
    keras.utils.set_random_seed(seed)
    scratch_model = tftransfer.build_classifier(embedded.NAME, data.num_classes,
                                                image_size=recipe["image_size"], weights=None,
                                                dropout_rate=recipe["dropout_rate"])
    if verbose:
        print("\n    ... and the same architecture from scratch, on the same images, with the "
              "same optimizer and epochs")
    scratch = _fit(scratch_model, data, recipe, scratch=True, verbose=verbose, seed=seed)
    scratch_evaluation = tftransfer.evaluate(scratch.model, test, class_names=data.class_names)
    return result, evaluation, scratch_evaluation, data


def run_demo(output_dir="demo_output", *, export_dir=os.path.join("saved_models", "demo"),
             verbose=1, recipe=None):
    """Transfers the embedded backbone, compares with scratch, evaluates, exports, checks.

    Args:
        output_dir: str. Plots and the `.keras` file. Defaults to
            `"demo_output"`.
        export_dir: str. The TF Serving model folder; each run adds a
            version. Defaults to `"saved_models/demo"`.
        verbose: int. 0 silent, 1 progress bars and a summary. Defaults to 1.
        recipe: dict or None. Entries replace those of `RECIPE`.

    Returns:
        A dict: `transfer_accuracy` and `scratch_accuracy` (means over the
        runs), `transfer_accuracies` and `scratch_accuracies` (each run),
        `evaluation` (the first run's `EvaluationResult`), `export` (an `ExportResult`), `report` (the
        model card's path), `model_path`, `fresh_process_prediction` and
        `seconds`.

    Example:

    >>> from tftransfer.demo import run_demo  # doctest: +SKIP
    >>> results = run_demo("/tmp/demo", export_dir="/tmp/demo/saved", verbose=0)  # doctest: +SKIP
    >>> results["transfer_accuracy"] > results["scratch_accuracy"]  # doctest: +SKIP
    True
    """
    import tftransfer
    from tftransfer.backbones import embedded

    recipe = {**RECIPE, **(recipe or {})}
    start = time.time()
    say = print if verbose else (lambda *args, **kwargs: None)
    fit_verbose = 1 if verbose else 0
    source = embedded.metadata()
    seeds = list(recipe["seeds"])
    data, _ = demo_data(recipe["image_size"], labels_per_class=recipe["labels_per_class"],
                        seed=seeds[0])
    counts = data.counts
    say(f"Backbone: {embedded.NAME}, pretrained by tftransfer on Fashion-MNIST classes 0-4 "
        f"({', '.join(source['source_classes'])}; source test accuracy "
        f"{source['source_test_accuracy']:.3f}).")
    say(f"Target: {', '.join(data.class_names)}: {recipe['labels_per_class']} labelled images "
        f"per class ({sum(counts['train'].values())} in all) for training, "
        f"{sum(counts['validation'].values())} for validation, 500 held-out test images.")
    say(f"Each comparison runs {len(seeds)} times, on {len(seeds)} draws of the labelled "
        "images.")

    say(f"\n1/4 Transfer (head phase on the frozen backbone, then fine-tuning) and scratch, "
        f"run 1 of {len(seeds)}")
    runs = []
    for index, seed in enumerate(seeds):
        if index:
            say(f"    run {index + 1} of {len(seeds)} (seed {seed})")
        runs.append(compare(recipe, seed, verbose=fit_verbose if index == 0 else 0))
    result, evaluation, scratch_evaluation, data = runs[0]
    transfer_accuracies = [run[1].accuracy for run in runs]
    scratch_accuracies = [run[2].accuracy for run in runs]

    say("\n2/4 Exporting run 1's model for TF Serving (checked in a fresh process)")
    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, "demo_classifier.keras")
    result.model.save(model_path)
    exported = tftransfer.export(result.model, export_dir, class_names=data.class_names,
                                 metrics={"test_accuracy": evaluation.accuracy})

    say("3/4 Classifying a test image with the export, in a new Python process")
    folder = os.path.join(tftransfer.datasets.demo_target_folder("test"), data.class_names[0])
    sample = os.path.join(folder, sorted(os.listdir(folder))[0])
    check = subprocess.run([sys.executable, "-m", "tftransfer", "predict", exported.path, sample,
                            "--top-k", "1"], capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if check.returncode != 0:
        raise RuntimeError("The export does not load in a fresh process:\n" + check.stderr[-2000:])
    prediction = check.stdout.strip().splitlines()[-1]

    say("4/4 Plots and model card")
    report = tftransfer.evaluation.write_report(
        os.path.join(os.path.dirname(exported.path), f"report_v{exported.version}"), evaluation,
        training=result, export=exported, title="Model card: demo (FashionCNN -> Fashion-MNIST "
        "5-9)", backbone=f"{embedded.NAME} (embedded, pretrained on Fashion-MNIST classes 0-4)",
        data_description="tftransfer/demo_data/fashion_target (Fashion-MNIST classes 5-9)",
        extra={"labelled images per class": recipe["labels_per_class"],
               "from scratch, same architecture, images and epochs (test accuracy)":
               f"{scratch_evaluation.accuracy:.4f}"})
    plots = [tftransfer.evaluation.plot_history(result, os.path.join(output_dir,
                                                                     "training_curves.png")),
             tftransfer.evaluation.plot_confusion_matrix(
                 evaluation, os.path.join(output_dir, "confusion_matrix.png")),
             tftransfer.evaluation.plot_top_losses(evaluation,
                                                   os.path.join(output_dir, "top_losses.png"))]
    seconds = time.time() - start
    model_dir = os.path.dirname(exported.path)
    say("")
    say(f"  test accuracy over {len(seeds)} runs: mean (min-max); each run:")
    say(f"  test accuracy, transfer (pretrained backbone):   {_summary(transfer_accuracies)}")
    say(f"  test accuracy, same architecture from scratch:  {_summary(scratch_accuracies)}")
    say(f"  run 1, transfer: top-2 accuracy {evaluation.top_k_accuracy:.3f}, macro F1 "
        f"{evaluation.macro_f1:.3f}, calibration error {evaluation.calibration_error:.3f}")
    say(f"  export: {exported.path} (largest difference from Keras in a fresh process "
        f"{exported.parity_max_abs_diff:.1e})")
    say(f"  fresh process: {prediction}")
    say(f"  model card: {report}")
    say(f"  plots: {', '.join(plots)}")
    say("  serve it with TF Serving (REST on port 8501):")
    say("    " + tftransfer.evaluation.serving_command(model_dir, os.path.basename(model_dir)))
    say(f"  ({seconds:.0f} s)")
    return {
        "transfer_accuracy": float(np.mean(transfer_accuracies)),
        "scratch_accuracy": float(np.mean(scratch_accuracies)),
        "transfer_accuracies": transfer_accuracies,
        "scratch_accuracies": scratch_accuracies,
        "evaluation": evaluation,
        "export": exported,
        "report": report,
        "plots": plots,
        "model_path": model_path,
        "fresh_process_prediction": prediction,
        "seconds": seconds,
    }
