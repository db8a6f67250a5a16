"""Data: tf.data pipelines and augmentation."""

from tftransfer.data.augmentation import AUGMENTATION_PRESETS, augmentation_layer

__all__ = ["AUGMENTATION_PRESETS", "augmentation_layer"]
