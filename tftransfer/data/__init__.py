"""Data: tf.data pipelines from folders, CSV files, arrays, TFDS and text."""

from tftransfer.data.augmentation import AUGMENTATION_PRESETS, augmentation_layer
from tftransfer.data.bundle import DatasetBundle
from tftransfer.data.images import (
    decode_image,
    find_unreadable,
    from_arrays,
    from_csv,
    from_directory,
)
from tftransfer.data.text import from_text_csv, from_text_directory, from_texts, read_fortunes
from tftransfer.data.tfds import from_tfds
from tftransfer.data.service import (
    DataService,
    distribute_bundle,
    start_data_service,
    start_data_workers,
)
from tftransfer.data.sharding import shard_policy_for, with_auto_shard
from tftransfer.data.tfrecords import from_tfrecords, write_tfrecords

__all__ = [
    "AUGMENTATION_PRESETS",
    "DataService",
    "DatasetBundle",
    "augmentation_layer",
    "decode_image",
    "distribute_bundle",
    "find_unreadable",
    "from_arrays",
    "from_csv",
    "from_directory",
    "from_text_csv",
    "from_text_directory",
    "from_texts",
    "from_tfds",
    "from_tfrecords",
    "read_fortunes",
    "shard_policy_for",
    "start_data_service",
    "start_data_workers",
    "with_auto_shard",
    "write_tfrecords",
]
