"""The backbone registry: one entry of data per backbone, looked up by name.

A backbone name may carry a source prefix, parsed in `parse_backbone_name()`
alone: `keras:ResNet50` (the default source, the same as `ResNet50`) or
`tfhub:<url or local SavedModel path>`, or `kerashub:<preset or folder>` (a
KerasHub image preset for `build_classifier()`, or a text preset for
`build_text_classifier()`).
"""

import dataclasses
import difflib
import re
from typing import Callable, Optional, Tuple

SOURCES = ("keras", "tfhub", "kerashub")

PREPROCESSING_MODES = ("caffe", "tf", "torch", "unit", "none")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What tftransfer knows about one backbone, as plain data.

    Args:
        name: str. The canonical name, e.g. `"ResNet50"`.
        family: str. The module of `keras.applications` (or another source)
            that holds the architecture, e.g. `"resnet"`.
        constructor: callable. `constructor(input_shape=..., weights=...)`
            returns a `keras.Model` without its top.
        preprocessing: str. How raw RGB pixels in [0, 255] become what the
            weights expect: `"caffe"` (BGR, ImageNet mean subtracted), `"tf"`
            (scaled to [-1, 1]), `"torch"` (scaled to [0, 1], ImageNet mean
            and standard deviation), `"unit"` (scaled to [0, 1]) or `"none"`
            (the backbone preprocesses inside itself).
        default_size: int. The input size the weights were trained at.
        min_size: int. The smallest input size the architecture accepts.
        feature_dim: int. Channels of the backbone's last feature map.
        block_pattern: str. A regular expression over layer names; the
            groups it captures name the block a layer belongs to.
        block_boundary: str. `"start"` when the matched layers open their
            block (the layers after them follow it), `"end"` when they close
            it (the layers before them lead up to it).
        source: str. Where the architecture comes from.
        checkpoint_suffixes: tuple of str. Suffixes of weight files that the
            constructor reads itself (`constructor(weights=path)`), such as
            PyTorch checkpoints; other files go through Keras'
            `load_weights`. Defaults to `()`.
        description: str. One line for `list_backbones()` and the CLI.
    """

    name: str
    family: str
    constructor: Callable
    preprocessing: str
    default_size: int
    min_size: int
    feature_dim: int
    block_pattern: str
    block_boundary: str = "start"
    source: str = "keras"
    checkpoint_suffixes: Tuple[str, ...] = ()
    description: str = ""

    @property
    def key(self):
        return normalize_name(self.name)


_REGISTRY = {}
# Handles listed by `list_backbones()` that are not registry entries (KerasHub presets).
_HANDLES = {}


def normalize_name(name):
    """Lower-cases a name and drops everything but letters and digits."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def register_backbone(spec, *, override=False):
    """Adds a backbone to the registry.

    Args:
        spec: `BackboneSpec`. The entry to add.
        override: bool. Replace an entry of the same name. Defaults to `False`.

    Returns:
        The spec, so that the call can be used inline.

    Example:

    >>> import keras, tftransfer
    >>> from tftransfer.backbones import BackboneSpec, register_backbone
    >>> spec = register_backbone(BackboneSpec(
    ...     name="TinyVGG", family="vgg16",
    ...     constructor=lambda input_shape, weights: keras.applications.VGG16(
    ...         include_top=False, input_shape=input_shape, weights=weights,
    ...         name="tinyvgg"),
    ...     preprocessing="caffe", default_size=64, min_size=32, feature_dim=512,
    ...     block_pattern=r"^(block\\d)_"), override=True)
    >>> "TinyVGG" in tftransfer.list_backbones()
    True
    """
    if not isinstance(spec, BackboneSpec):
        raise TypeError(
            f"spec: register_backbone() expects a BackboneSpec; received {type(spec).__name__}."
        )
    if spec.preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"BackboneSpec {spec.name!r}: preprocessing must be one of "
            f"{PREPROCESSING_MODES}; received {spec.preprocessing!r}."
        )
    if spec.block_boundary not in ("start", "end"):
        raise ValueError(
            f"BackboneSpec {spec.name!r}: block_boundary must be 'start' or 'end'; "
            f"received {spec.block_boundary!r}."
        )
    if spec.key in _REGISTRY and not override:
        raise ValueError(
            f"A backbone named {spec.name!r} is registered already; pass override=True "
            "to replace it."
        )
    _REGISTRY[spec.key] = spec
    return spec


def register_backbone_handle(handle, *, source, description=""):
    """Lists a source-prefixed handle, such as `"kerashub:dinov2_small"`, in `list_backbones()`.

    Args:
        handle: str. The name `build_classifier()` takes, with its prefix.
        source: str. Its source, one of `SOURCES`.
        description: str. One line. Defaults to `""`.

    Returns:
        The handle.

    Example:

    >>> import tftransfer
    >>> from tftransfer.backbones import register_backbone_handle
    >>> register_backbone_handle("kerashub:dinov2_small", source="kerashub")
    'kerashub:dinov2_small'
    >>> "kerashub:dinov2_small" in tftransfer.list_backbones(source="kerashub")
    True
    """
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}; received {source!r}.")
    if not isinstance(handle, str) or not handle.startswith(source + ":"):
        raise ValueError(f"handle: expected a string starting with {source + ':'!r}; received "
                         f"{handle!r}.")
    _HANDLES[handle] = (source, description)
    return handle


def parse_backbone_name(name):
    """Splits `"source:rest"` into `(source, rest)`; no prefix means `keras`.

    Raises:
        ValueError: for a prefix that is not a known source.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"backbone: expected a non-empty name; received {name!r}.")
    match = re.match(r"^([A-Za-z][A-Za-z0-9_-]*):(?!//)(.*)$", name.strip())
    if match is None:
        return "keras", name.strip()
    source, rest = match.group(1).lower(), match.group(2)
    if source in ("hub", "tfhub", "kaggle"):
        return "tfhub", rest
    if source not in SOURCES:
        raise ValueError(
            f"backbone: unknown source prefix {match.group(1)!r} in {name!r}. "
            f"Valid prefixes: {', '.join(s + ':' for s in SOURCES)} "
            "(no prefix means a Keras Applications name)."
        )
    return source, rest


def get_backbone_spec(name):
    """Returns the `BackboneSpec` registered under `name` (any case).

    Raises:
        ValueError: when no backbone has that name; the message lists close
            matches.
    """
    source, rest = parse_backbone_name(name)
    if source != "keras":
        raise ValueError(
            f"backbone: {name!r} is a {source} handle, not a registry name."
        )
    key = normalize_name(rest)
    if key in _REGISTRY:
        return _REGISTRY[key]
    names = {spec.key: spec.name for spec in _REGISTRY.values()}
    close = difflib.get_close_matches(key, list(names), n=5, cutoff=0.6)
    hint = (
        f" Did you mean: {', '.join(names[k] for k in close)}?"
        if close
        else ""
    )
    raise ValueError(
        f"backbone: unknown backbone {rest!r}.{hint} "
        "`tftransfer.list_backbones()` lists every name; a keras.Model or a Keras "
        "layer also works, and so does 'tfhub:<handle>'."
    )


def find_spec_for_model_name(model_name) -> Optional[BackboneSpec]:
    """The spec whose name is the longest prefix of a backbone model's name.

    `"mobilenetv2_1.00_224"` (Keras' own name for a MobileNetV2) finds
    MobileNetV2, `"resnet50v2"` finds ResNet50V2 rather than ResNet50.
    """
    key = normalize_name(model_name)
    best = None
    for spec in _REGISTRY.values():
        if key.startswith(spec.key) and (best is None or len(spec.key) > len(best.key)):
            best = spec
    return best


def list_backbones(source=None):
    """Lists the names of the registered backbones.

    Args:
        source: str or None. Only backbones from this source (`"keras"`,
            `"kerashub"` for well-known KerasHub image presets, or a source a
            plugin registered). Defaults to all.

    Returns:
        A list of names, each accepted by `build_classifier()`: the registry's
        names sorted, then source-prefixed handles (`"kerashub:<preset>"`).

    Example:

    >>> import tftransfer
    >>> "ResNet50" in tftransfer.list_backbones()
    True
    """
    if source is not None and not isinstance(source, str):
        raise TypeError(f"source: expected a string or None; received {type(source).__name__}.")
    sources = sorted({spec.source for spec in _REGISTRY.values()}
                     | {entry[0] for entry in _HANDLES.values()})
    if source is not None and source not in sources:
        raise ValueError(f"source: expected None or one of {sources}; received {source!r}.")
    names = [spec.name for spec in _REGISTRY.values() if source is None or spec.source == source]
    handles = [handle for handle, (handle_source, _) in _HANDLES.items()
               if source is None or handle_source == source]
    return sorted(names) + sorted(handles)


def all_specs() -> Tuple[BackboneSpec, ...]:
    return tuple(sorted(_REGISTRY.values(), key=lambda spec: spec.name))
