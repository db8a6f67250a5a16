"""Mixed precision and XLA on a GPU: training images/s, float32 vs mixed.

EfficientNetB0 and ResNet50 (whole network trainable, synthetic 224x224
images, so the input pipeline is not measured), batch 32 and 256, float32 vs
mixed precision (mixed_bfloat16 on compute capability >= 8.0, mixed_float16
below), XLA off vs on. Published anchors: mixed precision about 2.6x
(ResNet50) and 2.85x (EfficientNetB0) over TF32 on an A100 (NVIDIA
DeepLearningExamples).

It needs a GPU: without one it refuses to write results (CPU numbers would
not mean anything here), unless --allow-cpu is given for a smoke run.

Run: python bench/mixed_precision.py [--steps 30] [--allow-cpu]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402


def images_per_second(name, batch_size, policy, jit, steps, size):
    import keras

    import tftransfer

    keras.backend.clear_session()
    keras.config.set_dtype_policy(policy)
    try:
        model = tftransfer.build_classifier(name, 1000, image_size=size, weights=None)
        tftransfer.unfreeze(model)
        model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy",
                      jit_compile=jit)
        x = np.random.default_rng(0).uniform(0, 255, (batch_size, size, size, 3)).astype(
            "float32")
        y = np.zeros(batch_size, "int64")
        for _ in range(3):  # warm-up: tracing and XLA compilation
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.train_on_batch(x, y)
        float(np.asarray(loss).ravel()[0])  # wait for the device
        return batch_size * steps / (time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy("float32")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", default="32,256")
    args = parser.parse_args()

    import tensorflow as tf

    import tftransfer

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus and not args.allow_cpu:
        sys.exit("bench/mixed_precision.py needs a GPU (pass --allow-cpu for a smoke run).")
    mixed = tftransfer.training.resolve_mixed_precision("auto") if gpus else "mixed_bfloat16"
    rows, figures = [], {"mixed_policy": mixed, "gpu": [g.name for g in gpus], "results": {}}
    for name in ("EfficientNetB0", "ResNet50"):
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            for jit in (False, True):
                f32 = images_per_second(name, batch_size, "float32", jit, args.steps, args.size)
                mp = images_per_second(name, batch_size, mixed, jit, args.steps, args.size)
                key = f"{name}_b{batch_size}_xla{'on' if jit else 'off'}"
                figures["results"][key] = {"float32": round(f32, 1), "mixed": round(mp, 1),
                                           "ratio": round(mp / f32, 2)}
                rows.append((f"{name}, batch {batch_size}, XLA {'on' if jit else 'off'}",
                             f"{f32:.0f} -> {mp:.0f} img/s ({mp / f32:.2f}x)"))
    if not gpus:
        print("\n".join(f"{label}: {value}" for label, value in rows))
        print("(CPU smoke run: no results written)")
        return
    write_results("mixed_precision", figures, rows,
                  notes="float32 -> mixed images/s, training, synthetic inputs. Anchors: "
                        "2.6x ResNet50, 2.85x EfficientNetB0 (A100, NVIDIA DeepLearningExamples).")


if __name__ == "__main__":
    main()
