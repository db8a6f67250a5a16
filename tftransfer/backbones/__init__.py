"""Backbones: the registry of Keras Applications models, TF-Hub handles, KerasHub image
backbones and KerasHub text encoders."""

import dataclasses
import functools
from typing import Tuple

from tftransfer.backbones import keras_applications  # noqa: F401  (fills the registry)
from tftransfer.backbones import embedded  # noqa: F401  (registers FashionCNN)
from tftransfer.backbones import efficientnet_lite  # noqa: F401  (registers EfficientNetLite0-2)
from tftransfer.backbones.backbone import Backbone, as_backbone
from tftransfer.backbones.blocks import assign_blocks
from tftransfer.backbones.factory import ResolvedBackbone, create_backbone, normalize_image_size
from tftransfer.backbones.kerashub import TEXT_CHECKPOINTS, TextCheckpoint, text_checkpoint_path
from tftransfer.backbones.kerashub_vision import (  # registers the KerasHub image presets
    IMAGE_FAMILIES,
    KerasHubImageBackbone,
    KerasHubImagePreprocessing,
    TokenPooling,
)
from tftransfer.backbones.text_layers import TextBackbone, TextPooling, TextPreprocessing
from tftransfer.backbones.tf_hub import (
    HubBackbone,
    hub_cache_dir,
    is_trusted_hub_handle,
    resolve_handle,
    trust_hub_handles,
)
from tftransfer.backbones.registry import (
    BackboneSpec,
    all_specs,
    find_spec_for_model_name,
    get_backbone_spec,
    list_backbones,
    parse_backbone_name,
    register_backbone,
    register_backbone_handle,
)


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """What `backbone_info()` reports about a registered backbone."""

    name: str
    family: str
    source: str
    preprocessing: str
    default_size: int
    min_size: int
    feature_dim: int
    blocks: Tuple[str, ...]
    num_layers: int
    description: str

    @property
    def num_blocks(self):
        return len(self.blocks)


def backbone_info(name):
    """Describes a registered backbone, its blocks included.

    The blocks are read off the architecture itself (built once with random
    weights at its smallest input size, then cached), bottom to top; `"stem"`
    is the part before the first block. `unfreeze(model, blocks=k)` makes the
    last `k` of them trainable.

    Args:
        name: str. A name from `list_backbones()` (any case).

    Returns:
        A `BackboneInfo`.

    Example:

    >>> import tftransfer
    >>> info = tftransfer.backbone_info("ResNet50")
    >>> info.preprocessing, info.feature_dim, info.blocks[-2:]
    ('caffe', 2048, ('conv5_block2', 'conv5_block3'))
    """
    spec = get_backbone_spec(name)
    return _backbone_info(spec.name)


@functools.lru_cache(maxsize=None)
def _backbone_info(name):
    spec = get_backbone_spec(name)
    model = spec.constructor(input_shape=(spec.min_size, spec.min_size, 3), weights=None)
    names = [layer.name for layer in model.layers]
    blocks, _ = assign_blocks(names, spec.block_pattern, spec.block_boundary)
    del model
    return BackboneInfo(
        name=spec.name,
        family=spec.family,
        source=spec.source,
        preprocessing=spec.preprocessing,
        default_size=spec.default_size,
        min_size=spec.min_size,
        feature_dim=spec.feature_dim,
        blocks=tuple(blocks),
        num_layers=len(names),
        description=spec.description,
    )


__all__ = [
    "Backbone",
    "BackboneInfo",
    "BackboneSpec",
    "HubBackbone",
    "IMAGE_FAMILIES",
    "KerasHubImageBackbone",
    "KerasHubImagePreprocessing",
    "ResolvedBackbone",
    "TEXT_CHECKPOINTS",
    "TextBackbone",
    "TextCheckpoint",
    "TextPooling",
    "TextPreprocessing",
    "TokenPooling",
    "all_specs",
    "as_backbone",
    "assign_blocks",
    "backbone_info",
    "create_backbone",
    "find_spec_for_model_name",
    "get_backbone_spec",
    "hub_cache_dir",
    "is_trusted_hub_handle",
    "list_backbones",
    "normalize_image_size",
    "parse_backbone_name",
    "register_backbone",
    "register_backbone_handle",
    "resolve_handle",
    "text_checkpoint_path",
    "trust_hub_handles",
]
