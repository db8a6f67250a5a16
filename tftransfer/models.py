"""Model builders. Each returns a plain Functional `keras.Model`."""

import keras

from tftransfer.backbones.factory import create_backbone
from tftransfer.data.augmentation import augmentation_layer
from tftransfer.heads import classification_head, validate_task
from tftransfer.layers import ImagePreprocessing

IMAGE_INPUT_NAME = "image"


def build_classifier(backbone, num_classes, *, image_size=None, weights="imagenet",
                     dropout_rate=0.2, head_units=(), task="multiclass",
                     augmentation=None, name=None):
    """Builds a transfer-learning image classifier on a backbone.

    The model is Functional: raw RGB input in [0, 255] -> optional
    augmentation -> the preprocessing the backbone's weights expect ->
    backbone called with `training=False` (BatchNorm in inference mode) ->
    GlobalAveragePooling2D -> Dropout -> optional hidden Dense layers ->
    Dense output, computed in float32 even under a mixed precision policy.
    The backbone starts frozen; `tftransfer.unfreeze()` opens its top blocks
    for fine-tuning while keeping BatchNorm frozen.

    Args:
        backbone: str, `keras.Model` or `keras.layers.Layer`. A name from
            `tftransfer.list_backbones()` (any case, e.g. `"EfficientNetB0"`),
            `"tfhub:<url or local SavedModel path>"`, or a Keras object that
            maps images to features (used with `"none"` preprocessing unless
            its name is a registered backbone's).
        num_classes: int. Number of outputs. At least 2 for
            `task="multiclass"`, exactly 1 for `"binary"`, at least 1 for
            `"multilabel"` and `"regression"`.
        image_size: int, (height, width) or None. Input size. Defaults to the
            backbone's default size.
        weights: `"imagenet"`, None, or a path to a weights file for the
            backbone. `"imagenet"` uses Keras' own download and cache
            (`~/.keras/models`); offline, the error names the file Keras looks
            for and where to put it. Defaults to `"imagenet"`.
        dropout_rate: float. Dropout before the output layer. Defaults to
            `0.2`.
        head_units: tuple of int. Hidden Dense layers of the head. Defaults
            to `()`.
        task: str. `"multiclass"`, `"multilabel"`, `"binary"` or
            `"regression"`. Defaults to `"multiclass"`.
        augmentation: None, `"light"`, `"medium"`, `"heavy"`, a Keras layer
            or a list of layers, applied inside the model (in training only).
            Defaults to None.
        name: str. The model's name. Defaults to `"<backbone>_classifier"`.

    Returns:
        A `keras.Model` taking float images `[batch, height, width, 3]` in
        [0, 255] and returning `[batch, num_classes]` in float32.

    Example:

    >>> import numpy as np, tftransfer
    >>> model = tftransfer.build_classifier(
    ...     "MobileNetV2", num_classes=3, image_size=96, weights=None)
    >>> model(np.zeros((2, 96, 96, 3))).shape
    TensorShape([2, 3])
    """
    validate_task(task, num_classes)
    resolved = create_backbone(backbone, image_size=image_size, weights=weights)
    height, width = resolved.image_size
    backbone_layer = resolved.layer
    backbone_layer.trainable = False

    inputs = keras.Input(shape=(height, width, 3), name=IMAGE_INPUT_NAME)
    x = inputs
    if augmentation is not None:
        x = augmentation_layer(augmentation, name="augmentation")(x)
    x = ImagePreprocessing(resolved.preprocessing, name="preprocessing")(x)
    x = backbone_layer(x, training=False)
    outputs = classification_head(
        x, num_classes, task=task, dropout_rate=dropout_rate, head_units=head_units
    )
    if name is None:
        name = f"{_safe_name(resolved.name)}_classifier"
    return keras.Model(inputs, outputs, name=name)


def _safe_name(text):
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(text).lower()).strip("_")
