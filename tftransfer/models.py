"""Model builders. Each returns a plain Functional `keras.Model`."""

import keras

from tftransfer.backbones.factory import create_backbone
from tftransfer.backbones.registry import PREPROCESSING_MODES, parse_backbone_name
from tftransfer.data.augmentation import augmentation_layer
from tftransfer.heads import classification_head, validate_task
from tftransfer.layers import ImagePreprocessing

IMAGE_INPUT_NAME = "image"


def build_classifier(backbone, num_classes, *, image_size=None, weights="imagenet",
                     dropout_rate=0.2, head_units=(), task="multiclass",
                     augmentation=None, preprocessing=None, name=None):
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
            `"tfhub:<url or local SavedModel path>"` (a TF-Hub image
            feature vector; see `tftransfer.backbones.HubBackbone`),
            `"kerashub:<preset or preset folder>"` (a KerasHub image
            backbone: ViT, DeiT, DINOv2/v3, Swin, MiT, ResNet, EfficientNet,
            ... with its ImageConverter's preprocessing inside the model, the
            class token or mean of patch tokens for transformers, global
            average pooling for CNNs), or a Keras object that maps images to
            features.
        num_classes: int. Number of outputs. At least 2 for
            `task="multiclass"`, exactly 1 for `"binary"`, at least 1 for
            `"multilabel"` and `"regression"`.
        image_size: int, (height, width) or None. Input size. Defaults to the
            backbone's default size.
        weights: `"imagenet"`, None, or a path to a weights file for the
            backbone. `"imagenet"` uses Keras' own download and cache
            (`~/.keras/models`); offline, the error names the file Keras looks
            for and where to put it. For `"kerashub:"` backbones,
            `"imagenet"` means the preset's weights, None random ones. A
            registry backbone built with None is marked not pretrained
            (`Backbone.pretrained`): its BatchNorm momentum is 0.9 and
            `tftransfer.fit()` trains its BatchNorm when it fine-tunes.
            Defaults to `"imagenet"`.
        dropout_rate: float. Dropout before the output layer. Defaults to
            `0.2`.
        head_units: tuple of int. Hidden Dense layers of the head. Defaults
            to `()`.
        task: str. `"multiclass"`, `"multilabel"`, `"binary"` or
            `"regression"`. Defaults to `"multiclass"`.
        augmentation: None, `"light"`, `"medium"`, `"heavy"`, a Keras layer
            or a list of layers, applied inside the model (in training only).
            Defaults to None.
        preprocessing: str or None. Override how raw [0, 255] pixels are
            prepared: `"caffe"`, `"tf"`, `"torch"`, `"unit"` (scaled to
            [0, 1]) or `"none"`. Defaults to what the backbone expects: its
            registry entry's mode, `"unit"` for TF-Hub image modules (their
            convention), the preset's ImageConverter for KerasHub backbones,
            `"none"` for other Keras objects.
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
    if preprocessing is not None and preprocessing not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing: expected None or one of {PREPROCESSING_MODES}; "
                         f"received {preprocessing!r}.")
    resolved = create_backbone(backbone, image_size=image_size, weights=weights)
    height, width = resolved.image_size
    backbone_layer = resolved.layer
    backbone_layer.trainable = False

    inputs = keras.Input(shape=(height, width, 3), name=IMAGE_INPUT_NAME)
    x = inputs
    if augmentation is not None:
        x = augmentation_layer(augmentation, name="augmentation")(x)
    if resolved.preprocessing_layer is not None and preprocessing is None:
        x = resolved.preprocessing_layer(x)
    else:
        x = ImagePreprocessing(preprocessing or resolved.preprocessing, name="preprocessing")(x)
    x = backbone_layer(x, training=False)
    if resolved.pooling_layer is not None:
        x = resolved.pooling_layer(x)
    outputs = classification_head(
        x, num_classes, task=task, dropout_rate=dropout_rate, head_units=head_units
    )
    if name is None:
        name = f"{_safe_name(resolved.name)}_classifier"
    return keras.Model(inputs, outputs, name=name)


def _safe_name(text):
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(text).lower()).strip("_")


TEXT_INPUT_NAME = "text"


def build_text_classifier(backbone, num_classes, *, trainable=False, dropout_rate=0.2,
                          head_units=(), task="multiclass", pooling=None, sequence_length=128,
                          weights="pretrained", signature=None, output_key=None, name=None):
    """Builds a classifier over a pretrained text encoder that takes raw strings.

    Input: a scalar string per example (`keras.Input(shape=(), dtype="string")`),
    so the saved and exported model serves raw text. Two kinds of encoders:

    - KerasHub BERT-family backbones: `"kerashub:<preset>"`, a local
      checkpoint folder (a KerasHub preset, or a Hugging Face BERT-family
      folder with `config.json`, `vocab.txt` and `model.safetensors`), or a
      packaged checkpoint name such as `"all-MiniLM-L6-v2"`. The model is
      strings -> `TextPreprocessing` (the checkpoint's tokenizer, padding
      trimmed to the batch's longest text) -> `TextBackbone` (frozen, in
      inference mode) -> `TextPooling` -> head. `unfreeze(model, blocks=k)`
      opens the top `k` encoder layers; `tftransfer.training.enable_lora()`
      adds LoRA.
    - TF-Hub text modules: `"tfhub:<url or path>"`, or any SavedModel whose
      `__call__` maps a batch of strings to `[batch, features]`.

    Args:
        backbone: str or Keras layer. See above; or a Keras layer that maps
            strings to vectors.
        num_classes: int. See `build_classifier()`.
        trainable: bool. Fine-tune the whole encoder from the start. Defaults
            to `False` (frozen; `tftransfer.fit()` trains the head first).
        dropout_rate: float. Defaults to `0.2`.
        head_units: tuple of int. Defaults to `()`.
        task: str. Defaults to `"multiclass"`.
        pooling: str or None. KerasHub backbones only: `"mean"` (masked mean
            of the token vectors), `"cls"` (the [CLS] token's vector) or
            `"pooler"` (BERT's pretrained pooler over [CLS]). Defaults to what
            the checkpoint was trained for: `"mean"` for sentence-transformers
            checkpoints (their `1_Pooling` config, marker files or name),
            `"cls"` for the others.
        sequence_length: int. KerasHub backbones only: longer texts are
            truncated to this many tokens (at most the backbone's maximum).
            Defaults to `128`.
        weights: `"pretrained"` or None. KerasHub backbones only: None builds
            the same architecture and tokenizer at random initialization
            (a from-scratch baseline). Defaults to `"pretrained"`.
        signature: str or None. TF-Hub only: a signature to call instead of
            `__call__`.
        output_key: str or None. TF-Hub only: the output to use when the
            module returns a dict.
        name: str. Defaults to `"text_classifier"`.

    Returns:
        A `keras.Model` from strings `[batch]` to `[batch, num_classes]`.

    Example:

    >>> import tensorflow as tf, tftransfer
    >>> model = tftransfer.build_text_classifier("all-MiniLM-L6-v2", num_classes=3)
    >>> model(tf.constant(["I love this film", "Terrible service"])).shape
    TensorShape([2, 3])
    """
    from tftransfer.backbones import kerashub
    from tftransfer.backbones.tf_hub import HubBackbone

    validate_task(task, num_classes)
    resolved = None
    layer = None
    if isinstance(backbone, str):
        source, handle = parse_backbone_name(backbone)
        if source == "kerashub" or kerashub.find_text_checkpoint(backbone) is not None or (
                source == "keras" and kerashub.is_checkpoint_folder(backbone)):
            resolved = kerashub.resolve_text_backbone(
                "kerashub:" + handle if source == "kerashub" else backbone,
                sequence_length=sequence_length, pooling=pooling, weights=weights)
        elif source == "keras" and "://" not in backbone and not _looks_like_path(backbone):
            known = [entry.name for entry in kerashub.TEXT_CHECKPOINTS.values()]
            raise ValueError(
                f"backbone: {backbone!r} is not a text encoder. Pass 'kerashub:<preset>', a "
                f"checkpoint folder, a packaged checkpoint ({known}) or 'tfhub:<url or path>' "
                "of a module that takes strings (Keras Applications backbones take images)."
            )
        else:
            layer = HubBackbone(handle if source == "tfhub" else backbone, trainable=trainable,
                                signature=signature, output_key=output_key, input_kind="text")
    elif isinstance(backbone, keras.layers.Layer):
        layer = backbone
    else:
        raise TypeError("backbone: expected a text backbone name or a Keras layer; received "
                        f"{type(backbone).__name__}.")
    if resolved is None and pooling is not None:
        raise ValueError("pooling: only KerasHub text backbones take pooling=; this backbone "
                         "returns one vector per text already.")
    if resolved is None and weights != "pretrained":
        raise ValueError("weights: only KerasHub text backbones take weights=None; a TF-Hub "
                         "module comes with its weights.")
    inputs = keras.Input(shape=(), dtype="string", name=TEXT_INPUT_NAME)
    if resolved is not None:
        resolved.backbone.trainable = bool(trainable)
        x = kerashub.text_features(resolved, inputs)
    else:
        x = layer(inputs, training=False)
    outputs = classification_head(
        x, num_classes, task=task, dropout_rate=dropout_rate, head_units=head_units
    )
    return keras.Model(inputs, outputs, name=name or "text_classifier")


def _looks_like_path(text):
    import os

    return os.path.sep in text or os.path.isdir(os.path.expanduser(text))
