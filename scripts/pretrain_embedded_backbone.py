"""Pretrains the embedded backbone on Fashion-MNIST classes 0-4 and stores it.

The source task is the five tops-and-dresses classes (T-shirt/top, trouser,
pullover, dress, coat); the target task of the demo and the notebooks is the
other five (sandal, shirt, sneaker, bag, ankle boot), so the backbone never
sees a target image. Training is seeded and runs with TensorFlow's op
determinism, so running the script again gives the same weights on the same
machine (and the same accuracy within a point elsewhere).

Needs the Debian package `dataset-fashion-mnist`. Writes a TF-Hub-format
SavedModel and `metadata.json` (source test accuracy, settings, versions) to
`saved_models/embedded/` (or --output). About two minutes on 2 cores.

Run: python scripts/pretrain_embedded_backbone.py [--output DIR] [--epochs 8]
"""

import argparse
import json
import os
import platform
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None,
                        help="folder to write (default: saved_models/embedded)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--per-class", type=int, default=6000,
                        help="training images per source class (of 6000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-classes", default="0,1,2,3,4",
                        help="Fashion-MNIST classes to pretrain on (bench/recipes.py also "
                             "pretrains one on 5,6,7,8,9 for its second split)")
    args = parser.parse_args(argv)
    source = [int(c) for c in args.source_classes.split(",")]

    import keras
    import numpy as np
    import tensorflow as tf

    import tftransfer
    from tftransfer.backbones import embedded

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    start = time.time()

    (x_train, y_train), (x_test, y_test) = tftransfer.datasets.fashion_mnist(
        classes=source)
    rng = np.random.default_rng(args.seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y_train == c))[:args.per_class]
                           for c in range(len(source))])
    keep = rng.permutation(keep)
    train = tftransfer.data.from_arrays(x_train[keep], y_train[keep], image_size=32,
                                        validation_split=0.0, batch_size=args.batch_size,
                                        seed=args.seed).train
    test = tftransfer.data.from_arrays(x_test, y_test, image_size=32, validation_split=0.0,
                                       batch_size=256).train

    backbone = embedded.architecture((32, 32, 3))
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="preprocessing")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pooling")(backbone(x))
    outputs = keras.layers.Dense(len(source), activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    steps = args.epochs * len(train)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(2e-3, steps)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, epochs=args.epochs, verbose=2)
    accuracy = float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])

    # Unit-scale features: ReLU and max pooling commute with a positive scale, so
    # dividing the last convolution's kernel and bias by the features' RMS on the
    # training images gives features of RMS 1 (the same network up to that
    # scale), and a new head starts with sensible logits on them.
    pooled = keras.Sequential([model.get_layer("preprocessing"), backbone,
                               model.get_layer("pooling")])
    features = np.concatenate([pooled.predict_on_batch(x) for x, _ in train.take(40)])
    scale = float(np.sqrt(np.mean(np.square(features))))
    last = backbone.get_layer(f"block{len(embedded.FILTERS)}_conv2")
    for weight in last.weights:
        weight.assign(weight.numpy() / scale)

    info = {
        "name": embedded.NAME,
        "source": "Fashion-MNIST (Debian package dataset-fashion-mnist), classes "
                  + ",".join(map(str, source)),
        "source_classes": (list(embedded.SOURCE_CLASSES) if source == [0, 1, 2, 3, 4] else
                           [tftransfer.datasets.FASHION_MNIST_CLASSES[c] for c in source]),
        "source_test_accuracy": round(accuracy, 4),
        "source_test_images": int(len(y_test)),
        "train_images": int(len(keep)),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "image_size": 32,
        "input": "float32 RGB images in [0, 1], any size of at least 8x8",
        "output": f"{embedded.FILTERS[-1]} pooled features",
        "parameters": int(backbone.count_params()),
        "feature_scale_folded": round(scale, 4),
        "seconds": round(time.time() - start, 1),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": platform.python_version()},
        "script": "scripts/pretrain_embedded_backbone.py",
    }
    path = embedded.export_hub_module(backbone, args.output or embedded.embedded_backbone_path(),
                                      info=info)
    print(json.dumps({"path": path, "source_test_accuracy": info["source_test_accuracy"],
                      "seconds": info["seconds"]}))
    return info


if __name__ == "__main__":
    main()
