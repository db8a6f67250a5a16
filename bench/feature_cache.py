"""Feature cache speedup of the head phase.

Phase 1 (head training on a frozen backbone) for E epochs, naive (the backbone
runs on every batch of every epoch) against cached (one inference pass, then
the head trains on the features). Same model, data, seed and epochs.
Goal: speedup >= 0.6 x E.

Run: python bench/feature_cache.py [--images 2000] [--epochs 10]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402

SIZE = 96


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    import keras

    import tftransfer

    (x_all, y_all), _ = tftransfer.datasets.fashion_mnist()
    pick = np.random.default_rng(0).choice(len(x_all), args.images, replace=False)
    data = tftransfer.data.from_arrays(x_all[pick], y_all[pick], image_size=SIZE,
                                       validation_split=0.1, batch_size=32)

    def phase_one(cache):
        keras.utils.set_random_seed(0)
        model = tftransfer.build_classifier("MobileNetV2", 10, image_size=SIZE, weights=None)
        start = time.perf_counter()
        result = tftransfer.fit(model, data, head_epochs=args.epochs, fine_tune_epochs=0,
                                cache_features=cache, early_stopping_patience=None, verbose=0)
        seconds = time.perf_counter() - start
        keras.backend.clear_session()
        return seconds, result

    naive_seconds, naive = phase_one(False)
    cached_seconds, cached = phase_one(True)
    speedup = naive_seconds / cached_seconds
    goal = 0.6 * args.epochs
    figures = {
        "images": args.images, "image_size": SIZE, "epochs": args.epochs,
        "model": "MobileNetV2 (frozen), head phase",
        "naive_seconds": round(naive_seconds, 2), "cached_seconds": round(cached_seconds, 2),
        "feature_extraction_seconds": round(cached.timings.get("feature_extraction", 0.0), 2),
        "speedup": round(speedup, 2), "goal_speedup": goal, "goal_met": speedup >= goal,
        "naive_final_val_loss": round(naive.history["val_loss"][-1], 4),
        "cached_final_val_loss": round(cached.history["val_loss"][-1], 4),
    }
    write_results("feature_cache", figures, [
        (f"phase 1, {args.epochs} epochs, naive (s)", figures["naive_seconds"]),
        (f"phase 1, {args.epochs} epochs, cached (s)", figures["cached_seconds"]),
        ("of which the one feature pass (s)", figures["feature_extraction_seconds"]),
        (f"speedup (goal >= {goal:g})", figures["speedup"]),
        ("final val_loss naive / cached",
         f"{figures['naive_final_val_loss']} / {figures['cached_final_val_loss']}"),
    ], notes=f"{args.images} Fashion-MNIST images resized to {SIZE}x{SIZE}, batch 32, "
             "random-initialized MobileNetV2 backbone (the cost, not the accuracy, is measured).")


if __name__ == "__main__":
    main()
