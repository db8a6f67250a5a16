"""Sharded TFRecord files: write a `DatasetBundle` once, read it at scale.

`write_tfrecords()` stores every split of a bundle as shards of
`tf.train.Example` records (encoded image, label(s), height, width) beside a
`metadata.json` that holds what a bundle knows (class names, counts, image
size, task, shards). `from_tfrecords()` reads them back as a `DatasetBundle`
that streams from disk: shard files are shuffled and read in parallel, so the
data never has to fit in memory, and under `MultiWorkerMirroredStrategy` each
worker reads its own files (`tf.data.experimental.AutoShardPolicy.FILE`).

Layout of a folder (5-digit indices, as TFDS names its shards):

    folder/metadata.json
    folder/train-00000-of-00004.tfrecord ... train-00003-of-00004.tfrecord
    folder/validation-00000-of-00001.tfrecord
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from tftransfer import files
from tftransfer.data.augmentation import augmentation_layer
from tftransfer.data.bundle import SPLITS, DatasetBundle, check_positive_int
from tftransfer.data.pipeline import AUTOTUNE, finish, fingerprint

FORMAT_VERSION = 1
METADATA = "metadata.json"
IMAGE_FORMATS = ("jpeg", "png")
# The TFRecord guide's advice: shards of 100-200 MB, enough to read in parallel.
SHARD_BYTES = 128 * 2**20
# Shard files read at once by the training split's interleave.
CYCLE_LENGTH = 4
# The training shuffle buffer holds decoded uint8 images: at most this many,
# and at most SHUFFLE_BYTES of them, but never fewer than MIN_SHUFFLE.
SHUFFLE_EXAMPLES = 10_000
SHUFFLE_BYTES = 2 * 2**30
MIN_SHUFFLE = 1_000
_METADATA_KEYS = ("format_version", "task", "class_names", "image_size", "image_format", "counts",
                  "class_weights", "splits")
_FIX = "Write the folder again with tftransfer.data.write_tfrecords(bundle, folder)."


def shard_name(split, index, count):
    """`<split>-<index>-of-<count>.tfrecord`, both numbers padded to 5 digits."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


# --- writing ---------------------------------------------------------------------------


def _encoded(dataset, split, image_size, num_classes, task, image_format, quality):
    """Unbatched `(encoded image, label)` pairs, encoded in parallel in the graph."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2 or not isinstance(spec[0], tf.TensorSpec):
        raise ValueError(f"bundle.{split}: expected batches of (images, labels); received "
                         f"elements {spec}.")
    shape = spec[0].shape
    if shape.rank != 4 or not shape[1:].is_compatible_with([*image_size, 3]):
        raise ValueError(f"bundle.{split}: expected images [batch, {image_size[0]}, "
                         f"{image_size[1]}, 3] (bundle.image_size); received {shape}.")

    def encode(image, label):
        image = tf.ensure_shape(tf.cast(image, tf.float32), [*image_size, 3])
        tf.debugging.assert_greater_equal(tf.reduce_min(image), -0.5,
                                          message="pixels below 0 or not finite")
        tf.debugging.assert_less_equal(tf.reduce_max(image), 255.5,
                                       message="pixels above 255 or not finite")
        pixels = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        if image_format == "png":
            contents = tf.io.encode_png(pixels)
        else:
            contents = tf.io.encode_jpeg(pixels, quality=quality)
        if task == "multilabel":
            label = tf.reshape(tf.cast(label, tf.float32), [num_classes])
        else:
            label = tf.reshape(tf.cast(label, tf.int64), [])
        return contents, label

    return dataset.unbatch().map(encode, num_parallel_calls=AUTOTUNE)


def _example(contents, label, image_size, image_format, task):
    """One serialized `tf.train.Example`, with the field names TFDS and the TF models use."""
    feature = tf.train.Feature
    fields = {
        "image/encoded": feature(bytes_list=tf.train.BytesList(value=[contents])),
        "image/format": feature(bytes_list=tf.train.BytesList(value=[image_format.encode()])),
        "image/height": feature(int64_list=tf.train.Int64List(value=[image_size[0]])),
        "image/width": feature(int64_list=tf.train.Int64List(value=[image_size[1]])),
    }
    if task == "multilabel":
        fields["image/class/multi_hot"] = feature(
            float_list=tf.train.FloatList(value=np.asarray(label).tolist()))
    else:
        fields["image/class/label"] = feature(int64_list=tf.train.Int64List(value=[int(label)]))
    return tf.train.Example(features=tf.train.Features(feature=fields)).SerializeToString()


def _write_split(records, folder, split, shards):
    """Writes serialized records; returns `[{"file", "examples", "bytes"}]`, one per shard.

    A shard count spreads records round-robin (shards differ by one record at
    most); None starts a new shard whenever the current one reaches
    `SHARD_BYTES`. Shards are renamed `-of-<count>` once the count is known.
    """
    partial = []
    writers = []
    try:
        def open_shard():
            partial.append({"path": os.path.join(folder, f"{split}-{len(partial):05d}.partial"),
                            "examples": 0, "bytes": 0})
            writers.append(tf.io.TFRecordWriter(partial[-1]["path"]))

        for _ in range(shards or 1):
            open_shard()
        for index, record in enumerate(records):
            if shards:
                target = index % shards
            else:
                target = len(partial) - 1
                if partial[target]["bytes"] >= SHARD_BYTES:
                    writers[target].close()
                    open_shard()
                    target += 1
            writers[target].write(record)
            partial[target]["examples"] += 1
            partial[target]["bytes"] += len(record)
    finally:
        for writer in writers:
            writer.close()
    written = []
    for index, shard in enumerate(partial):
        name = shard_name(split, index, len(partial))
        os.replace(shard["path"], os.path.join(folder, name))
        written.append({"file": name, "examples": shard["examples"],
                        "bytes": os.path.getsize(os.path.join(folder, name))})
    return written


def _reason(error):
    """The readable part of a tf.data error: an assertion's message, or the first line."""
    message = error.message.strip()
    if "assertion failed: [" in message:
        return message.split("assertion failed: [", 1)[1].split("]", 1)[0]
    return message.splitlines()[0].split("}} ")[-1][:200]


def _remove_leftovers(target):
    """Removes temporary siblings of `target` that killed writers left behind."""
    parent, base = os.path.split(target)
    for name in os.listdir(parent):
        if name.startswith(base + files.TEMPORARY_TAG):
            pid = name[len(base + files.TEMPORARY_TAG):].split("-")[0]
            if not pid.isdigit() or int(pid) == os.getpid() or not files._alive(int(pid)):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def write_tfrecords(bundle, folder, *, shards=None, image_format="jpeg", quality=95,
                    overwrite=False):
    """Writes every split of an image `DatasetBundle` as sharded TFRecord files.

    Each example is a `tf.train.Example` with `image/encoded` (JPEG or PNG
    bytes of the bundle's already decoded and resized images, rounded to
    uint8), `image/format`, `image/height`, `image/width` and either
    `image/class/label` (int) or `image/class/multi_hot` (floats, one per
    class). `folder/metadata.json` records class names, counts, class
    weights, image size, task and, per split, its shards and examples.

    The folder is written under a temporary sibling name and renamed into
    place at the end, so a write that fails or is killed never leaves a
    folder that `from_tfrecords()` reads (an old folder replaced with
    `overwrite=True` stays whole until the rename). Writing reads each split
    once: build a large bundle with `cache=None`, or its memory cache fills.

    Args:
        bundle: `DatasetBundle` of images, not augmented in its pipeline
            (that would store one random augmentation: pass `augmentation`
            to `from_tfrecords()` instead).
        folder: str. The folder to create.
        shards: int or None. Shards per split, filled round-robin so their
            sizes differ by one example at most. For
            `MultiWorkerMirroredStrategy`, pass a multiple of the number of
            workers, so each worker reads as many examples (a split with
            fewer examples than shards gets empty ones). None starts a new
            shard each time one reaches 128 MiB of records (the TFRecord
            guide's 100-200 MB), so a split of `b` bytes gets
            `max(1, ceil(b / 128 MiB))` shards. Defaults to None.
        image_format: str. `"jpeg"` (small, lossy) or `"png"` (lossless).
            Defaults to `"jpeg"`.
        quality: int. JPEG quality, 1 to 100. Defaults to `95`.
        overwrite: bool. Replace `folder` when it exists (only a folder that
            `write_tfrecords()` wrote, or an empty one). Defaults to `False`.

    Returns:
        The dict written to `metadata.json`.

    Example:

    >>> import os, tempfile, numpy as np, tftransfer
    >>> from tftransfer.data.tfrecords import write_tfrecords
    >>> data = tftransfer.data.from_arrays(
    ...     np.zeros((8, 8, 8), "uint8"), np.arange(8) % 2, validation_split=0.25)
    >>> folder = os.path.join(tempfile.mkdtemp(), "records")
    >>> metadata = write_tfrecords(data, folder, shards=2)
    >>> sorted(os.listdir(folder))[:3]
    ['metadata.json', 'train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord']
    >>> metadata["splits"]["train"]["examples"], metadata["splits"]["validation"]["examples"]
    (6, 2)
    """
    if not isinstance(bundle, DatasetBundle):
        raise TypeError(f"bundle: expected a tftransfer.data.DatasetBundle; received "
                        f"{type(bundle).__name__}.")
    if bundle.image_size is None:
        raise ValueError("bundle: this bundle holds no images (image_size is None, as for "
                         "text); write_tfrecords() stores image bundles only.")
    if bundle.augmented:
        raise ValueError("bundle: its training split is augmented in the pipeline, so writing "
                         "it would store one random augmentation of each image. Build the "
                         "bundle with augmentation=None and pass augmentation= to "
                         "from_tfrecords().")
    if bundle.train is None:
        raise ValueError("bundle: it has no training split to write.")
    if shards is not None:
        shards = check_positive_int(shards, "shards")
    image_format = {"jpg": "jpeg"}.get(str(image_format).lower(), str(image_format).lower())
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format: expected one of {list(IMAGE_FORMATS)}; received "
                         f"{image_format!r}.")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality: expected an int from 1 to 100; received {quality!r}.")
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder: expected a folder path; received {type(folder).__name__}.")
    target = os.path.abspath(os.fspath(folder)).rstrip(os.sep)
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise ValueError(f"folder: {target!r} is a file; pass a folder path to create.")
        if not overwrite:
            raise ValueError(f"folder: {target!r} exists already. Pass overwrite=True to "
                             "replace it, or choose another folder.")
        if os.listdir(target) and not os.path.isfile(os.path.join(target, METADATA)):
            raise ValueError(f"folder: {target!r} holds files that write_tfrecords() did not "
                             "write (no metadata.json); overwrite=True replaces only its own "
                             "folders. Choose another folder.")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    _remove_leftovers(target)

    from tftransfer import __version__  # here: tftransfer imports this module before it is set

    image_size = tuple(int(value) for value in bundle.image_size)
    metadata = {
        "format_version": FORMAT_VERSION,
        "written_by": f"tftransfer {__version__}",
        "task": bundle.task,
        "class_names": [str(name) for name in bundle.class_names],
        "image_size": list(image_size),
        "image_format": image_format,
        "quality": quality if image_format == "jpeg" else None,
        "counts": {split: {str(name): int(count) for name, count in per_class.items()}
                   for split, per_class in bundle.counts.items()},
        "class_weights": {str(label): float(w) for label, w in bundle.class_weights.items()},
        "splits": {},
    }
    temporary = files.temporary_path(target)
    try:
        os.makedirs(temporary)
        for split in SPLITS:
            dataset = getattr(bundle, split)
            if dataset is None:
                continue
            encoded = _encoded(dataset, split, image_size, bundle.num_classes, bundle.task,
                               image_format, quality)
            records = (_example(contents, label, image_size, image_format, bundle.task)
                       for contents, label in encoded.as_numpy_iterator())
            try:
                written = _write_split(records, temporary, split, shards)
            except tf.errors.InvalidArgumentError as error:
                raise ValueError(
                    f"bundle.{split}: an image could not be stored ({_reason(error)}). "
                    "write_tfrecords() expects float images in [0, 255] of bundle.image_size."
                ) from None
            examples = sum(shard["examples"] for shard in written)
            if split == "train" and examples == 0:
                raise ValueError("bundle.train: the training split yields no examples.")
            metadata["splits"][split] = {"examples": examples, "shards": written}
        # metadata.json last: a folder without it is never read.
        with open(os.path.join(temporary, METADATA), "w") as handle:
            json.dump(metadata, handle, indent=1)
        files.move_folder_into_place(temporary, target, files.temporary_path(target))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return metadata


# --- reading ---------------------------------------------------------------------------


def _read_metadata(folder):
    path = os.path.join(folder, METADATA)
    if not os.path.isfile(path):
        raise ValueError(f"folder: {folder!r} has no {METADATA}: it was not written by "
                         f"write_tfrecords(), or its write did not finish. {_FIX}")
    try:
        with open(path) as handle:
            metadata = json.load(handle)
        missing = [key for key in _METADATA_KEYS if key not in metadata]
        for name, split in ({} if missing else metadata["splits"]).items():
            missing += [f"{name}.{key}" for key in ("examples", "shards") if key not in split]
            missing += [f"{name} shard.{key}" for shard in split.get("shards", [])
                        for key in ("file", "bytes") if key not in shard]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        missing = [f"unreadable: {type(error).__name__}: {error}"]
    if missing:
        raise ValueError(f"folder: {path} is not valid tftransfer TFRecord metadata "
                         f"(missing or wrong: {', '.join(missing[:5])}). {_FIX}")
    version, splits = metadata["format_version"], metadata["splits"]
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"folder: {folder!r} was written in format {version} by "
                         f"{metadata.get('written_by')}; this tftransfer reads format "
                         f"{FORMAT_VERSION} and older. Upgrade tftransfer.")
    if not splits.get("train") or not splits["train"]["examples"]:
        raise ValueError(f"folder: {folder!r} holds no training examples. {_FIX}")
    problems = []
    for split in splits.values():
        for shard in split["shards"]:
            path = os.path.join(folder, shard["file"])
            if not os.path.isfile(path):
                problems.append(f"{shard['file']} is missing")
            elif os.path.getsize(path) != shard["bytes"]:
                problems.append(f"{shard['file']} has {os.path.getsize(path)} bytes, not "
                                f"{shard['bytes']} (truncated or changed)")
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ValueError(f"folder: {folder!r} does not match its {METADATA}: "
                         f"{'; '.join(problems[:3])}{more}. {_FIX}")
    return metadata


def _parser(metadata):
    height, width = metadata["image_size"]
    multilabel = metadata["task"] == "multilabel"
    label_key = "image/class/multi_hot" if multilabel else "image/class/label"
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
            label_key: (tf.io.FixedLenFeature([len(metadata["class_names"])], tf.float32)
                        if multilabel else tf.io.FixedLenFeature([], tf.int64))}
    decode = tf.io.decode_png if metadata["image_format"] == "png" else tf.io.decode_jpeg

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        image = decode(example["image/encoded"], channels=3)
        return tf.ensure_shape(image, [height, width, 3]), example[label_key]

    return parse


def _split_dataset(folder, metadata, split, *, training, batch_size, seed, deterministic, cache,
                   augmentation):
    shards = metadata["splits"][split]["shards"]
    examples = metadata["splits"][split]["examples"]
    paths = [os.path.join(folder, shard["file"]) for shard in shards]
    if training:
        # A dataset of file names: under MultiWorkerMirroredStrategy, FILE
        # auto-sharding gives each worker its own shards before they are shuffled.
        records = tf.data.Dataset.from_tensor_slices(paths).shuffle(
            len(paths), seed=seed, reshuffle_each_iteration=True).interleave(
            tf.data.TFRecordDataset, cycle_length=min(CYCLE_LENGTH, len(paths)),
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    else:
        records = tf.data.TFRecordDataset(paths, num_parallel_reads=min(CYCLE_LENGTH,
                                                                        len(paths)))
    dataset = records.map(_parser(metadata), num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic if training else None)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(examples))
    height, width = metadata["image_size"]
    buffer = min(examples, SHUFFLE_EXAMPLES,
                 max(MIN_SHUFFLE, SHUFFLE_BYTES // (height * width * 3)))
    key = fingerprint(folder, split, [(shard["file"], shard["bytes"]) for shard in shards])
    dataset = finish(dataset, training=training, batch_size=batch_size, seed=seed, cache=cache,
                     key=key, size=examples, shuffle_buffer=buffer,
                     augmentation=augmentation if training else None,
                     postprocess=lambda images: tf.cast(images, tf.float32))
    if not training:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.FILE)
    if deterministic is not None:
        options.deterministic = deterministic
    return dataset.with_options(options)


def from_tfrecords(folder, *, batch_size=32, seed=1337, deterministic=None, cache=None,
                   augmentation=None):
    """Reads a folder written by `write_tfrecords()` back as a `DatasetBundle`.

    The training split streams from disk: its shard files are shuffled
    (seeded, again each epoch), read `4` at a time by a parallel
    `interleave`, decoded in parallel, shuffled in a buffer of decoded
    examples, batched, cast to float32 and prefetched. The buffer holds
    `min(examples, 10_000)` examples, fewer when that would pass 2 GiB of
    decoded images (but at least 1,000): enough to mix examples across the
    shards being read without holding a large set in memory. Validation and
    test splits are read in a fixed order, unshuffled.

    The training dataset sets `auto_shard_policy` to
    `tf.data.experimental.AutoShardPolicy.FILE`: under
    `MultiWorkerMirroredStrategy` each worker reads its own shard files
    instead of reading every file and keeping `1 / workers` of the examples.
    That needs at least as many shards as workers (`write_tfrecords(...,
    shards=...)`); a multiple of the number of workers gives each the same
    number of examples.

    Args:
        folder: str. A folder written by `write_tfrecords()`.
        batch_size: int. Defaults to `32`.
        seed: int or None. Seeds the shard and example shuffles: with
            `deterministic=True`, the same seed gives the same order.
            Defaults to `1337`.
        deterministic: bool or None. Passed to the training split's
            `interleave` and `map` and set as its `tf.data.Options`:
            `False` lets parallel reads and decoding hand out examples as
            they finish (faster, order not reproducible), `True` keeps
            their order. Defaults to None (tf.data's default, which keeps
            the order).
        cache: `"memory"`, None or a file path / folder, as in
            `from_directory()`: cache the decoded images after the first
            epoch. Defaults to None (stream from disk every epoch).
        augmentation: None, a preset (`"light"`, `"medium"`, `"heavy"`) or
            Keras layers, applied to training batches. Defaults to None.

    Returns:
        A `DatasetBundle` with the written class names, counts, class
        weights, image size and task, whose datasets yield float32 images in
        [0, 255] `[batch, height, width, 3]` and int labels (float multi-hot
        rows for multi-label data).

    Example:

    >>> import os, tempfile, numpy as np, tftransfer
    >>> from tftransfer.data.tfrecords import from_tfrecords, write_tfrecords
    >>> data = tftransfer.data.from_arrays(
    ...     np.zeros((8, 8, 8), "uint8"), np.arange(8) % 2, validation_split=0.25)
    >>> folder = os.path.join(tempfile.mkdtemp(), "records")
    >>> _ = write_tfrecords(data, folder, shards=2)
    >>> loaded = from_tfrecords(folder, batch_size=4)
    >>> loaded.counts["train"], loaded.image_size
    ({'0': 3, '1': 3}, (8, 8))
    >>> images, labels = next(iter(loaded.train))
    >>> images.shape, images.dtype.name
    (TensorShape([4, 8, 8, 3]), 'float32')
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder: expected a folder path; received {type(folder).__name__}.")
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise ValueError(f"folder: {folder!r} does not exist or is not a folder. Write one "
                         "with tftransfer.data.write_tfrecords(bundle, folder).")
    batch_size = check_positive_int(batch_size, "batch_size")
    if deterministic is not None and not isinstance(deterministic, bool):
        raise TypeError(f"deterministic: expected True, False or None; received "
                        f"{deterministic!r}.")
    if isinstance(cache, str) and cache == "auto":
        raise ValueError("cache: from_tfrecords() does not choose a cache; pass None (stream "
                         "from disk), 'memory', or a file path / folder for a disk cache.")
    augmentation = augmentation_layer(augmentation) if augmentation is not None else None
    metadata = _read_metadata(folder)
    datasets = {
        split: _split_dataset(folder, metadata, split, training=split == "train",
                              batch_size=batch_size, seed=seed, deterministic=deterministic,
                              cache=cache, augmentation=augmentation)
        if metadata["splits"].get(split, {}).get("examples") else None
        for split in SPLITS
    }
    return DatasetBundle(
        train=datasets["train"], validation=datasets["validation"], test=datasets["test"],
        class_names=list(metadata["class_names"]),
        counts=metadata["counts"],
        class_weights={int(label): w for label, w in metadata["class_weights"].items()},
        image_size=tuple(metadata["image_size"]), task=metadata["task"],
        augmented=augmentation is not None,
    )
