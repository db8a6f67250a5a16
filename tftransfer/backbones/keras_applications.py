"""Every model of `keras.applications` (Keras 3.15) as a registry entry.

Each entry is data: the constructor's name in `keras.applications`, the
preprocessing its ImageNet weights expect, its default and smallest input
size, its feature dimension and the pattern of its block names. Keras 3.15
ships no RegNet or ResNet-RS (Keras 2 did); they are absent here for that
reason.
"""

import functools

import keras

from tftransfer.backbones.registry import BackboneSpec, register_backbone

_RESNET_BLOCKS = r"^(conv\d_block\d+)_"
_EFFICIENTNET_BLOCKS = r"^(block\d+[^_]+)_"
_CONVNEXT_BLOCKS = r"_(stage_\d+_block_\d+|downsampling_block_\d+)"
_NASNET_BLOCKS = r"^(?:normal|reduction|adjust|separable_conv)_.*?_((?:stem|reduce)_\d+|\d+)$"


def _application(class_name, *, input_shape, weights, name=None):
    constructor = getattr(keras.applications, class_name)
    # Keras' own model names ("resnet50", "convnext_tiny", "mobilenetv2_1.00_224")
    # are kept unless a name is asked for: users recognize them in summaries.
    kwargs = {} if name is None else {"name": name}
    return constructor(include_top=False, weights=weights, input_shape=input_shape, **kwargs)


def _entry(class_name, family, preprocessing, default_size, feature_dim, block_pattern, *,
           min_size=32, block_boundary="start", description=""):
    return BackboneSpec(
        name=class_name,
        family=family,
        constructor=functools.partial(_application, class_name),
        preprocessing=preprocessing,
        default_size=default_size,
        min_size=min_size,
        feature_dim=feature_dim,
        block_pattern=block_pattern,
        block_boundary=block_boundary,
        source="keras",
        description=description or f"keras.applications.{class_name}",
    )


_ENTRIES = [
    # ConvNeXt: preprocessing inside the model (include_preprocessing=True).
    _entry("ConvNeXtTiny", "convnext", "none", 224, 768, _CONVNEXT_BLOCKS),
    _entry("ConvNeXtSmall", "convnext", "none", 224, 768, _CONVNEXT_BLOCKS),
    _entry("ConvNeXtBase", "convnext", "none", 224, 1024, _CONVNEXT_BLOCKS),
    _entry("ConvNeXtLarge", "convnext", "none", 224, 1536, _CONVNEXT_BLOCKS),
    _entry("ConvNeXtXLarge", "convnext", "none", 224, 2048, _CONVNEXT_BLOCKS),
    # DenseNet: dense units and the transitions between dense blocks.
    _entry("DenseNet121", "densenet", "torch", 224, 1024, r"^(conv\d_block\d+|pool[2-4])_"),
    _entry("DenseNet169", "densenet", "torch", 224, 1664, r"^(conv\d_block\d+|pool[2-4])_"),
    _entry("DenseNet201", "densenet", "torch", 224, 1920, r"^(conv\d_block\d+|pool[2-4])_"),
    # EfficientNet: Rescaling and Normalization inside the model.
    _entry("EfficientNetB0", "efficientnet", "none", 224, 1280, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetB1", "efficientnet", "none", 240, 1280, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetB2", "efficientnet", "none", 260, 1408, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetB3", "efficientnet", "none", 300, 1536, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetB4", "efficientnet", "none", 380, 1792, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetB5", "efficientnet", "none", 456, 2048, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetB6", "efficientnet", "none", 528, 2304, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetB7", "efficientnet", "none", 600, 2560, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetV2B0", "efficientnet_v2", "none", 224, 1280, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetV2B1", "efficientnet_v2", "none", 240, 1280, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetV2B2", "efficientnet_v2", "none", 260, 1408, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetV2B3", "efficientnet_v2", "none", 300, 1536, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetV2S", "efficientnet_v2", "none", 384, 1280, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetV2M", "efficientnet_v2", "none", 480, 1280, _EFFICIENTNET_BLOCKS),
    _entry("EfficientNetV2L", "efficientnet_v2", "none", 480, 1280, _EFFICIENTNET_BLOCKS),
    # Inception: each module ends in a layer named after it (mixed0 ... mixed10).
    _entry("InceptionV3", "inception_v3", "tf", 299, 2048, r"^(mixed\d+)$",
           min_size=75, block_boundary="end"),
    _entry("InceptionResNetV2", "inception_resnet_v2", "tf", 299, 1536,
           r"^(mixed_5b|mixed_6a|mixed_7a|block(?:35|17|8)_\d+)(?:_ac)?$|^(conv_7b)_ac$",
           min_size=75, block_boundary="end"),
    # MobileNet family.
    _entry("MobileNet", "mobilenet", "tf", 224, 1024, r"^(conv)_(?:dw|pw)(_\d+)"),
    _entry("MobileNetV2", "mobilenet_v2", "tf", 224, 1280, r"^(expanded_conv|block_\d+)_"),
    _entry("MobileNetV3Small", "mobilenet_v3", "none", 224, 576,
           r"^(expanded_conv(?:_\d+)?)_(?:expand|depthwise|squeeze|project|add)"),
    _entry("MobileNetV3Large", "mobilenet_v3", "none", 224, 960,
           r"^(expanded_conv(?:_\d+)?)_(?:expand|depthwise|squeeze|project|add)"),
    # NASNet: cells named by their trailing index (stem_1, reduce_4, 7, ...).
    _entry("NASNetMobile", "nasnet", "tf", 224, 1056, _NASNET_BLOCKS),
    _entry("NASNetLarge", "nasnet", "tf", 331, 4032, _NASNET_BLOCKS),
    # ResNet v1 (caffe preprocessing) and v2 (tf preprocessing).
    _entry("ResNet50", "resnet", "caffe", 224, 2048, _RESNET_BLOCKS),
    _entry("ResNet101", "resnet", "caffe", 224, 2048, _RESNET_BLOCKS),
    _entry("ResNet152", "resnet", "caffe", 224, 2048, _RESNET_BLOCKS),
    _entry("ResNet50V2", "resnet_v2", "tf", 224, 2048, _RESNET_BLOCKS),
    _entry("ResNet101V2", "resnet_v2", "tf", 224, 2048, _RESNET_BLOCKS),
    _entry("ResNet152V2", "resnet_v2", "tf", 224, 2048, _RESNET_BLOCKS),
    # VGG and Xception.
    _entry("VGG16", "vgg16", "caffe", 224, 512, r"^(block\d+)_"),
    _entry("VGG19", "vgg19", "caffe", 224, 512, r"^(block\d+)_"),
    _entry("Xception", "xception", "tf", 299, 2048, r"^(block\d+)_", min_size=71),
]

for _spec in _ENTRIES:
    register_backbone(_spec, override=True)
