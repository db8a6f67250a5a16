"""Finding the image files that do not decode, without a pass before training.

A folder's files are checked once (each decoded by `tf.io.decode_image`,
as the pipeline will) and the result is remembered per file, keyed by path,
size and modification time, under `~/.cache/tftransfer/file_checks/` (or
`$TFTRANSFER_CACHE_DIR/file_checks/`): a second run of the same folder
decodes nothing, and a file that changes is checked again.

With `validate="auto"` (the default of `from_directory` and `from_csv`),
files with a remembered result are kept or left out at once, and the others
are checked in the background while training runs: by a child process at
the lowest CPU priority (`nice 19`, one thread), so the training process
keeps its cores (a thread of this process cost a third of the input
pipeline's images/s at 336 px); meanwhile the pipeline drops any file that
fails to decode (`Dataset.ignore_errors()`), so a bad file never stops an
epoch. When the background check ends, its findings join `bundle.skipped`
and are warned about; `bundle.wait_for_file_checks()` waits for them.
"""

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

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


class BackgroundCheck:
    """Checks files in a low-priority child process; `result()` waits for the failures.

    Args:
        paths: list of str. The files to check.
        remembered: `RememberedChecks`. Where the results are recorded.
        skipped: list. The bundle's `skipped`: the failures are appended to it.
    """

    # The child: `python -m tftransfer.data.file_checks <paths file> <results file>`.
    command = (sys.executable, "-m", "tftransfer.data.file_checks")
    # Its nice value: 19 yields every core to training (and gets little on a busy machine).
    niceness = 19

    def __init__(self, paths, remembered, skipped):
        self.paths = list(paths)
        self.remembered = remembered
        self.skipped = skipped
        self.found = []
        self.error = None
        self.reported = False
        self._thread = threading.Thread(target=self._run, name="tftransfer-file-check",
                                        daemon=True)
        self._thread.start()

    def _run(self):
        folder = tempfile.mkdtemp(prefix="tftransfer_file_check_")
        listed, results = os.path.join(folder, "paths.txt"), os.path.join(folder, "results")
        try:
            with open(listed, "w", encoding="utf8") as handle:
                handle.write("\n".join(self.paths))
            process = subprocess.run(
                list(self.command) + [listed, results], stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                check=False, preexec_fn=self._lower_priority if hasattr(os, "nice") else None)
            reasons = {}
            if os.path.exists(results):
                with open(results, encoding="utf8") as handle:
                    for line in handle:
                        try:
                            path, reason = json.loads(line)
                        except ValueError:
                            continue  # a line cut short by a kill
                        reasons[path] = reason
            for path in self.paths:
                if path in reasons:
                    self.remembered.record(path, reasons[path])
                    if reasons[path] is not None:
                        self.found.append((path, reasons[path]))
            self.remembered.save()
            if process.returncode:
                tail = process.stderr.decode("utf8", "replace").strip().splitlines()[-3:]
                raise RuntimeError(f"the checking process exited with {process.returncode} "
                                   f"after {len(reasons)} of {len(self.paths)} files: "
                                   + " / ".join(tail))
        except Exception as error:  # noqa: BLE001 - reported by result()
            self.error = error
        finally:
            self.skipped.extend(self.found)
            shutil.rmtree(folder, ignore_errors=True)

    def _lower_priority(self):
        try:  # from the start, TensorFlow's import included
            os.nice(self.niceness)
        except OSError:
            pass

    @property
    def done(self):
        return not self._thread.is_alive()

    def result(self, timeout=None):
        """The failures found, once the check ends (None if `timeout` passes first)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        if self.error is not None:
            raise RuntimeError(f"tftransfer: the background file check failed: "
                               f"{self.error}") from self.error
        return list(self.found)

    def report(self, stacklevel=3):
        """Warns once about what the finished check found."""
        if self.done and not self.reported:
            self.reported = True
            warn_skipped(self.found, stacklevel=stacklevel + 1)


def _main(listed, results):
    """The checking process: lowest priority, one thread, a result line per file."""
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    with open(listed, encoding="utf8") as handle:
        paths = [line for line in handle.read().split("\n") if line]
    parent = os.getppid()
    with open(results, "w", encoding="utf8") as out:
        for path in paths:
            if os.getppid() != parent:
                return 1  # the training process has ended: nobody is waiting for the rest
            out.write(json.dumps([path, check_file(path)]) + "\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))
