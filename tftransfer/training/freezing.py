"""Freezing and unfreezing a backbone, with BatchNorm kept frozen.

Keras 3.15 keeps updating BatchNorm moving statistics during `fit` once a
backbone is trainable, even though the classifier calls it with
`training=False`: a Functional model hands the outer `training` value to
nested layers over the one written at the call site. Two things keep
BatchNorm frozen here: every BatchNorm layer of the backbone gets
`trainable = False` (so its scale and offset stay too), and a `Backbone`
(or TF-Hub backbone) keeps `inference_mode` on, so BatchNorm and Dropout run
as in inference inside `fit`. This is right for pretrained backbones, whose
statistics describe the data they learned from; a backbone trained from
scratch needs its BatchNorm to learn (pass `freeze_batch_norm=False`;
`tftransfer.fit()` does for a backbone built with `weights=None`, whose
`Backbone.pretrained` is False).

Transformer text backbones (`tftransfer.backbones.TextBackbone`) have no
BatchNorm; their blocks are the encoder layers (the backbone carries its own
`block_pattern`), the embeddings are the stem, and inference mode keeps their
dropout off. KerasHub image transformers (`KerasHubImageBackbone`: ViT,
DeiT, DINOv2, Swin, MiT) work the same way, their encoder layers being the
blocks even where KerasHub nests them in one encoder layer. LayerNorm, the
transformers' normalization, keeps no moving statistics: there is nothing
to freeze in it beyond its weights, which follow their block. When LoRA is
enabled on a backbone (`enable_lora()`), unfreezing opens only the LoRA
weights of the chosen blocks: the pretrained kernels stay as they are.
"""

import math

import keras

from tftransfer.backbones.blocks import assign_blocks
from tftransfer.backbones.registry import find_spec_for_model_name

_NOT_BACKBONE_NAMES = ("augmentation",)


def _is_backbone_candidate(layer):
    if layer.name in _NOT_BACKBONE_NAMES:
        return False
    if isinstance(layer, keras.Model):
        return True
    return bool(getattr(layer, "is_tftransfer_backbone", False))


def find_backbone(model, backbone=None):
    """Returns the backbone layer inside a classifier.

    Args:
        model: `keras.Model`. A model from `build_classifier()` or any model
            with one nested backbone model or layer.
        backbone: None, str or layer. The backbone's name in `model`, or the
            layer itself, when the model holds several nested models.
            Defaults to None (found automatically).

    Returns:
        The backbone layer (usually a nested `keras.Model`).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model; received {type(model).__name__}.")
    if isinstance(backbone, keras.layers.Layer):
        return backbone
    if isinstance(backbone, str):
        try:
            return model.get_layer(backbone)
        except ValueError:
            raise ValueError(
                f"backbone: the model {model.name!r} has no layer named {backbone!r}; its "
                f"layers are {[layer.name for layer in model.layers]}."
            ) from None
    if backbone is not None:
        raise TypeError(
            f"backbone: expected None, a layer name or a layer; received {type(backbone).__name__}."
        )
    candidates = [layer for layer in model.layers if _is_backbone_candidate(layer)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(
            f"model: {model.name!r} holds no nested backbone model. Build it with "
            "tftransfer.build_classifier(), or pass backbone=<layer name>."
        )
    raise ValueError(
        f"model: {model.name!r} holds several nested models "
        f"({[layer.name for layer in candidates]}); pass backbone=<layer name>."
    )


def _all_sublayers(layer):
    return list(layer._flatten_layers(include_self=False, recursive=True))


def _freeze_batch_norm(layer):
    for sublayer in [layer] + _all_sublayers(layer):
        if isinstance(sublayer, keras.layers.BatchNormalization):
            sublayer.trainable = False


def _set_inference_mode(layer, value):
    if hasattr(layer, "inference_mode"):
        layer.inference_mode = value


def backbone_blocks(model, backbone=None):
    """Lists the named blocks of a classifier's backbone and their layers.

    Args:
        model: `keras.Model`. A classifier, or a registered backbone itself.
        backbone: None, str or layer. See `find_backbone()`.

    Returns:
        A list of `(block_name, [layer names])`, bottom to top.

    Example:

    >>> import tftransfer
    >>> model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    >>> [name for name, _ in tftransfer.backbone_blocks(model)][-2:]
    ['block_15', 'block_16']
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model; received {type(model).__name__}.")
    if backbone is None and not any(_is_backbone_candidate(sub) for sub in model.layers):
        layer = model  # a backbone itself
    else:
        layer = find_backbone(model, backbone)
    if hasattr(layer, "block_layers"):
        return [(block, [unit.name for unit in units]) for block, units in layer.block_layers()]
    spec = find_spec_for_model_name(layer.name)
    pattern = getattr(layer, "block_pattern", None)
    if spec is None and pattern is not None and isinstance(layer, keras.Model):
        names = [sublayer.name for sublayer in layer.layers]
        block_names, layer_blocks = assign_blocks(
            names, pattern, getattr(layer, "block_boundary", "start"))
        grouped = {block: [] for block in block_names}
        for name, block in zip(names, layer_blocks):
            grouped[block].append(name)
        return [(block, grouped[block]) for block in block_names]
    if spec is None or not isinstance(layer, keras.Model):
        raise ValueError(
            f"backbone: {layer.name!r} is not a registered architecture, so it has no named "
            "blocks. Unfreeze it with layers=<count> or fraction=<0..1> instead "
            "(TF-Hub backbones unfreeze as a whole: unfreeze(model) or freeze(model))."
        )
    names = [sublayer.name for sublayer in layer.layers]
    block_names, layer_blocks = assign_blocks(names, spec.block_pattern, spec.block_boundary)
    grouped = {block: [] for block in block_names}
    for name, block in zip(names, layer_blocks):
        grouped[block].append(name)
    return [(block, grouped[block]) for block in block_names]


def block_layer_objects(model, backbone=None):
    """`[(block name, [layers])]` of a classifier's backbone, bottom to top.

    The layers themselves, not their names: a KerasHub image transformer's
    blocks are nested inside its encoder layer, where `get_layer()` does not
    reach.

    Example:

    >>> import tftransfer
    >>> from tftransfer.training.freezing import block_layer_objects
    >>> model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    >>> block_layer_objects(model)[-1][1][0].name
    'block_16_expand'
    """
    layer = find_backbone(model, backbone)
    if hasattr(layer, "block_layers"):
        return layer.block_layers()
    return [(block, [layer.get_layer(name) for name in names])
            for block, names in backbone_blocks(model, layer)]


def freeze(model, *, backbone=None):
    """Freezes the whole backbone of a classifier (the head stays trainable).

    Recompile the model after calling this, as after any change to
    `trainable` (`tftransfer.fit()` does it for you).

    Args:
        model: `keras.Model`. A model from `build_classifier()`.
        backbone: None, str or layer. See `find_backbone()`.

    Returns:
        The same model.

    Example:

    >>> import tftransfer
    >>> model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    >>> model = tftransfer.freeze(model)
    >>> tftransfer.find_backbone(model).trainable
    False
    """
    layer = find_backbone(model, backbone)
    layer.trainable = False
    _set_inference_mode(layer, True)
    return model


def unfreeze(model, *, blocks=None, layers=None, fraction=None, freeze_batch_norm=True,
             backbone=None):
    """Makes the top of a classifier's backbone trainable, BatchNorm excepted.

    Give at most one of `blocks`, `layers` and `fraction`; with none, the
    whole backbone is unfrozen. Layers below the chosen top stay frozen, and
    so does every BatchNormalization layer (its moving statistics and its
    scale and offset), unless `freeze_batch_norm=False`. Recompile the model
    afterwards, at a low learning rate (`tftransfer.fit()` does both).

    Args:
        model: `keras.Model`. A model from `build_classifier()`.
        blocks: int. Unfreeze the top `blocks` named blocks of a registered
            backbone (see `tftransfer.backbone_info(name).blocks`), with the
            layers that follow them (the final convolution, for instance);
            for a text backbone or a KerasHub image transformer, the top
            `blocks` encoder layers (and what follows them: BERT's pooler, a
            ViT's final LayerNorm), the embeddings being the stem.
        layers: int. Unfreeze the top `layers` layers of `backbone.layers`
            (as `base_model.layers[-layers:]` in the Keras guide).
        fraction: float. In [0, 1]: unfreeze that fraction of the layers,
            counted from the top.
        freeze_batch_norm: bool. Keep every BatchNorm layer frozen and the
            backbone in inference mode (BatchNorm and Dropout as in
            inference). Defaults to `True`; pass `False` only for a backbone
            trained from scratch, whose BatchNorm must learn.
        backbone: None, str or layer. See `find_backbone()`.

    Returns:
        The same model.

    Example:

    >>> import tftransfer
    >>> model = tftransfer.build_classifier("ResNet50", 2, image_size=32, weights=None)
    >>> model = tftransfer.unfreeze(model, blocks=1)
    >>> sorted({w.path.split("/")[0][:12] for w in model.trainable_weights})[:2]
    ['conv5_block3', 'predictions']
    """
    chosen = [name for name, value in (("blocks", blocks), ("layers", layers),
                                       ("fraction", fraction)) if value is not None]
    if len(chosen) > 1:
        raise ValueError(
            f"unfreeze: pass at most one of blocks, layers and fraction; received {chosen}."
        )
    layer = find_backbone(model, backbone)
    sublayers = layer.layers if isinstance(layer, keras.Model) else None

    if sublayers is None:
        if blocks is not None or layers is not None or fraction not in (None, 0, 0.0, 1, 1.0):
            raise ValueError(
                f"unfreeze: the backbone {layer.name!r} is one module (a TF-Hub or SavedModel "
                "backbone, or a plain layer) and freezes as a whole: call "
                "unfreeze(model) to fine-tune all of it or freeze(model) to freeze it."
            )
        layer.trainable = fraction not in (0, 0.0)
        if freeze_batch_norm:
            _freeze_batch_norm(layer)
        _set_inference_mode(layer, bool(freeze_batch_norm) or not layer.trainable)
        return model

    if blocks is not None:
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError(f"blocks: expected a non-negative int; received {blocks!r}.")
        named = backbone_blocks(model, layer)
        if blocks > len(named):
            raise ValueError(
                f"blocks: {blocks} is more than the {len(named)} blocks of {layer.name!r} "
                f"({named[0][0]} ... {named[-1][0]}); pass blocks <= {len(named)}."
            )
        if hasattr(layer, "block_units"):
            # Blocks nested in an encoder layer: open and close its children one by one.
            sublayers = layer.block_units()
            top = {id(unit) for _, units in layer.block_layers()[len(named) - blocks:]
                   for unit in units}
            selected = [unit for unit in sublayers if id(unit) in top]
        else:
            top = {name for block, names in named[len(named) - blocks:] for name in names}
            selected = [sublayer for sublayer in sublayers if sublayer.name in top]
    elif layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            raise ValueError(f"layers: expected a non-negative int; received {layers!r}.")
        if layers > len(sublayers):
            raise ValueError(
                f"layers: {layers} is more than the {len(sublayers)} layers of "
                f"{layer.name!r}; pass layers <= {len(sublayers)}."
            )
        selected = sublayers[len(sublayers) - layers:]
    else:
        if fraction is None:
            fraction = 1.0
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            0.0 <= fraction <= 1.0
        ):
            raise ValueError(f"fraction: expected a float in [0, 1]; received {fraction!r}.")
        count = int(math.ceil(fraction * len(sublayers)))
        selected = sublayers[len(sublayers) - count:] if count else []

    selected_ids = {id(sublayer) for sublayer in selected}
    layer.trainable = bool(selected)
    for sublayer in sublayers:
        sublayer.trainable = id(sublayer) in selected_ids
    if freeze_batch_norm:
        _freeze_batch_norm(layer)
    _set_inference_mode(layer, bool(freeze_batch_norm) or not selected)
    if has_lora(layer):
        _open_lora_only(layer, selected)
    return model


def is_lora_variable(variable):
    """Whether a variable is one of the low-rank factors `enable_lora()` adds."""
    return "lora_kernel" in variable.path


def has_lora(layer):
    """Whether any layer inside `layer` has LoRA enabled."""
    return any(getattr(sublayer, "lora_enabled", False) for sublayer in _all_sublayers(layer))


def _open_lora_only(layer, selected):
    # Keras' `trainable` setter re-opens a layer's own variables, the LoRA-frozen
    # kernels included: close everything but the LoRA factors of the chosen layers.
    chosen = {id(variable) for sublayer in selected for variable in sublayer.weights}
    for variable in layer.weights:
        variable.trainable = id(variable) in chosen and is_lora_variable(variable)
