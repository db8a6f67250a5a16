"""Reading `.safetensors` files into numpy arrays, with nothing but numpy.

The format is data, not code: an 8-byte little-endian header length, a JSON
header that gives each tensor's dtype, shape and byte range, then the bytes.
Reading it needs no package; this reader checks every range against the
file before it trusts it.
"""

import json
import os
import struct

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": "bfloat16", "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def load_safetensors(path):
    """Reads a `.safetensors` file into a dict of numpy arrays.

    Args:
        path: str or `os.PathLike`. The file.

    Returns:
        A dict from tensor names to numpy arrays, in the file's order
        (`BF16` tensors come back as `float32`). The header's
        `__metadata__`, if any, is left out.

    Raises:
        ValueError: the file is not a valid safetensors file.

    Example:

    >>> import numpy as np, tempfile, os, tftransfer
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> tftransfer.checkpoints.save_safetensors({"w": np.eye(2, dtype="float32")}, path)
    >>> tftransfer.checkpoints.load_safetensors(path)["w"].tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: no safetensors file at {path!r}.")
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path!r} is too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(_MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"{path!r} is not a safetensors file (header length {length}).")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path!r} is not a safetensors file ({error}).") from error
        data = handle.read()
    if not isinstance(header, dict):
        raise ValueError(f"{path!r} is not a safetensors file (its header is not a table).")
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path!r}: the entry of {name!r} is not valid ({error!r}; "
                             f"dtypes read: {sorted(_DTYPES)}).") from None
        itemsize = 2 if dtype == "bfloat16" else dtype.itemsize
        if not 0 <= begin <= end <= len(data) or end - begin != itemsize * int(np.prod(shape)):
            raise ValueError(f"{path!r}: the bytes of {name!r} ({begin}:{end}) do not fit its "
                             f"shape {shape} or the file (a truncated download?).")
        raw = data[begin:end]
        if dtype == "bfloat16":
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            array = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
        tensors[name] = array.reshape(shape)
    return tensors


def save_safetensors(tensors, path, *, metadata=None):
    """Writes a dict of numpy arrays as a `.safetensors` file (atomically).

    Args:
        tensors: dict from str to array-like.
        path: str or `os.PathLike`. The file to write.
        metadata: dict of str to str or None. The header's `__metadata__`.

    Example:

    >>> import numpy as np, tempfile, os, tftransfer
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> tftransfer.checkpoints.save_safetensors({"b": np.zeros(3, "int64")}, path)
    >>> tftransfer.checkpoints.load_safetensors(path)["b"].dtype
    dtype('int64')
    """
    from tftransfer.files import replacing

    names = {np.dtype(v): k for k, v in _DTYPES.items() if not isinstance(v, str)}
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, value in tensors.items():
        array = np.array(value, order="C")  # (np.ascontiguousarray turns 0-d into 1-d)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if np.dtype(dtype) not in names:
            raise ValueError(f"tensors: {name!r} has dtype {array.dtype}, which safetensors "
                             f"does not hold; use one of {sorted(names.values())}.")
        raw = array.astype(dtype).tobytes()
        header[str(name)] = {"dtype": names[np.dtype(dtype)], "shape": list(array.shape),
                             "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
    with replacing(os.fspath(path)) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(struct.pack("<Q", len(encoded)))
            handle.write(encoded)
            for raw in chunks:
                handle.write(raw)
