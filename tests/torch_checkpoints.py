"""Writes PyTorch checkpoints from numpy, without torch, in both of PyTorch's formats.

The files follow `torch.save`'s layouts (see `tftransfer/checkpoints/pytorch.py`);
tests/data/torch/ holds files that PyTorch itself wrote, to check that these
layouts are the real ones. `malicious=` adds an object whose unpickling would
run a shell command, as an attacker's checkpoint would.
"""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

_STORAGE_NAMES = {
    np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
    np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
    np.dtype("int32"): "IntStorage", np.dtype("int16"): "ShortStorage",
    np.dtype("int8"): "CharStorage", np.dtype("uint8"): "ByteStorage",
    np.dtype("bool"): "BoolStorage",
}


class _Global:
    """A reference to a module global that need not be importable here."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable
        raise NotImplementedError


class _Tensor:
    def __init__(self, key, array):
        self.key, self.array = key, np.array(array, order="C")  # ascontiguousarray makes 0-d 1-d

    def __reduce__(self):
        strides = [s // self.array.itemsize for s in self.array.strides] or []
        return (_Global("torch._utils", "_rebuild_tensor_v2"),
                (_Storage(self.key, self.array), 0, tuple(self.array.shape), tuple(strides),
                 False, collections.OrderedDict()))


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class Command:
    """Unpickling this runs `command` in a shell (the attack a safe reader must refuse)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets us add a dispatch entry
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, file, legacy):
        super().__init__(file, protocol=2)
        self.legacy = legacy
        self.storages = []

    def save_torch_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = save_torch_global

    def persistent_id(self, obj):
        if not isinstance(obj, _Storage):
            return None
        self.storages.append(obj)
        storage_type = _Global("torch", _STORAGE_NAMES[obj.array.dtype])
        if self.legacy:
            return ("storage", storage_type, obj.key, "cpu", obj.array.size, None)
        return ("storage", storage_type, obj.key, "cpu", obj.array.size)


def _wrap(state, malicious):
    wrapped = collections.OrderedDict(
        (name, _Tensor(str(index), np.asarray(value))) for index, (name, value) in
        enumerate(state.items()))
    if malicious is not None:
        wrapped["payload"] = Command(malicious)
    return wrapped


def _raw(array, byteorder):
    return array.astype(array.dtype.newbyteorder("<" if byteorder == "little" else ">")).tobytes()


def save_zip(state, path, *, malicious=None, byteorder="little"):
    """`torch.save(state, path)` for a dict of numpy arrays (PyTorch >= 1.6 format)."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, legacy=False)
    pickler.dump(_wrap(state, malicious))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", byteorder)
        for storage in pickler.storages:
            archive.writestr(f"archive/data/{storage.key}", _raw(storage.array, byteorder))
        archive.writestr("archive/version", "3\n")


def save_legacy(state, path, *, malicious=None, byteorder="little", counts=None):
    """`torch.save(..., _use_new_zipfile_serialization=False)` for a dict of numpy arrays.

    `counts` replaces the element count written before each storage (by key), as a
    damaged file would have it.
    """
    with open(path, "wb") as handle:
        for value in (0x1950A86A20F9469CFC6C, 1001,
                      {"protocol_version": 1001, "little_endian": byteorder == "little",
                       "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(value, handle, protocol=2)
        pickler = _Pickler(handle, legacy=True)
        pickler.dump(_wrap(state, malicious))
        pickle.dump([s.key for s in pickler.storages], handle, protocol=2)
        for storage in pickler.storages:
            count = (counts or {}).get(storage.key, storage.array.size)
            handle.write(struct.pack("<q" if byteorder == "little" else ">q", count))
            handle.write(_raw(storage.array, byteorder))
