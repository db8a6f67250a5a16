"""TFDS datasets through tensorflow_datasets (imported lazily)."""

import difflib

import numpy as np
import tensorflow as tf

from tftransfer.data.augmentation import augmentation_layer
from tftransfer.data.bundle import DatasetBundle, check_fraction, check_positive_int, class_weights
from tftransfer.data.images import resize_image, to_rgb
from tftransfer.data.pipeline import AUTOTUNE, finish, fingerprint


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:  # pragma: no cover - a dependency of tftransfer
        raise ImportError("from_tfds needs tensorflow-datasets (and importlib_resources): "
                          "`pip install tensorflow-datasets importlib_resources`.") from error
    return tfds


def from_tfds(name, *, image_size, data_dir=None, split=None, image_key="image",
              label_key="label", batch_size=32, validation_split=0.2, seed=1337,
              cache="memory", augmentation=None, download=True):
    """Builds image datasets from a TensorFlow Datasets dataset.

    Args:
        name: str. A TFDS name, e.g. `"tf_flowers"` or `"cifar10:3.0.2"`.
        image_size: int or `(height, width)`.
        data_dir: str or None. Where TFDS keeps prepared data. A prepared
            data_dir works offline. Defaults to TFDS' own (`~/tensorflow_datasets`).
        split: dict or None. `{"train": ..., "validation": ..., "test": ...}`
            in TFDS split syntax. Defaults to the dataset's `train`, its
            `validation` (or the last `validation_split` of `train`) and its
            `test`, where they exist.
        image_key: str. Feature holding the image. Defaults to `"image"`.
        label_key: str. Feature holding the class label. Defaults to
            `"label"`.
        batch_size, seed, cache, augmentation: as in `from_directory()`.
        validation_split: float. Used when the dataset has no validation
            split. Defaults to `0.2`.
        download: bool. Download and prepare when the data is not in
            data_dir. Defaults to `True`.

    Returns:
        A `DatasetBundle`.

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> data = tftransfer.data.from_tfds("tf_flowers", image_size=224)  # doctest: +SKIP
    """
    tfds = _import_tfds()
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a TFDS dataset name; received {name!r}.")
    from tftransfer.backbones.factory import normalize_image_size

    size = normalize_image_size(image_size, default=None)
    batch_size = check_positive_int(batch_size, "batch_size")
    validation_split = check_fraction(validation_split, "validation_split")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError and friends
        known = tfds.list_builders()
        close = difflib.get_close_matches(name.split(":")[0], known, n=5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"name: TFDS has no dataset {name!r}.{hint} ({error})") from None
    if not builder.is_prepared():
        if not download:
            raise ValueError(f"{name!r} is not prepared in data_dir {builder.data_dir!r} and "
                             "download=False.")
        try:
            builder.download_and_prepare()
        except Exception as error:
            raise ValueError(
                f"could not download and prepare the TFDS dataset {name!r} ({type(error).__name__}"
                f": {str(error).splitlines()[0][:200]}). Offline, prepare it on a machine with "
                f"network (`tfds build {name} --data_dir=DIR`), copy DIR here and pass "
                "data_dir=DIR."
            ) from error
    features = builder.info.features
    for key in (image_key, label_key):
        if key not in features:
            raise ValueError(f"{name!r} has no feature {key!r}; its features are "
                             f"{sorted(features.keys())}.")
    label_feature = features[label_key]
    class_names = list(getattr(label_feature, "names", None) or
                       [str(i) for i in range(label_feature.num_classes)])
    available = set(builder.info.splits.keys())
    if split is None:
        split = {"train": "train"}
        if "validation" in available:
            split["validation"] = "validation"
        elif validation_split > 0:
            cut = int(round(100 * (1 - validation_split)))
            split = {"train": f"train[:{cut}%]", "validation": f"train[{cut}%:]"}
        if "test" in available:
            split["test"] = "test"
    elif not isinstance(split, dict) or "train" not in split:
        raise ValueError("split: expected a dict with at least a 'train' entry, e.g. "
                         "{'train': 'train[:80%]', 'validation': 'train[80%:]'}.")
    layer = augmentation_layer(augmentation) if augmentation is not None else None

    def to_pair(example):
        image = to_rgb(example[image_key])
        image = tf.cast(tf.clip_by_value(tf.round(resize_image(image, size)), 0, 255), tf.uint8)
        return image, example[label_key]

    datasets, counts, train_labels = {}, {}, None
    for part in ("train", "validation", "test"):
        if part not in split:
            datasets[part], counts[part] = None, {n: 0 for n in class_names}
            continue
        raw = builder.as_dataset(split=split[part], shuffle_files=False)
        labels = np.concatenate([batch for batch in tfds.as_numpy(
            raw.map(lambda example: example[label_key]).batch(4096))] or [np.array([], int)])
        counts[part] = {n: int((labels == i).sum()) for i, n in enumerate(class_names)}
        if part == "train":
            train_labels = labels
        datasets[part] = finish(
            raw.map(to_pair, num_parallel_calls=AUTOTUNE), training=part == "train",
            batch_size=batch_size, seed=seed, cache=cache,
            key=fingerprint(name, builder.data_dir, split[part], size), size=len(labels),
            augmentation=layer if part == "train" else None,
            postprocess=lambda images: tf.cast(images, tf.float32))
    return DatasetBundle(
        train=datasets["train"], validation=datasets["validation"], test=datasets["test"],
        class_names=class_names, counts=counts,
        class_weights=class_weights(train_labels, len(class_names)), image_size=size,
        augmented=layer is not None,
    )
