"""Augmentation presets as Keras preprocessing layers.

The same layers run inside a model (`build_classifier(augmentation=...)`,
active only in training) or in a tf.data pipeline.
"""

import keras


def _light():
    return [
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(0.05),
    ]


def _medium():
    return [
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(0.1),
        keras.layers.RandomZoom(0.1),
        keras.layers.RandomTranslation(0.1, 0.1),
        keras.layers.RandomContrast(0.1),
    ]


def _heavy():
    return [
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(0.15),
        keras.layers.RandomZoom(0.2),
        keras.layers.RandomTranslation(0.15, 0.15),
        keras.layers.RandomContrast(0.2),
        keras.layers.RandomBrightness(0.2, value_range=(0, 255)),
    ]


AUGMENTATION_PRESETS = {"light": _light, "medium": _medium, "heavy": _heavy}


def augmentation_layer(augmentation, *, name="augmentation"):
    """Builds one Keras layer from a preset name or a list of layers.

    Args:
        augmentation: str, `keras.layers.Layer` or list of layers. `"light"`
            (flip, small rotation), `"medium"` (adds zoom, translation,
            contrast) or `"heavy"` (stronger, adds brightness); or your own
            Keras preprocessing layers. Inputs are pixels in [0, 255].
        name: str. The name of the returned layer. Defaults to
            `"augmentation"`.

    Returns:
        A `keras.Sequential` that is random in training and the identity in
        inference.

    Example:

    >>> import numpy as np, tftransfer
    >>> layer = tftransfer.data.augmentation_layer("light")
    >>> layer(np.zeros((1, 32, 32, 3)), training=True).shape
    TensorShape([1, 32, 32, 3])
    """
    if isinstance(augmentation, str):
        if augmentation not in AUGMENTATION_PRESETS:
            raise ValueError(
                f"augmentation: unknown preset {augmentation!r}; expected one of "
                f"{sorted(AUGMENTATION_PRESETS)}, a Keras layer or a list of layers."
            )
        layers = AUGMENTATION_PRESETS[augmentation]()
    elif isinstance(augmentation, keras.layers.Layer):
        layers = [augmentation]
    elif isinstance(augmentation, (list, tuple)) and all(
        isinstance(layer, keras.layers.Layer) for layer in augmentation
    ):
        layers = list(augmentation)
    else:
        raise TypeError(
            "augmentation: expected a preset name ('light', 'medium', 'heavy'), a Keras "
            f"layer or a list of Keras layers; received {type(augmentation).__name__}."
        )
    return keras.Sequential(layers, name=name)
