"""The tail every tftransfer dataset shares: cache, shuffle, batch, augment, prefetch."""

import glob
import hashlib
import json
import os

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


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
           postprocess=None):
    """Cache -> (shuffle) -> batch -> postprocess/augment -> prefetch.

    Args:
        dataset: unbatched `tf.data.Dataset` of `(inputs, labels)`.
        training: bool. Shuffle (reshuffled each epoch) and augment.
        batch_size: int.
        seed: int or None. Makes the shuffle order reproducible.
        cache: `"memory"`, None/False, or a file path / folder for a disk cache.
        key: str. Fingerprint of what produced `dataset` (file caches).
        size: int. Number of elements (the shuffle buffer holds them all).
        augmentation: Keras layer or None, applied to training batches.
        postprocess: callable or None, applied to every batch of inputs.
    """
    if cache == "memory" or cache is True:
        dataset = dataset.cache()
    elif cache:
        dataset = dataset.cache(cache_path(cache, key))
    if training:
        dataset = dataset.shuffle(max(1, size), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if postprocess is not None:
        dataset = dataset.map(lambda x, y: (postprocess(x), y), num_parallel_calls=AUTOTUNE)
    if training and augmentation is not None:
        dataset = dataset.map(lambda x, y: (augmentation(x, training=True), y),
                              num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
