"""Reading weights made elsewhere: PyTorch `.pth` (tensors only), safetensors, and
placing them into Keras layers.

Example:

>>> import tftransfer
>>> sorted(tftransfer.checkpoints.allowed_globals())[0]
('collections', 'OrderedDict')
"""

import os

from tftransfer.checkpoints.mapping import load_pytorch_weights
from tftransfer.checkpoints.pytorch import (
    UnsafeCheckpointError,
    allowed_globals,
    load_pytorch_checkpoint,
)
from tftransfer.checkpoints.safetensors import load_safetensors, save_safetensors


def load_state_dict(path):
    """Reads a `.safetensors` or PyTorch checkpoint into a dict of numpy arrays.

    The format is read from the file's first bytes, not its name. Neither
    reader runs code from the file.

    Args:
        path: str or `os.PathLike`.

    Returns:
        A dict from tensor names to numpy arrays.

    Example:

    >>> import numpy as np, tempfile, os, tftransfer
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> tftransfer.checkpoints.save_safetensors({"w": np.ones(2, "float32")}, path)
    >>> tftransfer.checkpoints.load_state_dict(path)["w"].tolist()
    [1.0, 1.0]
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: no checkpoint file at {path!r}.")
    with open(path, "rb") as handle:
        head = handle.read(9)
    # A safetensors file opens with its header length, then '{'; a pickle opens with 0x80.
    state = (load_safetensors(path) if head[8:9] == b"{" else load_pytorch_checkpoint(path))
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # training checkpoints wrap it
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict of tensors.")
    return dict(state)


__all__ = [
    "UnsafeCheckpointError",
    "allowed_globals",
    "load_pytorch_checkpoint",
    "load_pytorch_weights",
    "load_safetensors",
    "load_state_dict",
    "save_safetensors",
]
