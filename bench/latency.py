"""SavedModel signature latency against Keras `model.predict`, at batch 1 and 32.

A MobileNetV2 classifier (224x224, random weights: speed does not depend on
them) is exported with `tftransfer.export`; the exported `serving_default`
signature (what TF Serving runs) is timed against `model.predict` and a direct
`model(x)` call in the same process, per request, at batch 1 and 32.

Run: python bench/latency.py [--quick]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_results  # noqa: E402


def per_call(function, repeats):
    function()
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = {1: 10 if args.quick else 40, 32: 3 if args.quick else 8}

    import numpy as np
    import tensorflow as tf

    import tftransfer

    model = tftransfer.build_classifier("MobileNetV2", 10, image_size=224, weights=None)
    folder = tempfile.mkdtemp(prefix="tftransfer_latency_")
    exported = tftransfer.export(model, os.path.join(folder, "model"), parity=False)
    serving = tf.saved_model.load(exported.path).signatures["serving_default"]
    figures, table = {"model": "MobileNetV2 classifier, 224x224"}, []
    for batch in (1, 32):
        x = np.random.default_rng(0).uniform(0, 255, (batch, 224, 224, 3)).astype("float32")
        tensor = tf.constant(x)
        timings = {
            "model.predict": per_call(lambda: model.predict(x, verbose=0), repeats[batch]),
            "model(x)": per_call(lambda: model(tensor, training=False).numpy(), repeats[batch]),
            "SavedModel serving_default": per_call(
                lambda: serving(images=tensor)["probabilities"].numpy(), repeats[batch]),
        }
        ratio = timings["SavedModel serving_default"] / timings["model.predict"]
        figures[f"batch_{batch}"] = {**{k: round(v * 1000, 2) for k, v in timings.items()},
                                     "saved_model_over_predict": round(ratio, 3)}
        table += [(f"batch {batch}: {name} (ms per call)", round(value * 1000, 2))
                  for name, value in timings.items()]
        table.append((f"batch {batch}: SavedModel / model.predict", round(ratio, 3)))
    shutil.rmtree(folder, ignore_errors=True)
    write_results("latency", figures, table, notes=(
        "Per-call wall time in one process on the CPU; `model.predict` pays Keras's per-call "
        "setup, which dominates at batch 1."))


if __name__ == "__main__":
    main()
