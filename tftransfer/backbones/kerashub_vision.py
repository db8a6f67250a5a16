"""KerasHub image backbones: ViT, DeiT, DINOv2/v3, Swin, MiT and KerasHub's CNN ports.

`build_classifier("kerashub:<preset or folder>", n)` reaches this module. The
preset (a KerasHub preset name, fetched and cached by KerasHub, or a local
folder written by `backbone.save_to_preset(folder)`) gives the backbone and,
when it has an `image_converter.json`, its preprocessing. The classifier is
Functional: raw [0, 255] pixels -> `KerasHubImagePreprocessing` (the
converter's scale and offset, and a resize when the backbone takes one size
only) -> `KerasHubImageBackbone` (the KerasHub graph, in inference mode
while frozen) -> pooling (`TokenPooling` for transformers, the head's
GlobalAveragePooling2D for feature maps) -> the float32 head.

What each family needs is data (`IMAGE_FAMILIES`): how it pools, which
layers are its blocks (encoder layers for transformers, the patch embedding
being the stem), what its attention projections are called (for LoRA), and
the preprocessing to assume for a folder saved without its converter.
Transformers normalize with LayerNorm, which keeps no moving statistics:
there is nothing to freeze there, unlike BatchNorm in the CNN families.
"""

import dataclasses
import difflib
import os
import warnings
from typing import Optional, Tuple

import keras
from keras import ops

from tftransfer.backbones.backbone import Backbone
from tftransfer.backbones.blocks import assign_blocks
from tftransfer.backbones.registry import register_backbone_handle

POOLING_MODES = ("cls", "mean")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: `(scale, offset)` per fallback mode: `x * scale + offset` on [0, 255] pixels.
FALLBACK_PREPROCESSING = {
    "torch": ([1.0 / (255.0 * s) for s in _IMAGENET_STD],
              [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)]),
    "tf": (1.0 / 127.5, -1.0),
    "unit": (1.0 / 255.0, 0.0),
}


@dataclasses.dataclass(frozen=True)
class KerasHubImageFamily:
    """How tftransfer uses one KerasHub image backbone class, as data.

    Args:
        backbone_class: str. The KerasHub class name, e.g. `"ViTBackbone"`.
        family: str. A short name, e.g. `"vit"`.
        pooling: str. `"cls"` (the class token, first in the sequence),
            `"mean"` (mean of the patch tokens) or `"gap"` (a feature map,
            pooled by the head's GlobalAveragePooling2D).
        block_pattern: str. A regular expression over layer names whose
            groups name a block.
        expand: tuple of str. Top-level layers whose direct children are the
            blocks (a KerasHub encoder that holds all its transformer layers).
        prefix_tokens: int. Tokens before the patch tokens (class and
            distillation tokens); registers are read from the model.
        lora_targets: tuple of str. Names of the query and value projections.
        fallback_preprocessing: str. A key of `FALLBACK_PREPROCESSING`, for a
            preset folder without an `image_converter.json`.
    """

    backbone_class: str
    family: str
    pooling: str
    block_pattern: str
    expand: Tuple[str, ...] = ()
    prefix_tokens: int = 0
    lora_targets: Tuple[str, ...] = ()
    fallback_preprocessing: str = "torch"


_FAMILIES = (
    KerasHubImageFamily("ViTBackbone", "vit", "cls", r"^(transformer_block_\d+)$",
                        ("vit_encoder",), 1, ("query", "value"), "tf"),
    KerasHubImageFamily("DeiTBackbone", "deit", "cls", r"^(transformer_block_\d+)$",
                        ("deit_encoder",), 2, ("query", "value")),
    KerasHubImageFamily("DINOV2Backbone", "dinov2", "cls", r"^(layers_\d+)$", ("encoder",), 1,
                        ("query", "value")),
    KerasHubImageFamily("DINOV3Backbone", "dinov3", "cls", r"^(layers_\d+)$", ("encoder",), 1,
                        ("q_proj", "v_proj")),
    KerasHubImageFamily("SwinTransformerBackbone", "swin", "mean", r"^(stage_\d+)$",
                        lora_targets=("attention_qkv",)),
    KerasHubImageFamily("MiTBackbone", "mit", "gap", r"^(hierarchical_encoder_\d+_\d+)$"),
    KerasHubImageFamily("ResNetBackbone", "resnet", "gap", r"^(stack\d+_block\d+)_"),
    KerasHubImageFamily("EfficientNetBackbone", "efficientnet", "gap", r"^(block\d+[a-z])_"),
    KerasHubImageFamily("CSPNetBackbone", "cspnet", "gap", r"^(stage_\d+_block_\d+)_"),
    KerasHubImageFamily("VGGBackbone", "vgg", "gap", r"^(block\d+)_"),
    KerasHubImageFamily("MobileNetBackbone", "mobilenet", "gap", r"^(block_\d+_\d+)$"),
    KerasHubImageFamily("MobileNetV5Backbone", "mobilenetv5", "gap",
                        r"^((?:edge_residual|universal_inverted_residual|mobile_attention|"
                        r"multi_query_attention|msfa)\w*)$"),
    KerasHubImageFamily("DenseNetBackbone", "densenet", "gap", r"^(stack\d+_block\d+)_"),
    KerasHubImageFamily("HGNetV2Backbone", "hgnetv2", "gap", r"(encoder_stage_\d+)$",
                        ("encoder",)),
    KerasHubImageFamily("XceptionBackbone", "xception", "gap", r"^(block\d+)_"),
)
IMAGE_FAMILIES = {family.backbone_class: family for family in _FAMILIES}

#: Well-known KerasHub image presets, listed by `list_backbones(source="kerashub")`.
#: Any other preset of these families, or a local preset folder, works too.
IMAGE_PRESETS = {
    "vit_base_patch16_224_imagenet": "ViT-B/16, 224 px, ImageNet-21k + 1k (class token).",
    "deit_tiny_distilled_patch16_224_imagenet": "DeiT-Ti distilled, 224 px (class token).",
    "deit_base_distilled_patch16_224_imagenet": "DeiT-B distilled, 224 px (class token).",
    "dinov2_small": "DINOv2 ViT-S/14, self-supervised (class token).",
    "dinov2_base": "DINOv2 ViT-B/14, self-supervised (class token).",
    "dinov3_vit_small_lvd1689m": "DINOv3 ViT-S/16, self-supervised (class token).",
    "swin_tiny_patch4_window7_224": "Swin-T, 224 px (mean of patch tokens).",
    "resnet_50_imagenet": "ResNet-50 (timm weights; global average pooling).",
    "efficientnet_b0_ra_imagenet": "EfficientNet-B0 (timm RandAugment weights).",
    "csp_darknet_53_ra_imagenet": "CSPDarkNet-53 (timm weights).",
    "vgg_16_imagenet": "VGG-16.",
    "mobilenet_v3_large_100_imagenet": "MobileNetV3-Large 1.0.",
    "densenet_121_imagenet": "DenseNet-121.",
    "hgnetv2_b4_ssld_stage2_ft_in1k": "HGNetV2-B4.",
    "xception_41_imagenet": "Xception-41.",
    "mit_b0_ade20k_512": "MiT-B0 (SegFormer encoder; global average pooling).",
}
for _preset, _description in IMAGE_PRESETS.items():
    register_backbone_handle("kerashub:" + _preset, source="kerashub", description=_description)


def _require_keras_hub():
    from tftransfer.backbones.text_layers import require_keras_hub

    return require_keras_hub()


# --- layers ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tftransfer")
class KerasHubImagePreprocessing(keras.layers.Layer):
    """A KerasHub ImageConverter's arithmetic on raw [0, 255] pixels, as a layer.

    `x * scale + offset` (per channel or one number), after a resize to
    `image_size` when given (a backbone that takes one size only, such as a
    ViT with its learned position embeddings).

    Args:
        scale: float, list of 3 floats or None. Defaults to None (1).
        offset: float, list of 3 floats or None. Defaults to None (0).
        image_size: (height, width) or None. Resize to this size first.
            Defaults to None (no resize).
        interpolation: str. For the resize. Defaults to `"bilinear"`.
        antialias: bool. For the resize. Defaults to `False`.
        **kwargs: Base layer keyword arguments.

    Example:

    >>> import numpy as np, tftransfer
    >>> layer = tftransfer.backbones.KerasHubImagePreprocessing(scale=1 / 127.5, offset=-1.0)
    >>> layer(np.array([[[[0.0, 127.5, 255.0]]]])).numpy().round(3).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    #: What the export manifest records as the preprocessing.
    mode = "kerashub"

    def __init__(self, scale=None, offset=None, image_size=None, interpolation="bilinear",
                 antialias=False, **kwargs):
        kwargs.setdefault("name", "preprocessing")
        super().__init__(**kwargs)
        self.scale = _plain_numbers(scale, "scale")
        self.offset = _plain_numbers(offset, "offset")
        self.image_size = tuple(int(v) for v in image_size) if image_size else None
        self.interpolation = interpolation
        self.antialias = bool(antialias)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.image_size is not None:
            x = ops.image.resize(x, self.image_size, interpolation=self.interpolation,
                                 antialias=self.antialias)
        if self.scale is not None:
            x = x * ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        if self.offset is not None:
            x = x + ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        if self.image_size is None:
            return input_shape
        return (input_shape[0],) + self.image_size + (input_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "offset": self.offset,
                       "image_size": list(self.image_size) if self.image_size else None,
                       "interpolation": self.interpolation, "antialias": self.antialias})
        return config


def _plain_numbers(value, argument):
    if value is None:
        return None
    try:
        if hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{argument}: expected None, a number or a list of numbers; "
                         f"received {value!r}.") from None


@keras.saving.register_keras_serializable(package="tftransfer")
class TokenPooling(keras.layers.Layer):
    """Pools a vision transformer's tokens `[batch, tokens, features]` into one vector.

    Args:
        mode: str. `"cls"`: the first (class) token; `"mean"`: the mean of the
            patch tokens, the first `prefix_tokens` left out. Defaults to
            `"cls"`.
        prefix_tokens: int. Class, distillation and register tokens before
            the patch tokens (for `"mean"`). Defaults to `0`.
        **kwargs: Base layer keyword arguments.

    Example:

    >>> import numpy as np, tftransfer
    >>> tokens = np.array([[[9.0], [1.0], [3.0]]])
    >>> tftransfer.backbones.TokenPooling("cls")(tokens).numpy().tolist()
    [[9.0]]
    >>> tftransfer.backbones.TokenPooling("mean", prefix_tokens=1)(tokens).numpy().tolist()
    [[2.0]]
    """

    def __init__(self, mode="cls", prefix_tokens=0, **kwargs):
        kwargs.setdefault("name", "token_pooling")
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(f"mode: expected one of {POOLING_MODES}; received {mode!r}.")
        if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) \
                or prefix_tokens < 0:
            raise ValueError(f"prefix_tokens: expected an int >= 0; received {prefix_tokens!r}.")
        self.mode = mode
        self.prefix_tokens = prefix_tokens

    def call(self, inputs):
        if self.mode == "cls":
            return inputs[:, 0, :]
        return ops.mean(inputs[:, self.prefix_tokens:, :], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "prefix_tokens": self.prefix_tokens})
        return config


@keras.saving.register_keras_serializable(package="tftransfer")
class KerasHubImageBackbone(Backbone):
    """A KerasHub image backbone's graph with named blocks, in inference mode while frozen.

    It shares the KerasHub backbone's layers and weights (images in, the last
    feature map or token sequence out) and adds what transfer needs: blocks
    for `tftransfer.unfreeze(model, blocks=k)` (transformer encoder layers,
    also when KerasHub keeps them inside one encoder layer; the patch
    embedding is the stem; the final norm follows the last block), inference
    mode (dropout off, BatchNorm frozen) while frozen, and the names of its
    attention projections for `tftransfer.training.enable_lora()`.
    LayerNorm keeps no statistics: freezing it is just freezing its weights.

    Args:
        inputs: The Functional inputs, as for `keras.Model`.
        outputs: The Functional outputs, as for `keras.Model`.
        inference_mode: bool. Defaults to `True`.
        handle: str or None. Where the weights came from. Defaults to None.
        family: str or None. A key of `IMAGE_FAMILIES`' `family` values.
            Defaults to None.
        block_pattern: str. Regular expression whose groups name a block.
            Defaults to `"$^"` (no blocks).
        expand: list of str. Top-level layers whose children are the blocks.
            Defaults to `()`.
        lora_target_names: list of str. Attention projections for LoRA.
            Defaults to `()`.
        **kwargs: Other `keras.Model` arguments.

    Example:

    >>> import keras_hub, tftransfer
    >>> vit = keras_hub.models.ViTBackbone(
    ...     image_shape=(16, 16, 3), patch_size=8, num_layers=2, num_heads=1,
    ...     hidden_dim=8, mlp_dim=8)
    >>> backbone = tftransfer.backbones.KerasHubImageBackbone.from_model(vit)
    >>> backbone.block_names()
    ['stem', 'transformer_block_1', 'transformer_block_2']
    """

    def __init__(self, *args, inference_mode=True, handle=None, family=None,
                 block_pattern="$^", expand=(), lora_target_names=(), **kwargs):
        super().__init__(*args, inference_mode=inference_mode, **kwargs)
        self.handle = handle
        self.family = family
        self.block_pattern = block_pattern
        self.block_boundary = "start"
        self.expand = tuple(expand)
        self.lora_target_names = tuple(lora_target_names)

    @classmethod
    def from_model(cls, model, *, inference_mode=True, handle=None):
        """Wraps a KerasHub image backbone, which stays one nested model (and config)."""
        family = family_of(model)
        inputs = keras.Input(shape=tuple(model.input_shape[1:]), name="images")
        # KerasHub's inner layers do not all rebuild from their own configs; the
        # backbone does, so it stays one layer here (serialized as itself).
        if isinstance(model.input, dict):
            output = model({key: inputs for key in model.input})
        else:
            output = model(inputs)
        if isinstance(output, dict):  # a pyramid of stages (HGNetV2): the last one
            output = list(output.values())[-1]
        return cls(inputs=inputs, outputs=output, name=model.name,
                   inference_mode=inference_mode, handle=handle, family=family.family,
                   block_pattern=family.block_pattern, expand=family.expand,
                   lora_target_names=family.lora_targets)

    def keras_hub_backbone(self):
        """The wrapped KerasHub backbone (a nested `keras.Model`)."""
        return next(layer for layer in self.layers if isinstance(layer, keras.Model))

    def block_units(self):
        """The layers blocks are made of, bottom to top (expanded encoders' children)."""
        units = []
        for layer in self.keras_hub_backbone().layers:
            # KerasHub prefixes some layer names with the model's name when loading.
            if any(layer.name == name or layer.name.endswith("_" + name)
                   for name in self.expand):
                units.extend(layer._flatten_layers(include_self=False, recursive=False))
            else:
                units.append(layer)
        return units

    def block_layers(self):
        """`[(block name, [layers])]` bottom to top; `"stem"` first."""
        units = self.block_units()
        names, layer_blocks = assign_blocks([unit.name for unit in units], self.block_pattern,
                                            self.block_boundary)
        grouped = {name: [] for name in names}
        for unit, block in zip(units, layer_blocks):
            grouped[block].append(unit)
        return [(name, grouped[name]) for name in names]

    def block_names(self):
        """The block names bottom to top."""
        return [name for name, _ in self.block_layers()]

    def get_config(self):
        config = super().get_config()
        config.update({"handle": self.handle, "family": self.family,
                       "block_pattern": self.block_pattern, "expand": list(self.expand),
                       "lora_target_names": list(self.lora_target_names)})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from keras.src.models.functional import functional_from_config

        _require_keras_hub()
        config = dict(config)
        extra = {key: config.pop(key, default) for key, default in (
            ("inference_mode", True), ("handle", None), ("family", None),
            ("block_pattern", "$^"), ("expand", ()), ("lora_target_names", ()))}
        model = functional_from_config(cls, config, custom_objects=custom_objects)
        model.inference_mode = bool(extra["inference_mode"])
        model.handle = extra["handle"]
        model.family = extra["family"]
        model.block_pattern = extra["block_pattern"]
        model.block_boundary = "start"
        model.expand = tuple(extra["expand"])
        model.lora_target_names = tuple(extra["lora_target_names"])
        return model


# --- resolving a handle ----------------------------------------------------------------


def family_of(model):
    """The `KerasHubImageFamily` of a KerasHub backbone instance."""
    for klass in type(model).__mro__:
        if klass.__name__ in IMAGE_FAMILIES:
            return IMAGE_FAMILIES[klass.__name__]
    supported = sorted(family.family for family in _FAMILIES)
    raise ValueError(
        f"backbone: {type(model).__name__} is not a KerasHub image backbone tftransfer knows "
        f"(families: {supported}). Text encoders go to build_text_classifier(); for another "
        "image backbone, pass the KerasHub model itself to build_classifier().")


@dataclasses.dataclass
class ResolvedImageBackbone:
    """What `build_classifier()` needs from a KerasHub image preset."""

    backbone: KerasHubImageBackbone
    pooling: Optional[TokenPooling]
    default_size: Tuple[int, int]
    fixed_size: Optional[Tuple[int, int]]
    converter: dict
    name: str
    source: str

    def preprocessing_for(self, image_size):
        """The preprocessing layer for inputs of `image_size`: the converter's scale and
        offset, after a resize to the backbone's size when it takes one size only (learned
        position embeddings), as the KerasHub converter would resize."""
        resize = self.fixed_size if self.fixed_size not in (None, tuple(image_size)) else None
        return KerasHubImagePreprocessing(image_size=resize, **self.converter)


def _offline_error(preset, error):
    from tftransfer.backbones.kerashub import kaggle_location

    where = kaggle_location(preset)
    return ValueError(
        f"backbone: KerasHub could not fetch the image preset {preset!r} "
        f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''})."
        f"{where} Offline: on a machine with network run `python -c \"import keras_hub; "
        f"keras_hub.models.Backbone.from_preset('{preset}').save_to_preset('{preset}'); "
        f"keras_hub.layers.ImageConverter.from_preset('{preset}').save_to_preset('{preset}')"
        "\"`, copy that folder here and pass it: build_classifier('kerashub:/path/to/"
        f"{preset}', ...) (or copy the KaggleHub cache above, or set $KAGGLEHUB_CACHE).")


def _converter(keras_hub, preset, family):
    """`(scale, offset, image_size, interpolation, antialias)` of the preset's converter."""
    local = os.path.isdir(preset)
    if local and not os.path.isfile(os.path.join(preset, "image_converter.json")):
        scale, offset = FALLBACK_PREPROCESSING[family.fallback_preprocessing]
        warnings.warn(
            f"tftransfer: the preset folder {preset!r} has no image_converter.json, so its "
            f"preprocessing is assumed: {family.fallback_preprocessing!r} (what "
            f"{family.family} checkpoints usually take). Save the converter with the "
            "backbone (`keras_hub.layers.ImageConverter.from_preset(...).save_to_preset("
            "folder)`) to use its own.", stacklevel=4)
        return scale, offset, None, "bilinear", False
    converter = keras_hub.layers.ImageConverter.from_preset(preset)
    return (converter.scale, converter.offset, converter.image_size,
            converter.interpolation, converter.antialias)


def resolve_image_backbone(handle, *, weights="imagenet"):
    """Loads a KerasHub image preset (name or local folder) for `build_classifier()`.

    Args:
        handle: str. A KerasHub preset name or a local preset folder (without
            the `kerashub:` prefix).
        weights: `"imagenet"` / `"pretrained"` (the preset's weights) or
            None (random initialization). Defaults to `"imagenet"`.

    Returns:
        A `ResolvedImageBackbone`.
    """
    keras_hub = _require_keras_hub()
    if weights not in ("imagenet", "pretrained", None):
        raise ValueError(
            f"weights: a KerasHub backbone takes 'imagenet' (or 'pretrained': the preset's "
            f"own weights) or None (random initialization); received {weights!r}.")
    preset = os.path.expanduser(handle)
    local = os.path.isdir(preset)
    if local:
        preset = os.path.abspath(preset)
        if not os.path.isfile(os.path.join(preset, "config.json")):
            raise ValueError(f"backbone: the folder {preset!r} is not a KerasHub preset (no "
                             "config.json); write one with backbone.save_to_preset(folder).")
    elif os.sep in handle or handle.startswith("."):
        raise ValueError(f"backbone: no preset folder at {preset!r}.")
    elif preset in keras_hub.models.TextClassifier.presets:
        raise ValueError(f"backbone: 'kerashub:{preset}' is a KerasHub text backbone; build it "
                         "with tftransfer.build_text_classifier() (build_classifier() takes "
                         "images).")
    try:
        model = keras_hub.models.Backbone.from_preset(preset, load_weights=weights is not None)
        family = family_of(model)
        scale, offset, converter_size, interpolation, antialias = _converter(
            keras_hub, preset, family)
    except (OSError, ConnectionError) as error:
        raise _offline_error(preset, error) from None
    except ValueError as error:
        if not local and "Unknown preset" in str(error):
            known = sorted(name for name in keras_hub.models.Backbone.presets
                           if any(name in getattr(keras_hub.models, f.backbone_class).presets
                                  for f in _FAMILIES))
            close = difflib.get_close_matches(preset, known, n=5, cutoff=0.5)
            raise ValueError(
                f"backbone: {preset!r} is not a KerasHub image preset"
                + (f"; close matches: {close}" if close else "")
                + ". `tftransfer.list_backbones(source='kerashub')` lists well-known ones; "
                "keras_hub.models.ImageClassifier.presets has them all.") from None
        raise
    except Exception as error:
        if "kaggle" in f"{type(error).__module__} {error}".lower():
            raise _offline_error(preset, error) from None
        raise
    shape = tuple(model.input_shape[1:3])
    fixed = None if None in shape else (int(shape[0]), int(shape[1]))
    default = tuple(int(v) for v in (converter_size or fixed or (224, 224)))
    backbone = KerasHubImageBackbone.from_model(model, handle="kerashub:" + handle)
    pooling = None
    if family.pooling != "gap" and len(backbone.output.shape) == 3:
        mode = family.pooling
        prefix = family.prefix_tokens + int(getattr(model, "num_register_tokens", 0) or 0)
        if family.family == "vit" and not getattr(model, "use_class_token", True):
            mode, prefix = "mean", 0
        pooling = TokenPooling(mode, prefix_tokens=prefix)
    name = os.path.basename(preset.rstrip("/")) if local else preset
    converter = {"scale": scale, "offset": offset, "interpolation": interpolation,
                 "antialias": antialias}
    return ResolvedImageBackbone(backbone=backbone, pooling=pooling, default_size=default,
                                 fixed_size=fixed, converter=converter, name=name,
                                 source="folder" if local else "kerashub")
