"""The feature cache: train the head on backbone features computed once.

While the backbone is frozen and nothing random runs before it, every epoch
of the head phase computes the same backbone features again. The cache
computes them once (one inference pass), trains the head layers on them, and
since the head model is made of the classifier's own head layers, the trained
head is already back in the full model when it is done.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tftransfer.training.freezing import find_backbone

HEAD_START = "dropout"
RANDOM_LAYERS = (
    keras.layers.RandomFlip, keras.layers.RandomRotation, keras.layers.RandomZoom,
    keras.layers.RandomTranslation, keras.layers.RandomContrast, keras.layers.RandomBrightness,
    keras.layers.RandomCrop, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
)


def why_not_cacheable(model, *, augmented_data=False):
    """None when the head phase can train on cached features, else the reason."""
    if augmented_data:
        return "the training data is augmented in the pipeline"
    try:
        model.get_layer(HEAD_START)
    except ValueError:
        return f"the model has no '{HEAD_START}' layer where its head starts"
    try:
        backbone = find_backbone(model)
    except ValueError as error:
        return str(error)
    if backbone.trainable_weights:
        return "the backbone is not frozen"
    if getattr(backbone, "inference_mode", True) is False:
        return "the backbone runs in training mode (freeze_batch_norm=False)"
    head_start = model.layers.index(model.get_layer(HEAD_START))
    for layer in model.layers[:head_start]:
        if layer.trainable_weights:
            return f"layer {layer.name!r} before the head is trainable"
        for sublayer in [layer] + list(layer._flatten_layers(include_self=False)):
            if isinstance(sublayer, RANDOM_LAYERS) or sublayer.name == "augmentation":
                return f"layer {sublayer.name!r} before the head is random (augmentation)"
    return None


def shuffles(dataset):
    """Whether a tf.data pipeline contains a shuffle (its order changes by epoch)."""
    try:
        graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    except Exception:  # an unusual dataset: assume it shuffles, the safe default
        return True
    return any(node.op.startswith("ShuffleDataset") for node in graph.node)


def split_model(model):
    """Returns `(feature_model, head_model)` sharing the classifier's layers."""
    head_input = model.get_layer(HEAD_START).input
    feature_model = keras.Model(model.inputs, head_input, name="features")
    head_start = model.layers.index(model.get_layer(HEAD_START))
    head_layers = model.layers[head_start:]
    inputs = keras.Input(shape=tuple(head_input.shape[1:]), name="cached_features")
    x = inputs
    for layer in head_layers:
        x = layer(x)
    return feature_model, keras.Model(inputs, x, name="head")


def predictor(feature_model):
    """One compiled inference function for every batch size (traced once)."""
    specs = [tf.TensorSpec((None,) + tuple(tensor.shape[1:]), tensor.dtype)
             for tensor in feature_model.inputs]
    return tf.function(lambda x: feature_model(x, training=False), input_signature=specs)


def compute_features(feature_model, dataset, *, storage="memory", directory=None,
                     predict=None):
    """One inference pass over `(inputs, labels)` batches.

    Returns:
        `(features, labels)` numpy arrays; with `storage="disk"`, memory-mapped
        `.npy` files under `directory` (a temporary folder by default).
    """
    predict = predict or predictor(feature_model)
    features, labels = [], []
    if storage == "disk":
        directory = directory or tempfile.mkdtemp(prefix="tftransfer_features_")
        os.makedirs(directory, exist_ok=True)
    for batch_inputs, batch_labels in dataset:
        features.append(predict(batch_inputs).numpy())
        labels.append(batch_labels.numpy())
    features, labels = np.concatenate(features), np.concatenate(labels)
    if storage == "disk":
        paths = [os.path.join(directory, name) for name in ("features.npy", "labels.npy")]
        for array, path in zip((features, labels), paths):
            temporary = path + ".tmp.npy"
            np.save(temporary, array)
            os.replace(temporary, path)
        features, labels = (np.load(path, mmap_mode="r") for path in paths)
    return features, labels


def feature_dataset(features, labels, *, batch_size, shuffle, seed):
    """Batches of cached features (read slice by slice when memory-mapped)."""
    count = len(features)
    if isinstance(features, np.memmap):
        indices = tf.data.Dataset.range(count)
        if shuffle:
            indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)

        def take(batch_indices):
            def read(index_array):
                index_array = np.sort(index_array)
                return (np.asarray(features[index_array], np.float32),
                        np.asarray(labels[index_array]))

            x, y = tf.numpy_function(read, [batch_indices], (tf.float32, labels.dtype))
            x.set_shape((None,) + features.shape[1:])
            y.set_shape((None,) + labels.shape[1:])
            return x, y

        return indices.batch(batch_size).map(take).prefetch(tf.data.AUTOTUNE)
    data = tf.data.Dataset.from_tensor_slices((features, labels))
    if shuffle:
        data = data.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
