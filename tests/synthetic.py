"""Synthetic shapes for tests: a labelled image set that needs no download.

Source task: rings, triangles and bars; target task: squares, discs and
crosses. `small_backbone()` is a BatchNorm-free CNN that trains in seconds.
"""

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

    >>> from synthetic import synthetic_images
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
