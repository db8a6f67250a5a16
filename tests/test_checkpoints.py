"""tftransfer.checkpoints: PyTorch and safetensors files read without torch, safely."""

import json
import os
import pathlib
import struct
import sys
import zipfile

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_checkpoints  # noqa: E402
from tftransfer.checkpoints import (  # noqa: E402
    UnsafeCheckpointError,
    load_pytorch_checkpoint,
    load_pytorch_weights,
    load_safetensors,
    load_state_dict,
    save_safetensors,
)

TORCH_MADE = pathlib.Path(__file__).parent / "data" / "torch"


def _state():
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
        "conv.bias": rng.standard_normal(4).astype("float32"),
        "half": rng.standard_normal(5).astype("float16"),
        "double": rng.standard_normal(3),
        "bn.num_batches_tracked": np.array(7, "int64"),
        "mask": np.array([True, False]),
        "codes": np.arange(6, dtype="uint8").reshape(2, 3),
    }


def _assert_same(read, expected):
    assert list(read) == list(expected)
    for name, value in expected.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape, name
        np.testing.assert_array_equal(read[name], value)


@pytest.mark.parametrize("writer", [torch_checkpoints.save_zip, torch_checkpoints.save_legacy])
def test_reads_both_formats_written_from_numpy(tmp_path, writer):
    path = tmp_path / "model.pth"
    writer(_state(), path)
    _assert_same(load_pytorch_checkpoint(path), _state())


@pytest.mark.parametrize("writer", [torch_checkpoints.save_zip, torch_checkpoints.save_legacy])
def test_reads_big_endian_files(tmp_path, writer):
    path = tmp_path / "big.pth"
    writer(_state(), path, byteorder="big")
    _assert_same(load_pytorch_checkpoint(path), _state())


@pytest.mark.parametrize("name", ["state_zip.pth", "state_legacy.pth", "wrapped_zip.pth"])
def test_reads_files_that_pytorch_itself_wrote(name):
    # Written by scripts/make_torch_fixtures.py with torch 2.11: every dtype, views that
    # share one storage (a transpose, an offset slice), a Parameter, empty tensors.
    expected = dict(np.load(TORCH_MADE / "expected.npz"))
    read = load_state_dict(TORCH_MADE / name)
    _assert_same(read, expected)
    assert read["bfloat16"].tolist() == [1.5, -2.25, 3.0]
    np.testing.assert_array_equal(read["transposed"], read["base"].T)


@pytest.mark.parametrize("source", ["numpy", "torch"])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_malicious_checkpoint_is_refused_before_anything_runs(tmp_path, source, layout):
    marker = tmp_path / "ran"
    if source == "numpy":
        path = tmp_path / "evil.pth"
        writer = torch_checkpoints.save_zip if layout == "zip" else torch_checkpoints.save_legacy
        writer(_state(), path, malicious=f"touch {marker}")
    else:
        path = TORCH_MADE / f"malicious_{layout}.pth"
        marker = pathlib.Path("/tmp/tftransfer-malicious-checkpoint-ran")
        marker.unlink(missing_ok=True)
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system|nt\.system") as raised:
        load_state_dict(path)
    assert "refused before anything ran" in str(raised.value)
    assert not marker.exists()


def test_other_globals_are_refused_too(tmp_path):
    import pickle

    path = tmp_path / "eval.pth"
    path.write_bytes(pickle.dumps({"weight": eval}, protocol=2))  # noqa: S307 (data only)
    with pytest.raises(UnsafeCheckpointError, match=r"builtin__\.eval|builtins\.eval"):
        load_pytorch_checkpoint(path)


def test_damaged_files_raise_clear_errors(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch_checkpoints.save_legacy(_state(), legacy)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(legacy.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated|damaged|ends early"):
        load_pytorch_checkpoint(truncated)
    miscounted = tmp_path / "miscounted.pth"
    torch_checkpoints.save_legacy(_state(), miscounted, counts={"1": 3})
    with pytest.raises(ValueError, match="storage '1' records 3 elements where its tensors "
                                         "expect 4"):
        load_pytorch_checkpoint(miscounted)
    archive = tmp_path / "zip.pth"
    torch_checkpoints.save_zip(_state(), archive)
    broken = tmp_path / "missing_storage.pth"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            if item.filename != "archive/data/0":
                target.writestr(item, source.read(item))
    with pytest.raises(ValueError, match="storage '0' is missing"):
        load_pytorch_checkpoint(broken)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_state_dict(junk)
    with pytest.raises(ValueError, match="no checkpoint file"):
        load_state_dict(tmp_path / "absent.pth")


def test_safetensors_round_trip_and_bfloat16(tmp_path):
    path = tmp_path / "w.safetensors"
    state = _state()
    save_safetensors(state, path, metadata={"format": "pt"})
    _assert_same(load_state_dict(path), state)
    # bfloat16 (as Hugging Face writes it) is widened to float32.
    values = np.array([1.5, -2.25], "float32")
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"x": {"dtype": "BF16", "shape": [2],
                               "data_offsets": [0, len(raw)]}}).encode()
    bf16 = tmp_path / "bf16.safetensors"
    bf16.write_bytes(struct.pack("<Q", len(header)) + header + raw)
    assert load_safetensors(bf16)["x"].tolist() == [1.5, -2.25]
    for offsets in ([0, 8], [8, 24], [-16, 0]):  # too short; past the end; before the start
        lying = tmp_path / "lying.safetensors"
        header = json.dumps({"x": {"dtype": "F32", "shape": [4],
                                   "data_offsets": offsets}}).encode()
        lying.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
        with pytest.raises(ValueError, match="do not fit its shape"):
            load_safetensors(lying)


def _small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, use_bias=True, name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="fc")(x)
    return keras.Model(inputs, outputs)


def _torch_layout_state(rng):
    return {
        "features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
        "features.0.bias": rng.standard_normal(4).astype("float32"),
        "features.1.weight": rng.standard_normal((4, 1, 3, 3)).astype("float32"),
        "features.2.weight": rng.uniform(0.5, 2, 4).astype("float32"),
        "features.2.bias": rng.standard_normal(4).astype("float32"),
        "features.2.running_mean": rng.standard_normal(4).astype("float32"),
        "features.2.running_var": rng.uniform(0.5, 2, 4).astype("float32"),
        "features.2.num_batches_tracked": np.array(3, "int64"),
        "head.weight": rng.standard_normal((2, 4)).astype("float32"),
        "head.bias": rng.standard_normal(2).astype("float32"),
    }


PREFIXES = {"conv": "features.0", "dw": "features.1", "bn": "features.2", "fc": "head"}


def test_load_pytorch_weights_converts_layouts_to_the_same_function():
    rng = np.random.default_rng(1)
    state = _torch_layout_state(rng)
    model = _small_model()
    assert load_pytorch_weights(model, state, PREFIXES) == 9
    x = rng.uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    # The same network written in numpy with PyTorch's layouts (NCHW, OIHW kernels).
    conv = np.zeros((2, 4, 6, 6), "float32")
    chw = x.transpose(0, 3, 1, 2)
    for i in range(6):
        for j in range(6):
            patch = chw[:, :, i:i + 3, j:j + 3]
            conv[:, :, i, j] = np.einsum("bchw,ochw->bo", patch, state["features.0.weight"])
    conv += state["features.0.bias"][None, :, None, None]
    dw = np.zeros((2, 4, 4, 4), "float32")
    for i in range(4):
        for j in range(4):
            dw[:, :, i, j] = np.einsum("bchw,chw->bc", conv[:, :, i:i + 3, j:j + 3],
                                       state["features.1.weight"][:, 0])
    bn = ((dw - state["features.2.running_mean"][None, :, None, None])
          / np.sqrt(state["features.2.running_var"][None, :, None, None] + 1e-3)
          * state["features.2.weight"][None, :, None, None]
          + state["features.2.bias"][None, :, None, None])
    expected = bn.mean(axis=(2, 3)) @ state["head.weight"].T + state["head.bias"]
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)


def test_load_pytorch_weights_refuses_a_checkpoint_that_does_not_fit():
    rng = np.random.default_rng(2)
    wrong = _torch_layout_state(rng)
    wrong["head.weight"] = np.zeros((3, 4), "float32")
    extra = dict(_torch_layout_state(rng), **{"other.weight": np.zeros(2, "float32")})
    missing = _torch_layout_state(rng)
    del missing["features.1.weight"]
    for state, message in (
            (wrong, r"'head.weight' has shape \(4, 3\) after conversion"),
            (extra, "1 tensors of the checkpoint fit no layer: other.weight"),
            (missing, "'features.1.weight' .* is not in the checkpoint")):
        model = _small_model()
        before = [w.numpy().copy() for w in model.weights]
        with pytest.raises(ValueError, match=message):
            load_pytorch_weights(model, state, PREFIXES)
        for weight, value in zip(model.weights, before):  # nothing was assigned
            np.testing.assert_array_equal(weight.numpy(), value)
    assert load_pytorch_weights(_small_model(), extra, PREFIXES, allow_unused=("other.",)) == 9
