"""Files that a kill can never leave half-written.

Every file tftransfer writes for later runs (checkpoints, caches, exports,
search state) is written to a temporary name in the same folder and renamed
into place: a rename within a folder is atomic, so a reader finds the old
file or the new one, never a torn one. A cache also records what produced it
(`write_marker` / `marker_matches`) and is rebuilt when that does not match.
"""

import contextlib
import json
import os
import shutil
import uuid

TEMPORARY_TAG = ".tftransfer-tmp-"
_DOUBLE_SUFFIXES = (".weights.h5", ".tar.gz", ".tmp.npz")


def _suffix(path):
    name = os.path.basename(path)
    for suffix in _DOUBLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return os.path.splitext(name)[1]


def temporary_path(path):
    """A unique name beside `path`, with the same suffix (Keras checks suffixes).

    Example:

    >>> from tftransfer.files import temporary_path
    >>> temporary_path("ckpt/best.keras").endswith(".keras")
    True
    """
    path = os.fspath(path)
    suffix = _suffix(path)
    stem = path[:len(path) - len(suffix)] if suffix else path
    return f"{stem}{TEMPORARY_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"


@contextlib.contextmanager
def replacing(path):
    """Yields a temporary path; renames it to `path` when the block succeeds.

    When the block raises, the temporary file is removed and `path` keeps
    what it had.

    Example:

    >>> import os, tempfile
    >>> from tftransfer.files import replacing
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with replacing(path) as temporary:
    ...     _ = open(temporary, "w").write("done")
    >>> open(path).read()
    'done'
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)
        elif os.path.exists(temporary):
            os.remove(temporary)
        raise


def move_folder_into_place(temporary, target, trash):
    """Renames the finished folder `temporary` to `target`; an existing `target` is
    renamed to `trash` first and removed afterwards, so a reader finds the old
    folder or the new one, never a mix.

    Example:

    >>> import os, tempfile
    >>> from tftransfer.files import move_folder_into_place
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "new"))
    >>> move_folder_into_place(os.path.join(root, "new"), os.path.join(root, "out"),
    ...                        os.path.join(root, "old"))
    >>> sorted(os.listdir(root))
    ['out']
    """
    if os.path.exists(target):
        os.rename(target, trash)
        os.rename(temporary, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(temporary, target)


def write_json(path, value, **kwargs):
    """Writes `value` as JSON to `path` atomically.

    Example:

    >>> import os, tempfile
    >>> from tftransfer.files import write_json, read_json
    >>> path = os.path.join(tempfile.mkdtemp(), "state.json")
    >>> write_json(path, {"epoch": 3})
    >>> read_json(path)
    {'epoch': 3}
    """
    with replacing(path) as temporary:
        with open(temporary, "w") as handle:
            json.dump(value, handle, **kwargs)


def read_json(path, default=None):
    """The JSON in `path`, or `default` when it is missing or not valid JSON."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def write_marker(directory, produced_by):
    """Records in `directory/marker.json` what produced the cache there.

    Example:

    >>> import tempfile
    >>> from tftransfer.files import write_marker, marker_matches
    >>> folder = tempfile.mkdtemp()
    >>> write_marker(folder, {"backbone": "FashionCNN", "examples": 60})
    >>> marker_matches(folder, {"backbone": "FashionCNN", "examples": 60})
    True
    >>> marker_matches(folder, {"backbone": "FashionCNN", "examples": 61})
    False
    """
    write_json(os.path.join(directory, "marker.json"), produced_by, sort_keys=True)


def marker_matches(directory, produced_by):
    """Whether the cache in `directory` was produced by `produced_by`."""
    stored = read_json(os.path.join(directory, "marker.json"))
    return stored is not None and stored == json.loads(json.dumps(produced_by))


def remove_temporaries(directory, *, recursive=False):
    """Removes what killed writers left in `directory` (their temporary names).

    A temporary name carries its writer's process id; files of writers that
    are still running are kept.

    Example:

    >>> import os, tempfile
    >>> from tftransfer.files import remove_temporaries, TEMPORARY_TAG
    >>> folder = tempfile.mkdtemp()
    >>> _ = open(os.path.join(folder, f"best{TEMPORARY_TAG}999999999-ab.keras"), "w")
    >>> remove_temporaries(folder)
    ['best.tftransfer-tmp-999999999-ab.keras']
    """
    if not os.path.isdir(directory):
        return []
    removed = []
    if recursive:
        for parent, folders, _ in os.walk(directory):
            for folder in folders:
                if TEMPORARY_TAG not in folder:
                    removed += [os.path.join(folder, name) for name in
                                remove_temporaries(os.path.join(parent, folder))]
    for name in os.listdir(directory):
        if TEMPORARY_TAG not in name:
            continue
        try:
            pid = int(name.split(TEMPORARY_TAG, 1)[1].split("-")[0])
        except ValueError:
            pid = None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue  # another live process is writing it
        full = os.path.join(directory, name)
        if os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(full)
        removed.append(name)
    return removed


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
