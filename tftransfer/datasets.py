"""Real datasets that work offline."""

import gzip
import os

import numpy as np

FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"path: {path!r} is not an IDX file.")
    if data[2] != 0x08:
        raise ValueError(f"path: {path!r} is an IDX file of type {data[2]:#x}, not uint8.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"path: {path!r} is truncated: {array.size} values for shape {shape}.")
    return array.reshape(shape)


def _find(folder, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(
        f"path: no {stem}(.gz) in {folder!r}. Install the Debian package "
        "`dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`, files under "
        f"{FASHION_MNIST_PATH}) or pass path= to a folder holding the IDX files."
    )


def fashion_mnist(path=FASHION_MNIST_PATH, *, classes=None):
    """Reads Fashion-MNIST from its IDX files (the Debian package's layout).

    Args:
        path: str. The folder of the four IDX files (gzipped or not).
            Defaults to `/usr/share/datasets/fashion-mnist`.
        classes: list of int or None. Keep only these classes, relabelled
            `0..len(classes)-1` in the given order. Defaults to all ten.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 images `[n, 28, 28]`
        and int64 labels.

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> (x, y), _ = tftransfer.datasets.fashion_mnist(classes=[5, 6, 7, 8, 9])  # doctest: +SKIP
    >>> x.shape, sorted(set(y))  # doctest: +SKIP
    ((30000, 28, 28), [0, 1, 2, 3, 4])
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(
            f"path: {path!r} does not exist. Install the Debian package `dataset-fashion-mnist` "
            "(`apt-get install dataset-fashion-mnist`) or pass path= to a folder holding the "
            "Fashion-MNIST IDX files."
        )
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 9
                for c in classes) or len(set(int(c) for c in classes)) != len(classes):
            raise ValueError("classes: expected distinct Fashion-MNIST labels 0-9, like "
                             f"[5, 6, 7]; received {classes!r}.")
    result = []
    for split in ("train", "test"):
        images = _read_idx(_find(path, _FILES[split][0]))
        labels = _read_idx(_find(path, _FILES[split][1])).astype("int64")
        if len(images) != len(labels):
            raise ValueError(f"path: {split} images and labels differ in length in {path!r}.")
        if classes is not None:
            keep = np.isin(labels, classes)
            mapping = {int(c): i for i, c in enumerate(classes)}
            images, labels = images[keep], np.array([mapping[int(v)] for v in labels[keep]],
                                                    dtype="int64")
        result.append((images, labels))
    return tuple(result)


DEMO_TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data",
                           "fashion_target")


def demo_target_folder(split="train"):
    """The small labelled target set shipped with tftransfer (works offline).

    Fashion-MNIST classes 5-9 (sandal, shirt, sneaker, bag, ankle_boot) as a
    folder of PNG files, one subfolder per class: 60 images per class in
    `train`, 40 in `test`. The embedded backbone (`"FashionCNN"`) was
    pretrained on classes 0-4 and has never seen them. Written by
    `scripts/make_demo_data.py`.

    Args:
        split: str. `"train"` or `"test"`. Defaults to `"train"`.

    Returns:
        The folder's path, for `tftransfer.data.from_directory()`.

    Example:

    >>> import os, tftransfer
    >>> sorted(os.listdir(tftransfer.datasets.demo_target_folder()))
    ['ankle_boot', 'bag', 'sandal', 'shirt', 'sneaker']
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test'; received {split!r}.")
    path = os.path.join(DEMO_TARGET, split)
    if not os.path.isdir(path):
        raise ValueError(f"The demo data is missing at {path!r}: restore it from git or write "
                         "it again with `python scripts/make_demo_data.py`.")
    return path
