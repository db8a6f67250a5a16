"""Image datasets: folders, CSV files of paths, and arrays.

Decoding happens in the graph (`tf.io.decode_image`: JPEG, PNG, GIF's first
frame, BMP); grayscale and RGBA become RGB. Corrupt, truncated, zero-byte and
non-image files are skipped with one warning that counts them and names the
first few, so a bad file never stops an epoch halfway. Small sets (up to
`CHECK_NOW_MAX_FILES` files not checked before) are checked before the
bundle is returned; larger ones start at once: the pipeline drops what
fails to decode and flags what it reads, so the bad files are known after
the first pass (`tftransfer.data.file_checks`). A file's result is
remembered, so a second run of the same folder decodes nothing up front.

Memory stays bounded: `cache="auto"` keeps the decoded images in memory only
when they fit a quarter of the available memory (`pipeline.choose_cache`;
the choice and why are in `bundle.cache` and `bundle.cache_reason`), and
otherwise decodes from the files each epoch, shuffling the file paths (all of
them, cheaply) before decoding instead of a buffer of decoded images.
"""

import csv
import os
import warnings

import numpy as np
import tensorflow as tf

from tftransfer.backbones.factory import normalize_image_size
from tftransfer.data.augmentation import augmentation_layer
from tftransfer.data.bundle import (
    DatasetBundle,
    check_positive_int,
    class_weights,
    count_by_class,
    split_indices,
)
from tftransfer.data import file_checks
from tftransfer.data.file_checks import find_unreadable  # noqa: F401 - public here too
from tftransfer.data.pipeline import (
    AUTOTUNE,
    DISK_CACHE_SHUFFLE_BUFFER,
    by_pass,
    choose_cache,
    finish,
    fingerprint,
    memory_budget,
)

SPLIT_FOLDERS = {"train": ("train", "training"), "validation": ("validation", "val", "valid"),
                 "test": ("test", "testing")}
# validate="auto": up to this many files not checked before are checked before the
# bundle is returned (about a second or two); more, by the pipeline as it reads them.
CHECK_NOW_MAX_FILES = 2000


# --- decoding -------------------------------------------------------------------------


def resize_image(image, image_size, *, crop_to_aspect_ratio=False, pad_to_aspect_ratio=False):
    """Resizes `[h, w, 3]` to `image_size`; optionally crops or pads to keep the aspect ratio."""
    height, width = image_size
    if crop_to_aspect_ratio:
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        target = width / height
        crop_height = tf.minimum(shape[0], tf.round(shape[1] / target))
        crop_width = tf.minimum(shape[1], tf.round(shape[0] * target))
        offset_height = tf.cast((shape[0] - crop_height) // 2, tf.int32)
        offset_width = tf.cast((shape[1] - crop_width) // 2, tf.int32)
        image = tf.image.crop_to_bounding_box(image, offset_height, offset_width,
                                              tf.cast(crop_height, tf.int32),
                                              tf.cast(crop_width, tf.int32))
    if pad_to_aspect_ratio:
        return tf.image.resize_with_pad(image, height, width)
    return tf.image.resize(image, (height, width))


def to_rgb(image):
    """Grayscale `[h, w]` / `[h, w, 1]` to RGB; RGBA drops alpha."""
    if image.shape.rank == 2:
        image = image[..., None]
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    return image


def decode_image(contents, image_size, *, crop_to_aspect_ratio=False, pad_to_aspect_ratio=False):
    """Decodes encoded image bytes to a resized uint8 RGB image, in the graph.

    Args:
        contents: scalar string tensor. JPEG, PNG, GIF (first frame) or BMP.
        image_size: `(height, width)`.
        crop_to_aspect_ratio: bool. Crop the center to the target aspect
            ratio before resizing. Defaults to `False`.
        pad_to_aspect_ratio: bool. Pad to the target aspect ratio instead.
            Defaults to `False`.

    Returns:
        A uint8 tensor `[height, width, 3]`.

    Example:

    >>> import tensorflow as tf, tftransfer
    >>> png = tf.io.encode_png(tf.zeros([10, 20, 1], tf.uint8))
    >>> tftransfer.data.decode_image(png, (8, 8)).shape
    TensorShape([8, 8, 3])
    """
    image = _decode_resized(contents, normalize_image_size(image_size, argument="image_size"),
                            crop_to_aspect_ratio, pad_to_aspect_ratio)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _decode_resized(contents, image_size, crop_to_aspect_ratio, pad_to_aspect_ratio):
    """Decoded and resized, float32 in [0, 255] (what the model gets)."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return resize_image(image, image_size, crop_to_aspect_ratio=crop_to_aspect_ratio,
                        pad_to_aspect_ratio=pad_to_aspect_ratio)


# --- folders ------------------------------------------------------------------------


def _visible(name):
    return not name.startswith(".") and not name.startswith("__")


def _remote(path):
    """A path with a scheme (`gs://`, `s3://`, `file://`...): read through `tf.io.gfile`."""
    return "://" in path


def _isdir(path):
    return tf.io.gfile.isdir(path) if _remote(path) else os.path.isdir(path)


def _subfolders(path, follow_links):
    if _remote(path):
        return [name.rstrip("/") for name in sorted(tf.io.gfile.listdir(path))
                if _visible(name) and tf.io.gfile.isdir(os.path.join(path, name.rstrip("/")))]
    entries = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if _visible(name) and os.path.isdir(full) and (follow_links or not os.path.islink(full)):
            entries.append(name)
    return entries


def _files_under(folder, follow_links):
    """Every visible file under `folder`, sorted, in one `os.scandir` walk
    (`tf.io.gfile.walk` for a path with a scheme)."""
    if _remote(folder):
        found = []
        for root, dirs, names in tf.io.gfile.walk(folder):
            dirs[:] = sorted(d for d in dirs if _visible(d.rstrip("/")))
            found.extend(os.path.join(root, name) for name in sorted(names) if _visible(name))
        return found
    found, stack = [], [folder]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                entries = sorted((e for e in entries if _visible(e.name)), key=lambda e: e.name)
        except OSError:
            continue
        folders = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=follow_links):
                    folders.append(entry.path)
                elif entry.is_file():
                    found.append(entry.path)
            except OSError:
                continue
        stack.extend(reversed(folders))
    return found


def _check_validate(validate):
    if not (validate is True or validate is False or (isinstance(validate, str)
                                                      and validate == "auto")):
        raise ValueError(f"validate: expected 'auto', True or False; received {validate!r}.")
    return validate


def _find_bad_files(paths, root, validate):
    """`(skipped now, paths to check in the background, remembered checks)`."""
    if validate is False or not paths:
        return [], [], None
    remembered = file_checks.RememberedChecks(root)
    skipped, unchecked = file_checks.triage(paths, remembered)
    if validate is True or len(unchecked) <= CHECK_NOW_MAX_FILES:
        skipped += file_checks.check_now(unchecked, remembered)
        unchecked = []
    return skipped, unchecked, remembered


def _decoded_bytes(size):
    return size[0] * size[1] * 3 + 64  # uint8 pixels, plus the label and tensor overhead


def _split_layout(path, follow_links):
    folders = {name.lower(): name for name in _subfolders(path, follow_links)}
    layout = {}
    for split, names in SPLIT_FOLDERS.items():
        for name in names:
            if name in folders:
                layout[split] = os.path.join(path, folders[name])
                break
    if "train" in layout and len(layout) > 1:
        return layout
    return None


def _image_dataset(paths, labels, image_size, *, training, batch_size, seed, cache,
                   augmentation, crop_to_aspect_ratio, pad_to_aspect_ratio, streaming=False,
                   check=None):
    """Paths -> (shuffled paths) -> decode -> (drop failures) -> `finish`.

    In memory, the decoded set is cached and shuffled whole (it fits the
    budget); otherwise the paths are shuffled before decoding, and a disk
    cache is mixed by a bounded buffer. `streaming`: files not checked yet
    may fail to decode; those are dropped. With a `check`
    (`file_checks.StreamingCheck`), the pipeline also flags the files it
    reads; without a cache, from the second pass on it reads only those
    that decoded, and drops nothing (decoding and batching fuse again).
    """
    if len(paths) == 0:
        return None
    in_memory = cache == "memory" or cache is True
    # The disk cache's name (hashing every path takes seconds for a million files).
    key = fingerprint(sorted(zip(paths, np.asarray(labels).tolist())), image_size,
                      crop_to_aspect_ratio, pad_to_aspect_ratio) if cache and not in_memory else ""
    shuffle_buffer = None
    if training and not in_memory:
        shuffle_buffer = 0
        if cache:
            budget, _ = memory_budget()
            shuffle_buffer = max(batch_size, min(DISK_CACHE_SHUFFLE_BUFFER,
                                                 budget // _decoded_bytes(image_size)))
    tracker = check.track(paths) if streaming and check is not None else None

    def source(indexed):
        parts = (np.asarray(paths), np.asarray(labels))
        if indexed:
            parts += (np.arange(len(paths), dtype="int64"),)
        dataset = tf.data.Dataset.from_tensor_slices(parts)
        if training and not in_memory:
            # All the paths, reshuffled each epoch, cost a few bytes each. A disk cache
            # keeps the first order it saw: shuffle once (seeded), then mix within a
            # buffer.
            dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=not cache)
        return dataset

    def load(path, label, *index):
        contents = tf.io.read_file(path)
        if not cache:
            # Decoded for this epoch only: float32 straight from the resize (uint8, a
            # quarter of the bytes, is for what a cache holds).
            image = _decode_resized(contents, image_size, crop_to_aspect_ratio,
                                    pad_to_aspect_ratio)
        else:
            image = decode_image(contents, image_size, crop_to_aspect_ratio=crop_to_aspect_ratio,
                                 pad_to_aspect_ratio=pad_to_aspect_ratio)
        return (image, label) + index

    common = dict(training=training, batch_size=batch_size, seed=seed, cache=cache, key=key,
                  size=len(paths), augmentation=augmentation, shuffle_buffer=shuffle_buffer,
                  postprocess=(lambda images: tf.cast(images, tf.float32)) if cache else None)
    dataset = source(tracker is not None).map(load, num_parallel_calls=AUTOTUNE)
    if streaming:
        dataset = dataset.ignore_errors()
    dataset = finish(dataset, tracker=tracker, **common)
    if tracker is not None and not cache:
        # After a complete pass, only the files that decoded: nothing left to drop.
        decoded = source(True).filter(lambda path, label, index: tracker.is_seen(index))
        decoded = decoded.map(lambda path, label, index: load(path, label),
                              num_parallel_calls=AUTOTUNE)
        dataset = by_pass(dataset, finish(decoded, **common), tracker.passes)
    if tracker is not None:
        dataset._tftransfer_tracker = tracker  # its variables live as long as the dataset

        def untracked():
            # For the tf.data service, whose workers cannot reach this process's variables.
            arguments = dict(training=training, batch_size=batch_size, seed=seed, cache=cache,
                             augmentation=augmentation, crop_to_aspect_ratio=crop_to_aspect_ratio,
                             pad_to_aspect_ratio=pad_to_aspect_ratio)
            if not tracker.complete:
                return _image_dataset(paths, labels, image_size, streaming=True, **arguments)
            good = tracker.seen_mask()
            return _image_dataset(np.asarray(paths)[good], np.asarray(labels)[good],
                                  image_size, **arguments)

        dataset._tftransfer_untracked = untracked
    return dataset


def _check_common(image_size, batch_size, augmentation):
    size = normalize_image_size(image_size, default=None, argument="image_size")
    batch_size = check_positive_int(batch_size, "batch_size")
    layer = augmentation_layer(augmentation) if augmentation is not None else None
    return size, batch_size, layer


def from_directory(path, image_size, *, batch_size=32, validation_split=0.2, test_split=0.0,
                   seed=1337, class_names=None, crop_to_aspect_ratio=False,
                   pad_to_aspect_ratio=False, follow_links=False, cache="auto",
                   augmentation=None, validate="auto"):
    """Builds train / validation / test datasets from a folder of class folders.

    `path/<class>/.../<image>`: one folder per class (nested folders are
    searched). A folder that already holds `train/`, `validation/` (or
    `val/`) and/or `test/`, each with class folders, is used as it is split.
    Hidden files and folders are ignored; files that do not decode as
    images are skipped with one warning; class folders with no usable image
    are reported and left out.

    Args:
        path: str. The root folder: local, or any filesystem `tf.io.gfile`
            reads (`gs://bucket/photos`, ...).
        image_size: int or `(height, width)`. Images are resized to it.
        batch_size: int. Defaults to `32`.
        validation_split: float. Share of each class held out for
            validation (when the folder is not split already). Defaults to
            `0.2`.
        test_split: float. Share held out for testing. Defaults to `0.0`.
        seed: int. Split and shuffle seed: the same seed gives the same
            splits and the same order. Defaults to `1337`.
        class_names: list of str or None. Use only these class folders, in
            this order (label `i` is `class_names[i]`). Defaults to all
            folders, sorted.
        crop_to_aspect_ratio: bool. Crop the center to the target aspect
            ratio before resizing. Defaults to `False`.
        pad_to_aspect_ratio: bool. Pad instead. Defaults to `False`.
        follow_links: bool. Follow symbolic links. Defaults to `False`.
        cache: `"auto"`, `"memory"`, None, or a file path / folder for a
            disk cache. `"auto"`: in memory when the decoded images (the
            training split twice: cache and shuffle buffer) fit a quarter of
            the memory available (`$TFTRANSFER_CACHE_MEMORY_MB` sets the
            budget), else no cache (decoded from the files each epoch, as
            Keras' `image_dataset_from_directory` does). The choice and why:
            `bundle.cache`, `bundle.cache_reason`. A disk cache left
            unfinished by a killed run is rebuilt. Defaults to `"auto"`.
        augmentation: None, a preset (`"light"`, `"medium"`, `"heavy"`) or
            Keras layers, applied to training batches in the pipeline.
        validate: `"auto"`, True or False. Find files that do not decode.
            True: decode every file not checked before now. `"auto"`: so
            when at most 2,000 files are new, else return at once: the
            pipeline drops any file that fails and flags those it reads,
            so the list is known after each split's first complete pass
            (`fit` warns then; `bundle.wait_for_file_checks()` finishes
            the check at once), and later passes read only the files that
            decoded. A file's result is remembered (path, size,
            modification time), so a second run decodes nothing up front.
            False: no check (undecodable files are dropped silently).
            Defaults to `"auto"`.

    Returns:
        A `DatasetBundle` whose datasets yield float32 images in [0, 255]
        `[batch, height, width, 3]` and int labels.

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> data = tftransfer.data.from_directory("flowers/", 224)  # doctest: +SKIP
    >>> data.class_names, data.counts["train"]  # doctest: +SKIP
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder path; received {type(path).__name__}.")
    path = os.fspath(path)
    if not _isdir(path):
        raise ValueError(f"path: {path!r} does not exist or is not a folder. Pass a folder "
                         "that holds one sub-folder of images per class.")
    size, batch_size, augmentation = _check_common(image_size, batch_size, augmentation)
    validate = _check_validate(validate)
    layout = _split_layout(path, follow_links) or {"all": path}

    found_classes = sorted({name for folder in layout.values()
                            for name in _subfolders(folder, follow_links)})
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        missing = [name for name in class_names if name not in found_classes]
        if missing:
            raise ValueError(f"class_names: no folder for {missing} under {path!r}; the class "
                             f"folders there are {found_classes}.")
    candidates = list(class_names) if class_names is not None else found_classes

    files = {}
    for split, folder in layout.items():
        for label_name in candidates:
            class_folder = os.path.join(folder, label_name)
            if _isdir(class_folder):
                for file_path in _files_under(class_folder, follow_links):
                    files[file_path] = (split, label_name)
    all_paths = list(files)
    skipped, unchecked, remembered = _find_bad_files(all_paths, path, validate)
    bad = {file_path for file_path, _ in skipped}
    kept = [file_path for file_path in all_paths if file_path not in bad]

    per_class = {name: 0 for name in candidates}
    for file_path in kept:
        per_class[files[file_path][1]] += 1
    empty = [name for name, count in per_class.items() if count == 0]
    if class_names is not None and empty:
        raise ValueError(f"class_names: the class folder(s) {empty} hold no readable image.")
    names = [name for name in candidates if per_class[name] > 0]
    file_checks.warn_skipped(skipped)
    if empty:
        warnings.warn(f"tftransfer: left out {len(empty)} empty class folder(s): {empty}.",
                      stacklevel=2)
    if not kept:
        raise ValueError(f"path: found no readable images under {path!r} (looked in "
                         f"{len(all_paths)} file(s) across {len(candidates)} class folder(s)).")
    if len(names) < 2:
        raise ValueError(
            f"path: {path!r} holds images of only one class ({names[0]!r}); a classifier needs "
            "at least two class folders."
        )
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[files[file_path][1]] for file_path in kept], dtype="int64")
    kept = np.array(kept)

    if "all" in layout:
        parts = split_indices(labels, validation_split, test_split, seed)
    else:
        split_of = np.array([files[file_path][0] for file_path in kept])
        parts = {split: np.flatnonzero(split_of == split)
                 for split in ("train", "validation", "test")}
    cache, cache_reason = choose_cache(cache, {split: len(parts[split]) for split in parts},
                                       _decoded_bytes(size))
    check = file_checks.StreamingCheck(remembered, skipped) if unchecked else None
    common = dict(batch_size=batch_size, seed=seed, cache=cache,
                  crop_to_aspect_ratio=crop_to_aspect_ratio,
                  pad_to_aspect_ratio=pad_to_aspect_ratio,
                  streaming=validate is False or bool(unchecked), check=check)
    datasets = {
        split: _image_dataset(kept[parts[split]], labels[parts[split]], size,
                              training=split == "train",
                              augmentation=augmentation if split == "train" else None,
                              **common)
        for split in ("train", "validation", "test")
    }
    if datasets["train"] is None:
        raise ValueError(f"path: no training images are left under {path!r} after the "
                         "validation and test splits; lower validation_split / test_split.")
    return DatasetBundle(
        train=datasets["train"], validation=datasets["validation"], test=datasets["test"],
        class_names=names,
        counts={split: count_by_class(labels[parts[split]], names) for split in parts},
        class_weights=class_weights(labels[parts["train"]], len(names)),
        skipped=skipped, empty_classes=empty, image_size=size,
        augmented=augmentation is not None, cache=_cache_name(cache), cache_reason=cache_reason,
        file_check=check,
    )


def _cache_name(cache):
    return "memory" if cache in ("memory", True) else (os.fspath(cache) if cache else None)


# --- CSV -------------------------------------------------------------------------------


_TRUE = {"1", "true", "yes", "y", "t"}


def from_csv(csv_path, path_column, label_columns, image_size, *, batch_size=32,
             validation_split=0.2, test_split=0.0, seed=1337, class_names=None,
             crop_to_aspect_ratio=False, pad_to_aspect_ratio=False, cache="auto",
             augmentation=None, validate="auto"):
    """Builds image datasets from a CSV file of image paths and labels.

    Args:
        csv_path: str. A CSV file with a header row. Relative image paths are
            read relative to the CSV file's folder.
        path_column: str. The column of image paths.
        label_columns: str or list of str. One column of class names
            (multi-class), or several 0/1 columns, one per label
            (multi-label: the labels are multi-hot vectors).
        image_size: int or `(height, width)`.
        class_names: list of str or None. For one label column: the classes
            in label order (rows with other values are an error). Defaults
            to the column's values, sorted.
        batch_size, validation_split, test_split, seed, crop_to_aspect_ratio,
        pad_to_aspect_ratio, cache, augmentation, validate: as in
            `from_directory()`.

    Returns:
        A `DatasetBundle` (`task="multilabel"` for several label columns).

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> data = tftransfer.data.from_csv("labels.csv", "file", ["cat", "dog"], 224)  # doctest: +SKIP
    """
    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise ValueError(f"csv_path: no file at {csv_path!r}.")
    size, batch_size, augmentation = _check_common(image_size, batch_size, augmentation)
    multilabel = not isinstance(label_columns, str)
    columns = list(label_columns) if multilabel else [label_columns]
    if not columns:
        raise ValueError("label_columns: expected a column name or a non-empty list of names.")
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for argument, column in [("path_column", path_column)] + [
                ("label_columns", column) for column in columns]:
            if column not in header:
                raise ValueError(f"{argument}: column {column!r} is not in {csv_path!r}; its "
                                 f"columns are {header}.")
        rows = list(reader)
    if not rows:
        raise ValueError(f"csv_path: {csv_path!r} has no rows.")
    root = os.path.dirname(os.path.abspath(csv_path))
    paths = [row[path_column] if os.path.isabs(row[path_column])
             else os.path.join(root, row[path_column]) for row in rows]
    if multilabel:
        names = list(columns)
        labels = np.array([[1.0 if str(row[c]).strip().lower() in _TRUE else 0.0
                            for c in columns] for row in rows], dtype="float32")
    else:
        values = [str(row[columns[0]]).strip() for row in rows]
        names = [str(n) for n in class_names] if class_names is not None else sorted(set(values))
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"class_names: the CSV has labels {unknown[:5]} that are not in "
                             f"class_names {names}.")
        if len(names) < 2:
            raise ValueError(f"label_columns: column {columns[0]!r} holds only one class "
                             f"({names}); a classifier needs at least two.")
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([index[value] for value in values], dtype="int64")

    validate = _check_validate(validate)
    skipped = [(p, "missing file") for p in paths if not os.path.isfile(p)]
    missing = {p for p, _ in skipped}
    present = [p for p in paths if p not in missing]
    found, unchecked, remembered = _find_bad_files(present, csv_path, validate)
    skipped += found
    bad = {p for p, _ in skipped}
    keep = np.array([p not in bad for p in paths])
    file_checks.warn_skipped(skipped)
    if not keep.any():
        raise ValueError(f"csv_path: none of the {len(paths)} images listed in {csv_path!r} "
                         "could be read.")
    paths, labels = np.array(paths)[keep], labels[keep]
    parts = split_indices(labels, validation_split, test_split, seed)
    cache, cache_reason = choose_cache(cache, {split: len(parts[split]) for split in parts},
                                       _decoded_bytes(size))
    check = file_checks.StreamingCheck(remembered, skipped) if unchecked else None
    common = dict(batch_size=batch_size, seed=seed, cache=cache,
                  crop_to_aspect_ratio=crop_to_aspect_ratio,
                  pad_to_aspect_ratio=pad_to_aspect_ratio,
                  streaming=validate is False or bool(unchecked), check=check)
    datasets = {split: _image_dataset(paths[parts[split]], labels[parts[split]], size,
                                      training=split == "train",
                                      augmentation=augmentation if split == "train" else None,
                                      **common)
                for split in parts}
    return DatasetBundle(
        train=datasets["train"], validation=datasets["validation"], test=datasets["test"],
        class_names=names,
        counts={split: count_by_class(labels[parts[split]], names) for split in parts},
        class_weights=class_weights(labels[parts["train"]], len(names)),
        skipped=skipped, image_size=size, task="multilabel" if multilabel else "multiclass",
        augmented=augmentation is not None, cache=_cache_name(cache), cache_reason=cache_reason,
        file_check=check,
    )


# --- arrays ----------------------------------------------------------------------------


def from_arrays(x, y, *, image_size=None, batch_size=32, validation_split=0.2, test_split=0.0,
                seed=1337, class_names=None, augmentation=None):
    """Builds image datasets from in-memory arrays.

    Args:
        x: array `[n, height, width]`, `[n, height, width, 1]` or
            `[n, height, width, 3]`, pixels in [0, 255]. Grayscale becomes
            RGB.
        y: array `[n]` of int labels, or `[n, num_labels]` multi-hot rows.
        image_size: int, `(height, width)` or None. Resize to it. Defaults
            to the arrays' own size.
        class_names: list of str or None. Defaults to `"0"`, `"1"`, ...
        batch_size, validation_split, test_split, seed, augmentation: as in
            `from_directory()`.

    Returns:
        A `DatasetBundle`.

    Example:

    >>> import numpy as np, tftransfer
    >>> data = tftransfer.data.from_arrays(
    ...     np.zeros((10, 8, 8), "uint8"), np.arange(10) % 2, validation_split=0.2)
    >>> data.counts["train"], data.image_size
    ({'0': 4, '1': 4}, (8, 8))
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"x: expected images [n, height, width(, 1|3|4)]; received shape "
                         f"{x.shape}.")
    if len(x) != len(y):
        raise ValueError(f"x and y have different lengths: {len(x)} images and {len(y)} labels.")
    if len(x) == 0:
        raise ValueError("x: received no images.")
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError("y: expected non-negative int labels (or multi-hot rows).")
        num_classes = int(y.max()) + 1
    elif y.ndim == 2:
        num_classes = y.shape[1]
    else:
        raise ValueError(f"y: expected shape [n] or [n, num_labels]; received {y.shape}.")
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    class_names = [str(name) for name in class_names]
    if len(class_names) < num_classes:
        raise ValueError(f"class_names: {len(class_names)} names for {num_classes} classes.")
    size = normalize_image_size(image_size, default=tuple(x.shape[1:3]))
    batch_size = check_positive_int(batch_size, "batch_size")
    augmentation = augmentation_layer(augmentation) if augmentation is not None else None
    parts = split_indices(y, validation_split, test_split, seed)

    def postprocess(images):
        images = to_rgb(tf.cast(images, tf.float32))
        if tuple(x.shape[1:3]) != size:
            images = tf.image.resize(images, size)
        return images

    def dataset(split):
        indices = parts[split]
        if len(indices) == 0:
            return None
        data = tf.data.Dataset.from_tensor_slices((x[indices], y[indices]))
        return finish(data, training=split == "train", batch_size=batch_size, seed=seed,
                      cache=None, key="", size=len(indices),
                      augmentation=augmentation if split == "train" else None,
                      postprocess=postprocess)

    return DatasetBundle(
        train=dataset("train"), validation=dataset("validation"), test=dataset("test"),
        class_names=class_names[:max(num_classes, len(class_names))],
        counts={split: count_by_class(y[parts[split]], class_names) for split in parts},
        class_weights=class_weights(y[parts["train"]], len(class_names)),
        image_size=size, task="multilabel" if y.ndim == 2 else "multiclass",
        augmented=augmentation is not None,
    )
