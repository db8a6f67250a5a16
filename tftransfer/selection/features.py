"""Pooled features of each candidate backbone, through the training feature cache.

A candidate becomes the part of a classifier that ends where its head starts
(`feature_cache.split_model()`: preprocessing, the frozen backbone in
inference mode, pooling), and its features are computed in one batched
inference pass by `feature_cache.compute_features()`, the pass `fit` uses
to train the head on cached features, here with a progress bar.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from tftransfer.training import feature_cache

WEIGHTS = ("pretrained", None)


@dataclasses.dataclass
class Data:
    """The data to rank on, in one form: a batched dataset and what it holds."""

    kind: str  # "image" or "text"
    dataset: object  # tf.data.Dataset of (inputs, labels) batches
    image_size: tuple  # (height, width) or None
    task: str  # a task the bundle states, or "auto"
    examples: int  # -1 when unknown


@dataclasses.dataclass
class Features:
    """One candidate's pooled features."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    seconds: float
    parameters: int


def _is_text(values):
    if isinstance(values, tf.Tensor):
        return values.dtype == tf.string
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "USO"
    return isinstance(values, (list, tuple)) and len(values) > 0 and isinstance(
        values[0], (str, bytes))


def prepare_data(data, *, batch_size=32):
    """A `Data` from a `DatasetBundle`, a dataset of batches, or an `(x, y)` pair."""
    from tftransfer.data.bundle import DatasetBundle

    if isinstance(data, DatasetBundle):
        if data.augmented:
            raise ValueError("data: the bundle's training split is augmented in the pipeline; "
                             "rank on a bundle built without augmentation (features must not "
                             "be random).")
        kind = "image" if data.image_size is not None else "text"
        examples = sum(data.counts.get("train", {}).values()) or -1
        return Data(kind, data.train, data.image_size, data.task, examples)
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError("data: a tf.data.Dataset must yield (inputs, labels) batches.")
        kind = "text" if spec[0].dtype == tf.string else "image"
        shape = tuple(spec[0].shape)
        image_size = tuple(shape[1:3]) if kind == "image" and len(shape) == 4 else None
        return Data(kind, data, image_size, "auto", -1)
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("data: expected a DatasetBundle, a tf.data.Dataset of (inputs, "
                         f"labels) batches, or an (x, y) pair; received {type(data).__name__}.")
    x, y = data
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
            batch_size <= 0):
        raise ValueError(f"batch_size: expected a positive int; received {batch_size!r}.")
    y = np.asarray(y)
    if _is_text(x):
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in x]
        if len(texts) != len(y):
            raise ValueError(f"data: {len(texts)} texts and {len(y)} labels; expected one "
                             "label (row) per text.")
        inputs = tf.constant(texts, tf.string)
        return Data("text", tf.data.Dataset.from_tensor_slices((inputs, y)).batch(batch_size),
                    None, "auto", len(texts))
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"data: expected images [n, height, width] or [n, height, width, 1 or "
                         f"3], or a list of strings; received an array of shape {x.shape}.")
    if len(x) != len(y):
        raise ValueError(f"data: {len(x)} images and {len(y)} labels; expected one label (row) "
                         "per image.")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)

    def to_rgb(images, labels):
        images = tf.cast(images, tf.float32)
        if images.shape[-1] == 1:
            images = tf.repeat(images, 3, axis=-1)
        return images, labels

    dataset = dataset.map(to_rgb, num_parallel_calls=tf.data.AUTOTUNE)
    return Data("image", dataset, tuple(x.shape[1:3]), "auto", len(x))


def _pooled(model):
    """A model's features as vectors: classifiers end before their head, maps are averaged."""
    try:
        model.get_layer(feature_cache.HEAD_START)
        has_head = True
    except ValueError:
        has_head = False
    if has_head:
        return feature_cache.split_model(model)[0]
    output = model.outputs[0] if len(model.outputs) == 1 else None
    if output is None:
        raise ValueError(f"candidates: the model {model.name!r} has {len(model.outputs)} "
                         "outputs; expected one (features or a classifier's probabilities).")
    if len(output.shape) == 2:
        return model
    if len(output.shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D(name="rank_pooling")(output)
    elif len(output.shape) == 3:
        pooled = keras.layers.GlobalAveragePooling1D(name="rank_pooling")(output)
    else:
        raise ValueError(f"candidates: the model {model.name!r} returns shape {output.shape}; "
                         "expected [batch, features] or a feature map.")
    return keras.Model(model.inputs, pooled, name=f"{model.name}_pooled")


def feature_model(candidate, kind, *, image_size=None, weights="pretrained"):
    """`(name, model)`: the model that maps the data's inputs to pooled features."""
    from tftransfer.models import build_classifier, build_text_classifier

    if isinstance(candidate, keras.Model):
        return candidate.name, _pooled(candidate)
    if not isinstance(candidate, str) or not candidate.strip():
        raise TypeError("candidates: expected backbone names (str) or keras.Model objects; "
                        f"received {type(candidate).__name__} ({candidate!r}).")
    if kind == "text":
        model = build_text_classifier(candidate, 2, weights=weights)
    else:
        model = build_classifier(candidate, 2, image_size=image_size,
                                 weights="imagenet" if weights == "pretrained" else weights)
    return candidate, feature_cache.split_model(model)[0]


def _input_size(model):
    shape = tuple(model.inputs[0].shape)
    return tuple(shape[1:3]) if len(shape) == 4 and None not in shape[1:3] else None


def extract(name, model, data, *, verbose=1):
    """One candidate's `Features`, computed in one batched pass with a progress bar."""
    dataset = data.dataset
    size = _input_size(model) if data.kind == "image" else None
    if size is not None and size != data.image_size:
        dataset = dataset.map(lambda x, y: (tf.image.resize(x, size), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
    steps = int(dataset.cardinality())
    bar = keras.utils.Progbar(steps if steps > 0 else None, verbose=verbose,
                              unit_name="batch")
    predict = feature_cache.predictor(model)

    def predict_with_progress(inputs):
        outputs = predict(inputs)
        bar.add(1)
        return outputs

    if verbose:
        print(f"Features of {name}:", flush=True)
    start = time.perf_counter()
    features, labels = feature_cache.compute_features(model, dataset,
                                                      predict=predict_with_progress)
    seconds = time.perf_counter() - start
    features = np.asarray(features, np.float64).reshape(len(features), -1)
    return Features(name, features, np.asarray(labels), seconds, int(model.count_params()))
