"""Finding the image files that do not decode, without a pass before training.

A folder's files are checked once (each decoded by `tf.io.decode_image`,
as the pipeline will) and the result is remembered per file, keyed by path,
size and modification time, under `~/.cache/tftransfer/file_checks/` (or
`$TFTRANSFER_CACHE_DIR/file_checks/`): a second run of the same folder
decodes nothing, and a file that changes is checked again.

With `validate="auto"` (the default of `from_directory` and `from_csv`),
files with a remembered result are kept or left out at once, and the others
are checked by the pipeline itself while training runs (`StreamingCheck`):
it drops any file that fails to decode (`Dataset.ignore_errors()`), so a bad
file never stops an epoch, and flags every file that reaches a batch. After
a split's first complete pass, the files it never flagged are the bad ones:
they join `bundle.skipped`, are warned about, and every result is
remembered. Nothing decodes a file twice and nothing competes with training
for the cores (a low-priority checking process, the design before this one,
still cost 13 % of the pipeline's images/s on 2 cores). From the second pass
on, the pipeline reads only the files that decoded, without
`ignore_errors()`, which lets tf.data fuse decoding and batching again.
`bundle.wait_for_file_checks()` finishes the check at once instead.
"""

import atexit
import concurrent.futures
import hashlib
import os
import re
import threading
import warnings

import numpy as np
import tensorflow as tf

from tftransfer import files

MAX_LISTED = 5


def check_dir():
    """Where remembered checks live: `$TFTRANSFER_CACHE_DIR/file_checks` or
    `~/.cache/tftransfer/file_checks`."""
    root = os.environ.get("TFTRANSFER_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tftransfer")
    return os.path.join(root, "file_checks")


def check_file(path):
    """`None` if the file decodes as an image with pixels, else why not (str)."""
    try:
        if "://" in path:
            with tf.io.gfile.GFile(path, "rb") as handle:
                contents = handle.read()
        else:
            with open(path, "rb") as handle:
                contents = handle.read()
    except OSError as error:
        return f"unreadable ({error.strerror or error})"
    except tf.errors.OpError as error:
        return f"unreadable ({error.message})"
    if not contents:
        return "empty file"
    try:
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        message = str(error.message if hasattr(error, "message") else error).splitlines()[0]
        # TensorFlow prefixes the op's graph name: "{{function_node __wrapped__...}} ...".
        message = re.sub(r"\{\{[^}]*\}\}\s*", "", message).strip()
        return f"not a decodable image ({message[:120]})"
    if image.shape[0] == 0 or image.shape[1] == 0:
        return "image with no pixels"
    return None


def find_unreadable(paths, *, workers=None):
    """Decodes every file once; returns `[(path, reason)]` for those that fail.

    Example:

    >>> import os, tempfile, tftransfer
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "notes.jpg"), "w").write("not an image")
    12
    >>> [reason for _, reason in tftransfer.data.find_unreadable(
    ...     [os.path.join(folder, "notes.jpg")])]  # doctest: +ELLIPSIS
    ['not a decodable image (...)']
    """
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError(f"paths: expected a list of file paths; received one path {paths!r} "
                        "(wrap it in a list).")
    paths = list(paths)
    if not paths:
        return []
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        reasons = list(pool.map(check_file, paths))
    return [(path, reason) for path, reason in zip(paths, reasons) if reason is not None]


def warn_skipped(skipped, stacklevel=3):
    if not skipped:
        return
    listed = "; ".join(f"{path}: {reason}" for path, reason in skipped[:MAX_LISTED])
    more = f" and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
    warnings.warn(f"tftransfer: skipped {len(skipped)} unreadable file(s): {listed}{more}.",
                  stacklevel=stacklevel)


def _stamp(path):
    try:
        if "://" in path:
            info = tf.io.gfile.stat(path)
            return [int(info.length), int(info.mtime_nsec)]
        info = os.stat(path)
    except (OSError, tf.errors.OpError):
        return None
    return [int(info.st_size), int(info.st_mtime_ns)]


class RememberedChecks:
    """Check results of one folder (or CSV file), remembered on disk per file.

    Args:
        root: str. The folder or file the paths come from (names the record).
        stamps: dict `path -> [size, mtime_ns]` or None. Known already (from
            the listing); others are read with `os.stat`.
    """

    def __init__(self, root, stamps=None):
        root = os.fspath(root)
        root = root if "://" in root else os.path.abspath(root)
        key = hashlib.sha1(root.encode("utf8")).hexdigest()[:20]
        self.path = os.path.join(check_dir(), f"{key}.json")
        self.stamps = dict(stamps or {})
        self.lock = threading.Lock()
        stored = files.read_json(self.path, default=None)
        self.results = stored.get("files", {}) if isinstance(stored, dict) else {}

    def stamp(self, path):
        if path not in self.stamps:
            self.stamps[path] = _stamp(path)
        return self.stamps[path]

    def known(self, path):
        """`(True, reason or None)` if a result for this very file is remembered."""
        entry = self.results.get(path)
        if entry is not None and entry[:2] == self.stamp(path):
            return True, entry[2]
        return False, None

    def record(self, path, reason):
        stamp = self.stamp(path)
        if stamp is not None:
            with self.lock:
                self.results[path] = [stamp[0], stamp[1], reason]

    def save(self):
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with self.lock:
                snapshot = dict(self.results)
            files.write_json(self.path, {"version": 1, "files": snapshot})
        except OSError:
            pass  # a read-only home: the checks are redone next time, nothing is lost


def triage(paths, remembered):
    """`(skipped, unchecked)`: remembered failures, and paths with no result yet."""
    skipped, unchecked = [], []
    for path in paths:
        known, reason = remembered.known(path)
        if not known:
            unchecked.append(path)
        elif reason is not None:
            skipped.append((path, reason))
    return skipped, unchecked


def check_now(paths, remembered):
    """Checks `paths` now (in parallel), remembers and returns the failures."""
    found = find_unreadable(paths)
    failed = dict(found)
    for path in paths:
        remembered.record(path, failed.get(path))
    remembered.save()
    return found


class FileTracker:
    """What one split's pipeline has read: a flag per file, and the passes it completed.

    The pipeline sets a file's flag when its decoded image reaches a batch
    (`mark`), and counts a pass when it reaches its end (`end_of_pass`).
    After a complete pass, a file without its flag is one that did not
    decode. Both are variables the pipeline's functions capture; the
    dataset keeps this object alive (`dataset._tftransfer_tracker`).

    Args:
        paths: list of str. The split's files, in the pipeline's index order.
    """

    def __init__(self, paths):
        self.paths = np.asarray(paths)
        with tf.init_scope():
            self.seen = tf.Variable(tf.zeros([len(self.paths)], tf.int32), trainable=False,
                                    name="tftransfer_files_seen")
            self.passes = tf.Variable(tf.constant(0, tf.int64), trainable=False,
                                      name="tftransfer_file_passes")
        self.recorded = np.zeros(len(self.paths), bool)

    @property
    def complete(self):
        return int(self.passes.numpy()) > 0

    def seen_mask(self):
        return self.seen.numpy() > 0

    def mark(self, indices):
        """The op that flags a batch's files as read (in the pipeline's graph)."""
        indices = tf.cast(indices, tf.int64)
        return self.seen.scatter_nd_update(indices[:, None],
                                           tf.ones_like(indices, dtype=tf.int32))

    def is_seen(self, index):
        """Whether one file decoded in a pass before (in the pipeline's graph)."""
        return self.seen.sparse_read(tf.cast(index, tf.int64)) > 0

    def end_of_pass(self, element_spec):
        """A dataset of no element that counts a pass when the pipeline reaches it."""

        def count(_):
            with tf.control_dependencies([self.passes.assign_add(1)]):
                return tf.constant(False)

        def empty(_):  # never called: the filter lets nothing through
            return tf.nest.map_structure(
                lambda spec: tf.zeros([0 if dim is None else dim for dim in spec.shape],
                                      spec.dtype), element_spec)

        return tf.data.Dataset.range(1).filter(count).map(empty)

    def finish_now(self):
        """Decodes here the files no pass has read yet; flags the good ones, counts a pass."""
        if self.complete:
            return
        unseen = self.paths[~self.seen_mask()].tolist()
        failed = {path for path, _ in find_unreadable(unseen)}
        good = [i for i, path in enumerate(self.paths) if path not in failed]
        if good:
            self.seen.scatter_nd_update(np.array(good, np.int64)[:, None],
                                        np.ones(len(good), np.int32))
        self.passes.assign_add(1)


class StreamingCheck:
    """Finds the files that do not decode while the pipelines read them.

    Files not checked before are not decoded up front: each split's
    pipeline drops a file that fails (`Dataset.ignore_errors()`) and flags
    every file that reaches a batch (`FileTracker`). After a split's first
    complete pass, its unflagged files are the bad ones: they join
    `bundle.skipped` and are warned about once, and every result is
    remembered, so the next run of the folder needs no check. From then on,
    the pipeline reads only the files that decoded, without
    `ignore_errors()` (tf.data then fuses decoding and batching again).
    Files a shorter run read are remembered too.

    Args:
        remembered: `RememberedChecks`. Where the results are recorded.
        skipped: list. The bundle's `skipped`: the failures are appended to it.
    """

    def __init__(self, remembered, skipped):
        self.remembered = remembered
        self.skipped = skipped
        self.trackers = []
        self.found = []
        self.reported = False
        self.finished = False
        atexit.register(self.update)  # what this run read is remembered for the next one

    def track(self, paths):
        tracker = FileTracker(paths)
        self.trackers.append(tracker)
        return tracker

    @property
    def done(self):
        return all(tracker.complete for tracker in self.trackers)

    def update(self):
        """Records what the pipelines have read; once every split made a pass, the failures."""
        if self.finished:
            return
        try:
            changed = False
            for tracker in self.trackers:
                seen = tracker.seen_mask()
                new = seen & ~tracker.recorded
                for path in tracker.paths[new]:
                    self.remembered.record(str(path), None)
                tracker.recorded |= new
                changed = changed or bool(new.any())
            if self.done:
                failed = [str(path) for tracker in self.trackers
                          for path in tracker.paths[~tracker.seen_mask()]]
                # Why each failed (the pipeline only dropped it): decoded once more, here.
                reasons = {path: check_file(path) or "did not decode in the pipeline"
                           for path in failed}
                for path, reason in reasons.items():
                    self.remembered.record(path, reason)
                self.found = sorted(reasons.items())
                self.skipped.extend(self.found)
                self.finished = changed = True
            if changed:
                self.remembered.save()
        except (tf.errors.OpError, ValueError):
            pass  # at interpreter exit the variables may be gone: nothing to record

    def result(self, timeout=None):
        """Finishes the check now (decoding the files no pass has read) and returns the
        failures. `timeout` is accepted for compatibility and not used."""
        del timeout
        for tracker in self.trackers:
            tracker.finish_now()
        self.update()
        return list(self.found)

    def report(self, stacklevel=3):
        """Warns once about what the check found, when it is done."""
        self.update()
        if self.done and not self.reported:
            self.reported = True
            warn_skipped(self.found, stacklevel=stacklevel + 1)
