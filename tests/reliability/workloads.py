"""The work that the kill tests interrupt: `python workloads.py MODE FOLDER`.

Prints `READY` once TensorFlow is imported (the test's random timer starts
there, so kills land in the work, not in the imports), then runs MODE, each
the same way the tests' checks run it again:

- fit: `tftransfer.fit` with `checkpoint_dir` (per-epoch state, best.keras,
  phase markers, log.csv);
- tune: `tftransfer.tune` of 3 trials (keras-tuner state, head and
  activation caches);
- export: exports one version after another (SavedModel, warmup file,
  manifest, models.config), printing `EXPORTING` before each and
  `PUBLISHED <version> <seconds>` once it is in place;
- features: a disk feature cache and a tf.data file cache, rebuilt in a loop.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

IMAGE_SIZE = 32


def arrays(count=96, seed=0):
    """Small images whose class is learnable (brightness of one channel)."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % 3
    x = rng.uniform(0, 120, (count, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    x[..., 0] += 60 * y[:, None, None]
    return x, y.astype("int64")


def bundle():
    import tftransfer

    x, y = arrays()
    return tftransfer.data.from_arrays(x, y, validation_split=0.25, batch_size=16, seed=0,
                                       class_names=["a", "b", "c"])


def fit(folder):
    import keras

    import tftransfer

    keras.utils.set_random_seed(0)
    model = tftransfer.build_classifier("FashionCNN", 3)
    return tftransfer.fit(model, bundle(), head_epochs=3, fine_tune_epochs=3,
                          unfreeze_blocks=1, checkpoint_dir=os.path.join(folder, "ckpt"),
                          early_stopping_patience=None, verbose=0)


def tune(folder):
    import tftransfer

    return tftransfer.tune("FashionCNN", bundle(), max_trials=3, head_epochs=1,
                           fine_tune_epochs=2, directory=os.path.join(folder, "search"),
                           project_name="search", seed=0,
                           search_space={"unfreeze_blocks": (0, 2),
                                         "fine_tune_learning_rate": (1e-4, 1e-3, "log")})


def exported_model():
    import keras

    import tftransfer

    keras.utils.set_random_seed(0)
    return tftransfer.build_classifier("FashionCNN", 3)


def export(folder, model=None):
    import tftransfer

    return tftransfer.export(model or exported_model(), os.path.join(folder, "exports"),
                             class_names=["a", "b", "c"])


def image_folder(folder):
    """A class-per-folder set of PNGs (written by the test before the kills)."""
    import tensorflow as tf

    x, y = arrays(48, seed=1)
    root = os.path.join(folder, "images")
    for index, (image, label) in enumerate(zip(x, y)):
        path = os.path.join(root, "abc"[label], f"{index}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tf.io.write_file(path, tf.io.encode_png(tf.cast(image, tf.uint8)))
    return root


def features(folder):
    """Both caches a run leaves for the next one; returns what they hold."""
    import tftransfer
    from tftransfer.training import feature_cache

    data = tftransfer.data.from_directory(os.path.join(folder, "images"), image_size=IMAGE_SIZE,
                                          batch_size=8, validation_split=0.0, seed=0,
                                          cache=os.path.join(folder, "tfdata") + os.sep)
    model = exported_model()
    feature_model, _ = feature_cache.split_model(model)
    x, y = feature_cache.compute_features(feature_model, data.train, storage="disk",
                                          directory=os.path.join(folder, "features"))
    return data, np.asarray(x), np.asarray(y)


def main(mode, folder):
    import tensorflow  # noqa: F401  (the slow import, before READY)

    print("READY", flush=True)
    if mode == "fit":
        fit(folder)
    elif mode == "tune":
        tune(folder)
    elif mode == "export":
        # The test times its kill from these lines: it waits for the first version to be
        # published and kills during the next export.
        import time

        model = exported_model()
        while True:
            start = time.monotonic()
            print("EXPORTING", flush=True)
            result = export(folder, model)
            print(f"PUBLISHED {result.version} {time.monotonic() - start:.3f}", flush=True)
    elif mode == "features":
        while True:
            features(folder)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("DONE", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    main(sys.argv[1], sys.argv[2])
