"""Pipeline efficiency: does reading JPEG files ever starve the model?

Same data, same model (MobileNetV2 at 96x96, frozen backbone: the head phase
of transfer learning), three ways:
  1. the tf.data pipeline alone (decode, resize, batch), images/s;
  2. `fit` from in-memory tensors;
  3. `fit` from the JPEG folder through `tftransfer.data.from_directory`
     (default in-memory cache, and with no cache: decode every epoch).
Goal: fit from files >= 0.9 x fit from memory. Steady-state epochs only (the
first epoch of each run builds the graph and fills the cache).

Run: python bench/pipeline.py [--images 2000] [--epochs 4]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common import EpochTimer, write_results  # noqa: E402

SIZE = 96


def write_jpeg_folder(root, x, y):
    for index, (image, label) in enumerate(zip(x, y)):
        folder = os.path.join(root, f"class_{label}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image).save(os.path.join(folder, f"{index:05d}.jpg"), quality=90)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import tftransfer

    (x_all, y_all), _ = tftransfer.datasets.fashion_mnist()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x_all), args.images, replace=False)
    x, y = x_all[pick], y_all[pick]
    root = tempfile.mkdtemp(prefix="tftransfer_bench_")
    write_jpeg_folder(root, x, y)

    def fresh_bundle(cache):
        return tftransfer.data.from_directory(root, SIZE, batch_size=args.batch_size,
                                              validation_split=0.0, cache=cache, seed=0)

    # 1. The pipeline alone (no cache: decode every pass).
    bundle = fresh_bundle(None)
    for _ in bundle.train:  # warm-up pass
        pass
    start = time.perf_counter()
    count = sum(int(images.shape[0]) for images, _ in bundle.train)
    pipeline_rate = count / (time.perf_counter() - start)

    # The in-memory tensors: the very images the pipeline produces.
    x_memory = np.concatenate([images.numpy() for images, _ in fresh_bundle(None).train])
    y_memory = np.concatenate([labels.numpy() for _, labels in fresh_bundle(None).train])

    def fit_rate(data, labels=None):
        keras.utils.set_random_seed(0)
        model = tftransfer.build_classifier("MobileNetV2", 10, image_size=SIZE, weights=None)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        timer = EpochTimer()
        if labels is None:
            model.fit(data, epochs=args.epochs, verbose=0, callbacks=[timer])
        else:
            model.fit(data, labels, batch_size=args.batch_size, epochs=args.epochs,
                      shuffle=True, verbose=0, callbacks=[timer])
        steady = timer.times[1:]
        keras.backend.clear_session()
        return args.images / float(np.median(steady))

    memory_rate = fit_rate(x_memory, y_memory)
    files_rate = fit_rate(fresh_bundle("memory").train)
    files_nocache_rate = fit_rate(fresh_bundle(None).train)
    figures = {
        "images": args.images, "image_size": SIZE, "batch_size": args.batch_size,
        "model": "MobileNetV2 (frozen backbone, head training)",
        "pipeline_images_per_s": round(pipeline_rate, 1),
        "fit_memory_images_per_s": round(memory_rate, 1),
        "fit_files_images_per_s": round(files_rate, 1),
        "fit_files_nocache_images_per_s": round(files_nocache_rate, 1),
        "ratio_files_over_memory": round(files_rate / memory_rate, 3),
        "ratio_files_nocache_over_memory": round(files_nocache_rate / memory_rate, 3),
        "goal": "ratio_files_over_memory >= 0.9",
        "goal_met": files_rate / memory_rate >= 0.9,
    }
    write_results("pipeline", figures, [
        ("pipeline alone (decode+resize+batch), images/s", figures["pipeline_images_per_s"]),
        ("fit from in-memory tensors, images/s", figures["fit_memory_images_per_s"]),
        ("fit from JPEG folder (memory cache), images/s", figures["fit_files_images_per_s"]),
        ("fit from JPEG folder (no cache), images/s", figures["fit_files_nocache_images_per_s"]),
        ("files / memory (goal >= 0.9)", figures["ratio_files_over_memory"]),
        ("files without cache / memory", figures["ratio_files_nocache_over_memory"]),
    ], notes=f"{args.images} Fashion-MNIST JPEGs (28x28 gray, resized to {SIZE}x{SIZE} RGB), "
             f"median of epochs 2..{args.epochs}.")


if __name__ == "__main__":
    main()
