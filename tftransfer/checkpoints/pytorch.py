"""Reading PyTorch `.pth` state dicts without torch, and without running pickled code.

A `.pth` file is a pickle: loading it with `pickle` (or `torch.load` without
`weights_only=True`) runs whatever callables the file names, so a downloaded
checkpoint can run any command. This reader never does. Its unpickler
resolves only the handful of globals a tensor state dict needs
(`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and friends,
the `torch.*Storage` types), each mapped to a harmless stand-in defined
here, and refuses every other global with `UnsafeCheckpointError` before
anything is called. Both of PyTorch's formats are read:

- the zip format (`torch.save` since PyTorch 1.6): `<root>/data.pkl` plus
  one raw file a storage under `<root>/data/`;
- the legacy format (`_use_new_zipfile_serialization=False`, and every file
  older than 1.6): five pickles in a row (magic number, protocol version,
  system info, the object, the storage keys), then each storage's bytes
  after an 8-byte element count.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# torch storage type name -> numpy dtype ("bfloat16" is widened to float32).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafeCheckpointError(ValueError):
    """A checkpoint asked for a global that a tensor state dict never needs."""


class _StorageType:
    """Stands in for `torch.FloatStorage` and its siblings: only carries the dtype."""

    def __init__(self, name):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if isinstance(self.dtype, str) else self.dtype.itemsize


class _Storage:
    """One storage: its element type and count, bytes filled in when read."""

    def __init__(self, storage_type, numel):
        self.storage_type = storage_type
        self.numel = int(numel)
        self.array = None

    def fill(self, raw, byteorder="little"):
        expected = self.numel * self.storage_type.itemsize
        if len(raw) != expected:
            raise ValueError(f"a storage holds {len(raw)} bytes where {expected} were expected "
                             "(a truncated or damaged checkpoint).")
        dtype = self.storage_type.dtype
        if dtype == "bfloat16":
            bits = np.frombuffer(raw, dtype="<u2" if byteorder == "little" else ">u2")
            self.array = (bits.astype(np.uint32) << 16).view(np.float32)
        else:
            if byteorder == "big":
                dtype = dtype.newbyteorder(">")
            self.array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


class _LazyTensor:
    """A tensor whose storage may not have been read yet (legacy format)."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset = storage, int(offset)
        self.size, self.stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)

    def materialize(self):
        array = self.storage.array
        if array is None:
            raise ValueError("a tensor points at a storage the checkpoint never stores.")
        if any(s < 0 for s in self.stride) or self.offset < 0:
            raise ValueError("a tensor has a negative offset or stride (a damaged checkpoint).")
        if 0 in self.size:
            return np.zeros(self.size, dtype=array.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
        if last >= array.size:
            raise ValueError(f"a tensor of shape {self.size} reaches element {last} of a "
                             f"storage of {array.size} (a damaged checkpoint).")
        view = np.lib.stride_tricks.as_strided(
            array[self.offset:], shape=self.size,
            strides=tuple(s * array.itemsize for s in self.stride), writeable=False)
        return np.array(view)  # a contiguous copy, independent of the storage


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError("a tensor was rebuilt from something that is not a storage.")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}
_SAFE_GLOBALS.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


def allowed_globals():
    """The `(module, name)` pairs a checkpoint may name; everything else is refused.

    Example:

    >>> from tftransfer.checkpoints import allowed_globals
    >>> ("collections", "OrderedDict") in allowed_globals()
    True
    """
    return sorted(_SAFE_GLOBALS)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages, path, load_storage=None):
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._path = path
        self._load_storage = load_storage

    def find_class(self, module, name):
        found = _SAFE_GLOBALS.get((module, name))
        if found is None:
            raise UnsafeCheckpointError(
                f"{self._path!r} asks for the Python global '{module}.{name}', which a "
                "checkpoint of tensors never needs; it was refused before anything ran. "
                "Only state dicts of tensors are read (allowed: "
                f"{', '.join(m + '.' + n for m, n in sorted(_SAFE_GLOBALS))}). If you trust "
                "the file and need more than its tensors, load it with PyTorch.")
        return found

    def persistent_load(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] not in ("storage",
                                                                                  b"storage"):
            raise UnsafeCheckpointError(
                f"{self._path!r} holds a persistent object {saved_id!r:.80} that is not a "
                "tensor storage.")
        if len(saved_id) == 5:  # zip: (tag, type, key, location, numel)
            _, storage_type, key, _, numel = saved_id
            view = None
        elif len(saved_id) == 6:  # legacy: (tag, type, root key, location, numel, view)
            _, storage_type, key, _, numel, view = saved_id
        else:
            raise ValueError(f"{self._path!r}: unknown storage record {saved_id!r:.80}.")
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"{self._path!r}: a storage of unknown type.")
        if view is not None:
            raise ValueError(f"{self._path!r}: storage views (PyTorch < 0.4) are not supported; "
                             "load and save the file again with a current PyTorch.")
        key = key.decode() if isinstance(key, bytes) else str(key)
        if key not in self._storages:
            storage = _Storage(storage_type, numel)
            if self._load_storage is not None:
                self._load_storage(key, storage)
            self._storages[key] = storage
        return self._storages[key]


def _materialize(value):
    if isinstance(value, _LazyTensor):
        return value.materialize()
    if isinstance(value, dict):
        return type(value)((k, _materialize(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(v) for v in value)
    return value


def _load_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} is a zip file but not a PyTorch checkpoint "
                             "(no single data.pkl inside).")
        root = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if root + "byteorder" in names:
            byteorder = archive.read(root + "byteorder").decode().strip()

        def load_storage(key, storage):
            member = f"{root}data/{key}"
            if member not in names:
                raise ValueError(f"{path!r}: the storage {key!r} is missing from the archive.")
            storage.fill(archive.read(member), byteorder)

        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), {}, path,
                                         load_storage)
        return _materialize(unpickler.load())


def _load_legacy(path):
    with open(path, "rb") as handle:
        def plain_pickle():
            return _RestrictedUnpickler(handle, {}, path).load()

        if plain_pickle() != _LEGACY_MAGIC_NUMBER:
            raise ValueError(f"{path!r} is neither a PyTorch zip checkpoint nor a legacy one "
                             "(wrong magic number).")
        version = plain_pickle()
        if version != _LEGACY_PROTOCOL_VERSION:
            raise ValueError(f"{path!r}: unsupported legacy protocol version {version!r}.")
        system_info = plain_pickle()
        byteorder = "little"
        if isinstance(system_info, dict) and system_info.get("little_endian") is False:
            byteorder = "big"
        storages = {}
        result = _RestrictedUnpickler(handle, storages, path).load()
        keys = plain_pickle()
        if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
            raise ValueError(f"{path!r}: the list of storages does not match the tensors.")
        for key in keys:
            storage = storages[str(key)]
            header = handle.read(8)
            if len(header) != 8:
                raise ValueError(f"{path!r} ends early (a truncated download?).")
            (numel,) = struct.unpack("<q" if byteorder == "little" else ">q", header)
            if numel != storage.numel:
                raise ValueError(f"{path!r}: storage {key!r} records {numel} elements where "
                                 f"its tensors expect {storage.numel}.")
            storage.fill(handle.read(numel * storage.storage_type.itemsize), byteorder)
    return _materialize(result)


def load_pytorch_checkpoint(path):
    """Reads a PyTorch checkpoint (`.pth`, `.pt`, `.bin`) into numpy arrays, without torch.

    Never runs code from the file: only tensor state dicts are read (see the
    module docstring), in PyTorch's zip format and in its legacy format.

    Args:
        path: str or `os.PathLike`. The checkpoint file.

    Returns:
        What the file holds, with every tensor replaced by a numpy array
        (usually a dict from parameter names to arrays; `bfloat16` tensors
        come back as `float32`).

    Raises:
        UnsafeCheckpointError: the file names a global a state dict never
            needs (for example `os.system`); raised before anything runs.
        ValueError: the file is not a PyTorch checkpoint or is damaged.

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> state = tftransfer.checkpoints.load_pytorch_checkpoint("model.pth")  # doctest: +SKIP
    >>> state["fc.weight"].shape  # doctest: +SKIP
    (1000, 1280)
    """
    import os

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: no checkpoint file at {path!r}.")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path)
    except (UnsafeCheckpointError, ValueError):
        raise
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, TypeError,
            zipfile.BadZipFile, AttributeError, IndexError) as error:
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint ({type(error).__name__}: "
                         f"{error}). Download it again, or check that it is a .pth state dict."
                         ) from error
