"""Pretrains a small KerasHub ViT on Fashion-MNIST classes 0-4 and stores it as a preset.

The same source task as the embedded FashionCNN (`pretrain_embedded_backbone.py`):
the five tops-and-dresses classes; the demo's target classes (sandal, shirt,
sneaker, bag, ankle boot) are never seen. The backbone is a
`keras_hub.models.ViTBackbone` (28 x 28 RGB input, 4 x 4 patches, 4 encoder
layers of width 64, 4 heads, MLP 128, a class token; 0.14 M weights), trained
with a class-token head (AdamW 1e-3, weight decay 0.05, random flips and
shifts), seeded with op determinism. It is saved as a KerasHub preset folder
with its image converter (x / 127.5 - 1), so it loads as any downloaded
preset does: `tftransfer.build_classifier("kerashub:saved_models/vit_fashion",
5)`. `metadata.json` records the source test accuracy and settings.

Needs the Debian package `dataset-fashion-mnist`. About eight minutes on 2 cores.

Run: python scripts/pretrain_vit.py [--output DIR] [--epochs 15]
"""

import argparse
import gzip
import json
import os
import platform
import time

import numpy as np

FASHION = "/usr/share/datasets/fashion-mnist"
CONFIG = dict(image_shape=(28, 28, 3), patch_size=4, num_layers=4, num_heads=4, hidden_dim=64,
              mlp_dim=128)
SOURCE_CLASSES = ("t_shirt_top", "trouser", "pullover", "dress", "coat")
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "saved_models", "vit_fashion")


def read_idx(split):
    """`(images [n, 28, 28, 3] uint8, labels)` of Fashion-MNIST's train or test split."""
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(FASHION, f"{prefix}-images-idx3-ubyte.gz")) as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FASHION, f"{prefix}-labels-idx1-ubyte.gz")) as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8).astype("int64")
    return np.repeat(images[..., None], 3, axis=-1), labels


def pretrain(output, epochs=15, seed=0, verbose=2):
    """Trains the ViT on classes 0-4 and writes the preset folder; returns the metadata."""
    import keras
    import keras_hub
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    x, y = read_idx("train")
    test_x, test_y = read_idx("test")
    x, y = x[y < 5], y[y < 5]
    test_x, test_y = test_x[test_y < 5], test_y[test_y < 5]
    backbone = keras_hub.models.ViTBackbone(**CONFIG)
    inputs = keras.Input((28, 28, 3))
    augmented = keras.layers.RandomFlip("horizontal", seed=seed)(inputs)
    augmented = keras.layers.RandomTranslation(0.1, 0.1, seed=seed)(augmented)
    tokens = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(augmented))
    outputs = keras.layers.Dense(5, activation="softmax")(tokens[:, 0])
    model = keras.Model(inputs, outputs)
    steps = epochs * int(np.ceil(len(x) / 128))
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, warmup_target=None)
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.05),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.time()
    model.fit(x.astype("float32"), y, batch_size=128, epochs=epochs, verbose=verbose)
    seconds = time.time() - start
    accuracy = float(model.evaluate(test_x.astype("float32"), test_y, verbose=0)[1])
    os.makedirs(output, exist_ok=True)
    backbone.save_to_preset(output)
    keras_hub.layers.ViTImageConverter(image_size=(28, 28), scale=1 / 127.5,
                                       offset=-1.0).save_to_preset(output)
    metadata = {
        "name": "vit_fashion", "config": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in CONFIG.items()},
        "parameters": int(backbone.count_params()), "epochs": epochs, "seed": seed,
        "seconds": round(seconds, 1), "batch_size": 128,
        "source": "Fashion-MNIST (Debian package dataset-fashion-mnist), classes 0-4",
        "source_classes": list(SOURCE_CLASSES), "train_images": int(len(x)),
        "source_test_images": int(len(test_x)), "source_test_accuracy": round(accuracy, 4),
        "input": "RGB images in [0, 255], 28 x 28 (the converter scales them to [-1, 1])",
        "script": "scripts/pretrain_vit.py",
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "keras_hub": keras_hub.__version__},
    }
    with open(os.path.join(output, "metadata.json"), "w") as handle:
        json.dump(metadata, handle, indent=2, sort_keys=True)
    return metadata


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args(argv)
    if not os.path.isdir(FASHION):
        raise SystemExit(f"{FASHION} is missing: apt-get install -y dataset-fashion-mnist")
    print(json.dumps(pretrain(args.output, args.epochs), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
