"""Writes the small target set shipped with tftransfer: Fashion-MNIST classes 5-9.

A folder of PNG files, one subfolder per class (sandal, shirt, sneaker, bag,
ankle_boot), as a user's own data would be: `train/` holds --train-per-class
images per class from the Fashion-MNIST training split, `test/` holds
--test-per-class images per class from its test split. The embedded backbone
was pretrained on classes 0-4 only, so these are images it has never seen.
The images are 28x28 grayscale, as in Fashion-MNIST; the data pipeline turns
them into RGB at the size the model asks for.

Run: python scripts/make_demo_data.py [--output tftransfer/demo_data/fashion_target]
"""

import argparse
import os
import shutil


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "tftransfer", "demo_data", "fashion_target"))
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    from PIL import Image

    import tftransfer
    from tftransfer.backbones.embedded import TARGET_CLASSES

    (x_train, y_train), (x_test, y_test) = tftransfer.datasets.fashion_mnist(
        classes=[5, 6, 7, 8, 9])
    rng = np.random.default_rng(args.seed)
    shutil.rmtree(args.output, ignore_errors=True)
    for split, x, y, count in (("train", x_train, y_train, args.train_per_class),
                               ("test", x_test, y_test, args.test_per_class)):
        for label, name in enumerate(TARGET_CLASSES):
            folder = os.path.join(args.output, split, name)
            os.makedirs(folder)
            for index in rng.permutation(np.flatnonzero(y == label))[:count]:
                Image.fromarray(x[index]).save(os.path.join(folder, f"{index:05d}.png"),
                                               optimize=True)
    print(args.output)


if __name__ == "__main__":
    main()
