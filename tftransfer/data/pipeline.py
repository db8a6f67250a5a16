"""The tail every tftransfer dataset shares: cache, shuffle, batch, augment, prefetch."""

import glob
import hashlib
import json
import logging
import os

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# cache="auto": decoded images are cached in memory when they take at most this
# share of the memory available when the dataset is built.
CACHE_MEMORY_FRACTION = 0.25
# Without a memory cache the paths are shuffled before decoding (complete and
# cheap); a disk cache replays one order, mixed by a buffer of at most this many
# decoded examples (or fewer, within the memory budget).
DISK_CACHE_SHUFFLE_BUFFER = 2048

logger = logging.getLogger("tftransfer")


def available_memory():
    """Bytes of memory available now (`MemAvailable`), or None if unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget():
    """`(bytes, why)`: how much decoded data `cache="auto"` may hold in memory.

    `$TFTRANSFER_CACHE_MEMORY_MB` if set, else a quarter of the memory
    available now (2 GB if that cannot be read).
    """
    given = os.environ.get("TFTRANSFER_CACHE_MEMORY_MB")
    if given:
        try:
            return int(float(given) * 2 ** 20), "TFTRANSFER_CACHE_MEMORY_MB"
        except ValueError:
            raise ValueError(f"TFTRANSFER_CACHE_MEMORY_MB: expected a number of MB; received "
                             f"{given!r}.") from None
    available = available_memory()
    if available is None:
        return 2 * 2 ** 30, "2 GB (the available memory could not be read)"
    return (int(available * CACHE_MEMORY_FRACTION),
            f"{CACHE_MEMORY_FRACTION:.0%} of the {available / 2 ** 30:.1f} GB available")


def choose_cache(cache, sizes, bytes_per_example):
    """`(cache, reason)`: `cache="auto"` resolved against the memory budget.

    Args:
        cache: `"auto"`, `"memory"`, None/False or a disk cache path.
        sizes: dict `split -> number of examples`.
        bytes_per_example: int. Decoded size of one example.
    """
    if cache != "auto":
        kind = ("memory" if cache in ("memory", True) else
                "none" if not cache else f"disk ({os.fspath(cache)})")
        return cache, f"cache={kind}, as given"
    # In memory the training split is held twice: the cache and the whole-set shuffle buffer.
    needed = bytes_per_example * (2 * sizes.get("train", 0) + sizes.get("validation", 0)
                                  + sizes.get("test", 0))
    budget, why = memory_budget()
    if needed <= budget:
        reason = (f"cache='memory': the decoded images take about {needed / 2 ** 20:,.0f} MB, "
                  f"within the memory budget of {budget / 2 ** 20:,.0f} MB ({why})")
        chosen = "memory"
    else:
        reason = (f"no cache: the decoded images would take about {needed / 2 ** 20:,.0f} MB, "
                  f"over the memory budget of {budget / 2 ** 20:,.0f} MB ({why}); they are "
                  "decoded from the files each epoch (pass cache='<folder>' for a disk cache, "
                  "or set TFTRANSFER_CACHE_MEMORY_MB)")
        chosen = None
    logger.info("tftransfer: %s.", reason)
    return chosen, reason


def fingerprint(*parts):
    """A short hash of what produced a dataset, for cache file names."""
    text = json.dumps([str(part) for part in parts], sort_keys=True)
    return hashlib.sha256(text.encode("utf8")).hexdigest()[:16]


def cache_path(cache, key):
    """Where a file cache lives: `<cache>/<key>` for a folder, `<cache>_<key>` else.

    A cache that a killed run left unfinished (no `.index` file yet, maybe a
    lock file) is removed, so the next run rebuilds it instead of failing.
    """
    cache = os.fspath(cache)
    prefix = (os.path.join(cache, key) if cache.endswith(os.sep) or os.path.isdir(cache)
              else f"{cache}_{key}")
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    if not os.path.exists(prefix + ".index"):
        for leftover in glob.glob(glob.escape(prefix) + "*"):
            if os.path.isfile(leftover):
                os.remove(leftover)
    return prefix


def finish(dataset, *, training, batch_size, seed, cache, key, size, augmentation=None,
           postprocess=None, shuffle_buffer=None, tracker=None):
    """Cache -> (shuffle) -> batch -> postprocess/augment -> prefetch.

    Args:
        dataset: unbatched `tf.data.Dataset` of `(inputs, labels)`, or of
            `(inputs, labels, file index)` with a `tracker`.
        training: bool. Shuffle (reshuffled each epoch) and augment.
        batch_size: int.
        seed: int or None. Makes the shuffle order reproducible.
        cache: `"memory"`, None/False, or a file path / folder for a disk cache.
        key: str. Fingerprint of what produced `dataset` (file caches).
        size: int. Number of elements.
        augmentation: Keras layer or None, applied to training batches.
        postprocess: callable or None, applied to every batch of inputs.
        shuffle_buffer: int or None. Elements in the shuffle buffer; None
            holds them all (`size`), 0 shuffles nothing here (the source is
            shuffled already).
        tracker: `file_checks.FileTracker` or None. Flags the files of each
            batch as read (and drops their index), and counts each complete
            pass.
    """
    if cache == "memory" or cache is True:
        dataset = dataset.cache()
    elif cache:
        dataset = dataset.cache(cache_path(cache, key))
    buffer = size if shuffle_buffer is None else min(shuffle_buffer, size)
    if training and buffer > 1:
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # Copying decoded images into the batch is a large part of a step at high
    # resolution. Straight after the decoding map, a plain batch lets tf.data fuse
    # the two (each image is written into its batch once: 4,870 images/s against 4,480
    # batched in parallel, 60,000 JPEGs at 336 px); after a cache, a shuffle buffer or
    # a dropping `ignore_errors`, batching in parallel does the copying.
    shuffled = training and buffer > 1
    straight_from_map = not cache and not shuffled and tracker is None
    dataset = dataset.batch(batch_size, num_parallel_calls=None if straight_from_map
                            else AUTOTUNE)
    if tracker is not None:
        def read(x, y, indices):
            with tf.control_dependencies([tracker.mark(indices)]):
                x = tf.identity(x)
            return (postprocess(x) if postprocess is not None else x), y

        dataset = dataset.map(read, num_parallel_calls=AUTOTUNE)
    elif postprocess is not None:
        dataset = dataset.map(lambda x, y: (postprocess(x), y), num_parallel_calls=AUTOTUNE)
    if training and augmentation is not None:
        dataset = dataset.map(lambda x, y: (augmentation(x, training=True), y),
                              num_parallel_calls=AUTOTUNE)
    if tracker is not None:
        dataset = dataset.concatenate(tracker.end_of_pass(dataset.element_spec))
    return dataset.prefetch(AUTOTUNE)


def by_pass(first, later, passes):
    """`first` until the counter `passes` (a variable) is above 0, then `later`.

    The choice is read once, when an iteration (an epoch) starts.
    """

    def choice(_):
        return tf.cast(passes.read_value() > 0, tf.int64)

    selector = tf.data.Dataset.range(1).map(choice).flat_map(
        lambda chosen: tf.data.Dataset.from_tensors(chosen).repeat())
    return tf.data.Dataset.choose_from_datasets([first, later], selector,
                                                stop_on_empty_dataset=True)
