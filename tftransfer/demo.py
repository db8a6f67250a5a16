"""The offline demo behind `make demo` and `tftransfer demo`.

It needs no network: a small convolutional backbone is pretrained on a
synthetic source task (rings, triangles, bars), then transferred to a
different synthetic target task (squares, discs, crosses) with few labels, next to the same
architecture trained from scratch on those labels. The model is saved as a
`.keras` file and reloaded with nothing but `import tftransfer`.
"""

import os
import time

import keras
import numpy as np

SOURCE_CLASSES = ("ring", "triangle", "horizontal bar", "vertical bar")
TARGET_CLASSES = ("square", "disc", "cross")


def _canvas(rng, size):
    background = rng.uniform(0, 120, size=(1, 1, 3))
    noise = rng.normal(0, 12, size=(size, size, 3))
    return np.clip(background + noise, 0, 255)


def _source_image(label, rng, size):
    image = _canvas(rng, size)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = rng.uniform(size * 0.18, size * 0.3)
    cy, cx = rng.uniform(radius + 1, size - radius - 1, size=2)
    if label == 0:
        distance = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        mask = (distance < radius) & (distance > radius * 0.6)
    elif label == 1:
        mask = (yy - cy + radius > 0) & (np.abs(xx - cx) < (yy - cy + radius) / 2) & (
            yy - cy < radius)
    elif label == 2:
        mask = (np.abs(yy - cy) < radius / 3) & (np.abs(xx - cx) < radius)
    else:
        mask = (np.abs(xx - cx) < radius / 3) & (np.abs(yy - cy) < radius)
    image[mask] = rng.uniform(150, 255, size=3)
    return image


def _target_image(label, rng, size):
    image = _canvas(rng, size)
    yy, xx = np.mgrid[0:size, 0:size]
    radius = rng.uniform(size * 0.18, size * 0.3)
    cy, cx = rng.uniform(radius + 1, size - radius - 1, size=2)
    if label == 0:
        mask = (np.abs(yy - cy) < radius) & (np.abs(xx - cx) < radius)
    elif label == 1:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    else:
        width = radius / 3
        mask = ((np.abs(yy - cy) < width) & (np.abs(xx - cx) < radius)) | (
            (np.abs(xx - cx) < width) & (np.abs(yy - cy) < radius))
    image[mask] = rng.uniform(150, 255, size=3)
    return image


def synthetic_images(task, count_per_class, *, image_size=32, seed=0):
    """Draws a labelled synthetic image set.

    Args:
        task: str. `"source"` (4 shapes) or `"target"` (3 other shapes).
        count_per_class: int. Images per class.
        image_size: int. Side of the square images. Defaults to `32`.
        seed: int. Defaults to `0`.

    Returns:
        `(images, labels)`: float32 `[n, size, size, 3]` in [0, 255] and int
        labels, shuffled.

    Example:

    >>> from tftransfer.demo import synthetic_images
    >>> x, y = synthetic_images("target", 2)
    >>> x.shape, sorted(set(y.tolist()))
    ((6, 32, 32, 3), [0, 1, 2])
    """
    if task not in ("source", "target"):
        raise ValueError(f"task: expected 'source' or 'target'; received {task!r}.")
    rng = np.random.default_rng(seed)
    draw, classes = ((_source_image, SOURCE_CLASSES) if task == "source"
                     else (_target_image, TARGET_CLASSES))
    labels = np.repeat(np.arange(len(classes)), count_per_class)
    rng.shuffle(labels)
    images = np.stack([draw(int(label), rng, image_size) for label in labels])
    return images.astype("float32"), labels.astype("int64")


def small_backbone(image_size=32, name="demo_backbone"):
    """A small convolutional backbone (no BatchNorm) that trains quickly on a CPU."""
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for index, filters in enumerate((16, 32, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"block{index + 1}_conv")(x)
        x = keras.layers.MaxPooling2D(name=f"block{index + 1}_pool")(x)
    return keras.Model(inputs, x, name=name)


def run_demo(output_dir="demo_output", *, verbose=1):
    """Pretrains, transfers, compares with scratch, saves and reloads.

    Args:
        output_dir: str. Where the `.keras` file goes. Defaults to
            `"demo_output"`.
        verbose: int. 0 silent, 1 progress bars and a summary. Defaults to 1.

    Returns:
        A dict with `transfer_accuracy`, `scratch_accuracy`, `model_path`
        and `seconds`.

    Example:

    >>> from tftransfer.demo import run_demo
    >>> results = run_demo("/tmp/tftransfer_demo", verbose=0)
    >>> sorted(results)
    ['model_path', 'scratch_accuracy', 'seconds', 'transfer_accuracy']
    """
    import tftransfer

    start = time.time()
    keras.utils.set_random_seed(0)
    source_per_class, target_per_class, source_epochs = 400, 20, 6
    say = print if verbose else (lambda *args, **kwargs: None)
    fit_verbose = 2 if verbose else 0

    say("1/5 Pretraining a small backbone on the source task:", ", ".join(SOURCE_CLASSES))
    x_source, y_source = synthetic_images("source", source_per_class, seed=1)
    backbone = small_backbone()
    pretrain = tftransfer.build_classifier(backbone, len(SOURCE_CLASSES), dropout_rate=0.0)
    tftransfer.unfreeze(pretrain)
    pretrain.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy",
                     metrics=["accuracy"])
    pretrain.fit(x_source, y_source, batch_size=32, epochs=source_epochs,
                 validation_split=0.1, verbose=fit_verbose)

    x_train, y_train = synthetic_images("target", target_per_class, seed=2)
    x_test, y_test = synthetic_images("target", 100, seed=3)
    say(f"2/5 Transfer to {TARGET_CLASSES} with {len(y_train)} labels: head phase")
    model = tftransfer.build_classifier(backbone, len(TARGET_CLASSES), dropout_rate=0.2)
    tftransfer.freeze(model)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=16, epochs=30, validation_data=(x_test, y_test),
              verbose=fit_verbose)
    say("3/5 Fine-tuning the top block at a lower learning rate")
    tftransfer.unfreeze(model, layers=2)
    model.compile(keras.optimizers.Adam(3e-4), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=16, epochs=10, validation_data=(x_test, y_test),
              verbose=fit_verbose)
    transfer_accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])

    say("4/5 The same architecture from scratch on the same labels")
    scratch = tftransfer.build_classifier(small_backbone(name="scratch_backbone"),
                                          len(TARGET_CLASSES))
    tftransfer.unfreeze(scratch)
    scratch.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                    metrics=["accuracy"])
    scratch.fit(x_train, y_train, batch_size=16, epochs=40, validation_data=(x_test, y_test),
                verbose=fit_verbose)
    scratch_accuracy = float(scratch.evaluate(x_test, y_test, verbose=0)[1])

    say("5/5 Saving and reloading the transferred model")
    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, "demo_classifier.keras")
    model.save(model_path)
    reloaded = keras.models.load_model(model_path, safe_mode=True)
    if not np.allclose(reloaded.predict(x_test, verbose=0), model.predict(x_test, verbose=0),
                       atol=1e-6):
        raise RuntimeError("The reloaded model predicts differently from the trained one.")
    seconds = time.time() - start
    say("")
    say(f"  test accuracy, transfer (pretrained backbone): {transfer_accuracy:.3f}")
    say(f"  test accuracy, same architecture from scratch: {scratch_accuracy:.3f}")
    say(f"  saved and reloaded: {model_path}  ({seconds:.0f} s)")
    return {
        "transfer_accuracy": transfer_accuracy,
        "scratch_accuracy": scratch_accuracy,
        "model_path": model_path,
        "seconds": seconds,
    }
