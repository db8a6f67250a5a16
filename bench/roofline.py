"""Roofline: frozen-forward FLOP/s of MobileNetV2 and ResNet50 against a large matmul.

Images per second of a frozen backbone's forward pass (batch 32, 224x224,
inference mode, one compiled function), turned into FLOP/s with the
backbone's FLOPs per image (multiply-adds x 2, counted by TensorFlow's graph
profiler), over the FLOP/s of a 2048x2048 float32 matmul measured in the same
process: how close to the machine's dense-math rate the backbone runs.

Run: python bench/roofline.py [--quick]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import write_results  # noqa: E402


def flops_per_image(model, size):
    """FLOPs of one forward pass (multiply-adds x 2), from TF's graph profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return int(profile.total_float_ops)


def timed(function, *args, repeats):
    function(*args)  # trace and warm up
    function(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        result = function(*args)
    _ = result.numpy() if hasattr(result, "numpy") else result
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    repeats = 3 if args.quick else 8

    import keras
    import tensorflow as tf

    n = 2048
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda a, b: tf.matmul(a, b))
    matmul_seconds = timed(matmul, a, b, repeats=repeats * 3)
    matmul_flops = 2 * n ** 3 / matmul_seconds

    figures = {"matmul_n": n, "matmul_gflops_per_s": round(matmul_flops / 1e9, 1),
               "batch_size": args.batch_size, "image_size": args.size, "backbones": {}}
    table = [(f"matmul {n}x{n} float32 (GFLOP/s)", figures["matmul_gflops_per_s"])]
    images = tf.random.uniform((args.batch_size, args.size, args.size, 3))
    for name, constructor in (("MobileNetV2", keras.applications.MobileNetV2),
                              ("ResNet50", keras.applications.ResNet50)):
        model = constructor(include_top=False, weights=None, pooling="avg",
                            input_shape=(args.size, args.size, 3))
        model.trainable = False
        flops = flops_per_image(model, args.size)
        forward = tf.function(lambda x: model(x, training=False))
        seconds = timed(forward, images, repeats=repeats)
        per_second = args.batch_size / seconds
        achieved = flops * per_second
        figures["backbones"][name] = {
            "gflops_per_image": round(flops / 1e9, 3),
            "images_per_second": round(per_second, 1),
            "achieved_gflops_per_s": round(achieved / 1e9, 1),
            "fraction_of_matmul": round(achieved / matmul_flops, 3),
        }
        table += [(f"{name}: GFLOPs per image", round(flops / 1e9, 3)),
                  (f"{name}: frozen forward, images/s (batch {args.batch_size})",
                   round(per_second, 1)),
                  (f"{name}: achieved / matmul FLOP/s", round(achieved / matmul_flops, 3))]
        keras.backend.clear_session()
    write_results("roofline", figures, table, notes=(
        "FLOPs counted by TensorFlow's profiler on the frozen graph (a multiply-add is 2 "
        "FLOPs); the matmul rate is the machine's practical dense-math ceiling on this "
        "process's threads. Random weights: speed does not depend on them."))


if __name__ == "__main__":
    main()
