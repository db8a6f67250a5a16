"""Turning a backbone argument (name, handle, model or layer) into a Keras object.

This is the one place where `build_classifier()` learns what it was given:
a registry name, a `tfhub:` handle, a `keras.Model` or any Keras layer.
"""

import dataclasses
import os
import re
import warnings
from typing import Optional, Tuple

import keras

from tftransfer.backbones.backbone import as_backbone
from tftransfer.backbones.registry import (
    BackboneSpec,
    find_spec_for_model_name,
    get_backbone_spec,
    parse_backbone_name,
)
from tftransfer.backbones.tf_hub import HubBackbone

# BatchNorm momentum of a backbone built at random initialization (weights=None).
# Keras Applications use 0.99 or 0.999, values for ImageNet-length runs: after a
# few hundred steps their moving statistics are still about their initial values
# (mean 0, variance 1) and the model evaluates at chance. 0.9 is PyTorch's and
# timm's default (their momentum=0.1).
SCRATCH_BATCH_NORM_MOMENTUM = 0.9


@dataclasses.dataclass
class ResolvedBackbone:
    """A backbone ready to be called, with what the classifier needs to know."""

    layer: object
    preprocessing: str
    image_size: Tuple[int, int]
    spec: Optional[BackboneSpec]
    name: str
    weights_source: Optional[str]
    # KerasHub image backbones bring their own preprocessing and pooling layers.
    preprocessing_layer: object = None
    pooling_layer: object = None


def normalize_image_size(image_size, *, default=None, min_size=1, argument="image_size"):
    """Returns `(height, width)` from an int, a pair, or None (the default)."""
    if image_size is None:
        if default is None:
            raise ValueError(
                f"{argument}: this backbone has no default input size; pass "
                "image_size=(height, width)."
            )
        image_size = default
    if isinstance(image_size, bool):
        raise TypeError(f"{argument}: expected an int or a (height, width) pair; received a bool.")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise ValueError(
            f"{argument}: expected an int or a (height, width) pair of positive ints; "
            f"received {image_size!r}."
        ) from None
    for value in (height, width):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(
                f"{argument}: expected positive ints for (height, width); "
                f"received {image_size!r}."
            )
    if min(height, width) < min_size:
        raise ValueError(
            f"{argument}: {(height, width)} is too small for this backbone, whose "
            f"smallest input is {min_size}x{min_size}. Pass image_size of at least "
            f"{min_size} (resize or pad your images to it)."
        )
    return int(height), int(width)


def _offline_weights_error(spec, error):
    urls = re.findall(r"https?://\S+?(?=[:\s]|$)", str(error))
    cache_dir = os.path.join(os.path.expanduser(_keras_home()), "models")
    if urls:
        url = urls[0]
        file_name = url.rsplit("/", 1)[-1]
        where = (
            f"Keras looks for the file {file_name!r} in {cache_dir!r}: download it from "
            f"{url} on a machine with network and copy it there"
        )
    else:
        where = f"Keras looks for the weights file in {cache_dir!r}"
    return ValueError(
        f"weights='imagenet': could not download the ImageNet weights of {spec.name} "
        f"({error}). {where}, or pass weights='path/to/file.h5' (a file saved from the "
        "same architecture without its top) or weights=None for random initialization."
    )


def _keras_home():
    from keras.src.backend import config

    return config.keras_home()


def _load_weights_file(model, path, spec_name):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(
            f"weights: no weights file at {path!r}. Pass the path of a file saved with "
            f"`backbone.save_weights()` (or a Keras .h5 weights file) for {spec_name}, "
            "'imagenet', or None."
        )
    mismatch = ValueError(
        f"weights: the file {path!r} does not fit {spec_name} at input shape "
        f"{tuple(model.input_shape[1:])}. It holds weights of another architecture or "
        "input size: save the weights from the same backbone (built with "
        "include_top=False), or pass weights=None."
    )
    try:
        # Keras warns, rather than raises, for the parts of a file that match no
        # layer; a partial load is a mismatch too.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path)
    except Exception as error:  # Keras raises ValueError, KeyError or OSError here.
        raise mismatch from error
    if any("Skipping" in str(w.message) or "could not be loaded" in str(w.message)
           for w in caught):
        raise mismatch


def create_backbone(backbone, *, image_size=None, weights="imagenet"):
    """Builds the backbone object that `build_classifier()` wraps.

    Args:
        backbone: str, `keras.Model` or `keras.layers.Layer`. A registry name
            (see `tftransfer.list_backbones()`), `"tfhub:<handle>"`, or a
            Keras object that maps images to features.
        image_size: int, (height, width) or None. Defaults to the backbone's
            own default size.
        weights: `"imagenet"`, None or a path to a weights file. Only for
            registry names.

    Returns:
        A `ResolvedBackbone`.
    """
    if isinstance(backbone, str):
        source, rest = parse_backbone_name(backbone)
        if source == "tfhub":
            return _create_hub(rest, image_size=image_size)
        if source == "kerashub":
            return _create_kerashub(rest, image_size=image_size, weights=weights)
        spec = get_backbone_spec(rest)
        return _create_registered(spec, image_size=image_size, weights=weights)
    if isinstance(backbone, BackboneSpec):
        return _create_registered(backbone, image_size=image_size, weights=weights)
    if isinstance(backbone, keras.layers.Layer):
        if weights not in ("imagenet", None):
            raise ValueError(
                "weights: only applies when backbone is a registry name; load weights into "
                "your own backbone before passing it."
            )
        default = None
        if isinstance(backbone, keras.Model):
            try:
                shape = backbone.input_shape
            except (AttributeError, ValueError):
                shape = None
            if shape is not None and len(shape) == 4 and None not in shape[1:3]:
                default = (int(shape[1]), int(shape[2]))
        size = normalize_image_size(image_size, default=default)
        spec = find_spec_for_model_name(backbone.name)
        if getattr(backbone, "input_kind", None) == "image":
            preprocessing = "unit"  # TF-Hub image modules take [0, 1] by convention.
        else:
            preprocessing = spec.preprocessing if spec is not None else "none"
        return ResolvedBackbone(
            layer=as_backbone(backbone),
            preprocessing=preprocessing,
            image_size=size,
            spec=spec,
            name=backbone.name,
            weights_source="user",
        )
    raise TypeError(
        "backbone: expected a registry name (str), a keras.Model or a Keras layer; "
        f"received {type(backbone).__name__}."
    )


def _create_hub(handle, *, image_size):
    # The factory imports the backbone kinds, never the other way round.
    return ResolvedBackbone(
        layer=HubBackbone(handle),
        preprocessing="unit",
        image_size=normalize_image_size(image_size, default=224),
        spec=None,
        name="hub_" + os.path.basename(handle.rstrip("/")).replace("-", "_"),
        weights_source=handle,
    )


def _create_kerashub(handle, *, image_size, weights):
    from tftransfer.backbones import kerashub_vision

    resolved = kerashub_vision.resolve_image_backbone(handle, weights=weights)
    size = normalize_image_size(image_size, default=resolved.default_size, min_size=8)
    return ResolvedBackbone(
        layer=resolved.backbone,
        preprocessing="none",
        image_size=size,
        spec=None,
        name=resolved.name,
        weights_source=resolved.backbone.handle if weights is not None else None,
        preprocessing_layer=resolved.preprocessing_for(size),
        pooling_layer=resolved.pooling,
    )


def _create_registered(spec, *, image_size, weights):
    size = normalize_image_size(image_size, default=spec.default_size, min_size=spec.min_size)
    input_shape = size + (3,)
    if weights is None:
        model = spec.constructor(input_shape=input_shape, weights=None)
        for layer in model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BATCH_NORM_MOMENTUM
        source = None
    elif isinstance(weights, str) and weights == "imagenet":
        try:
            model = spec.constructor(input_shape=input_shape, weights="imagenet")
        except Exception as error:
            if "URL fetch failure" in str(error) or isinstance(error, OSError):
                raise _offline_weights_error(spec, error) from error
            if isinstance(error, ValueError):
                raise ValueError(f"weights='imagenet' for {spec.name}: {error}") from error
            raise
        source = "imagenet"
    elif isinstance(weights, (str, os.PathLike)) and os.fspath(weights).lower().endswith(
            spec.checkpoint_suffixes):
        if not os.path.isfile(weights):
            raise ValueError(f"weights: no checkpoint file at {os.fspath(weights)!r}.")
        model = spec.constructor(input_shape=input_shape, weights=os.fspath(weights))
        source = os.fspath(weights)
    elif isinstance(weights, (str, os.PathLike)):
        model = spec.constructor(input_shape=input_shape, weights=None)
        _load_weights_file(model, weights, spec.name)
        source = os.fspath(weights)
    else:
        raise TypeError(
            "weights: expected 'imagenet', None or a path to a weights file; "
            f"received {type(weights).__name__}."
        )
    layer = as_backbone(model)
    if weights is None and hasattr(layer, "pretrained"):
        layer.pretrained = False  # fit() trains its BatchNorm: nothing pretrained to keep
    return ResolvedBackbone(
        layer=layer,
        preprocessing=spec.preprocessing,
        image_size=size,
        spec=spec,
        name=spec.name,
        weights_source=source,
    )
