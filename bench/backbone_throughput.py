"""Pooled-feature throughput: tftransfer's EfficientNet-Lite0 against the same network by hand.

tftransfer wraps a backbone (preprocessing layer, the `Backbone` that keeps
BatchNorm and Dropout in inference mode, pooling). This measures what that
costs: images per second of pooled ImageNet features from
`build_classifier("EfficientNetLite0", ...)` up to its pooling layer, against
the same layers assembled in plain Keras (`efficientnet_lite()` + global
average pooling), both through `predict_on_batch` on the same batches,
alternating, the median of several repeats. Goal: ratio >= 0.95.

Run: python bench/backbone_throughput.py [--quick]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402


def images_per_second(model, batches):
    start = time.perf_counter()
    for batch in batches:
        model.predict_on_batch(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.repeats = 2

    import keras

    import tftransfer
    from tftransfer.backbones.efficientnet_lite import efficientnet_lite

    figures = {}
    table = []
    for size, count in ((96, 512), (224, 128)):
        if args.quick:
            count //= 4
        rng = np.random.default_rng(0)
        batches = [rng.uniform(0, 255, (32, size, size, 3)).astype("float32")
                   for _ in range(count // 32)]
        classifier = tftransfer.build_classifier("EfficientNetLite0", 10, image_size=size)
        ours = keras.Model(classifier.input, classifier.get_layer("pooling").output)
        base = efficientnet_lite("lite0", input_shape=(size, size, 3), weights="imagenet")
        hand = keras.Model(base.input, keras.layers.GlobalAveragePooling2D()(base.output))
        difference = float(np.max(np.abs(ours.predict_on_batch(batches[0])
                                          - hand.predict_on_batch(batches[0]))))
        for model in (ours, hand):  # warm up: tracing and the first allocations
            images_per_second(model, batches[:2])
        measured = {"tftransfer": [], "keras": []}
        for _ in range(args.repeats):
            measured["tftransfer"].append(images_per_second(ours, batches))
            measured["keras"].append(images_per_second(hand, batches))
        median = {k: float(np.median(v)) for k, v in measured.items()}
        ratio = median["tftransfer"] / median["keras"]
        figures[f"size_{size}"] = {
            "images": count, "batch_size": 32, "repeats": args.repeats,
            "tftransfer_images_per_second": median["tftransfer"],
            "keras_images_per_second": median["keras"], "ratio": ratio,
            "runs": {k: [round(x, 1) for x in v] for k, v in measured.items()},
            "max_feature_difference": difference}
        table += [(f"{size} px: tftransfer / hand-built Keras, images/s",
                   f"{median['tftransfer']:.0f} / {median['keras']:.0f} = {ratio:.3f}"),
                  (f"{size} px: largest feature difference", f"{difference:.1e}")]
        keras.backend.clear_session()
    figures["ratio_min"] = min(figures[k]["ratio"] for k in ("size_96", "size_224"))
    write_results("backbone_throughput", figures, table, notes=(
        "Pooled ImageNet features of EfficientNet-Lite0 through tftransfer's classifier (up to "
        "its pooling layer) against the same layers built in plain Keras; batches of 32, "
        "median of the repeats, CPU. Goal: ratio >= 0.95."))


if __name__ == "__main__":
    main()
