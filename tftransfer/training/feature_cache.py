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

from tftransfer import files
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


def _as_input_dtype(inputs, dtypes):
    """uint8 images (arrays given to `fit`) as the model's float input, as Keras converts."""
    if len(dtypes) == 1 and hasattr(inputs, "dtype") and inputs.dtype != dtypes[0]:
        wanted = tf.as_dtype(dtypes[0])
        if (wanted.is_floating or wanted.is_integer) and (
                tf.as_dtype(inputs.dtype).is_integer or tf.as_dtype(inputs.dtype).is_floating):
            return tf.cast(inputs, wanted)
    return inputs


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
        files.remove_temporaries(directory)
    dtypes = [tensor.dtype for tensor in feature_model.inputs]
    for batch_inputs, batch_labels in dataset:
        features.append(predict(_as_input_dtype(batch_inputs, dtypes)).numpy())
        labels.append(batch_labels.numpy())
    features, labels = np.concatenate(features), np.concatenate(labels)
    if storage == "disk":
        paths = [os.path.join(directory, name) for name in ("features.npy", "labels.npy")]
        for array, path in zip((features, labels), paths):
            with files.replacing(path) as temporary:
                np.save(temporary, array)
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


# --- activations at the first trainable layer, for fine-tuning ---------------------------


def _producer(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def trainable_cut(backbone):
    """Where the trainable part of a Functional backbone starts.

    A node is open when its layer has trainable weights or it consumes what
    an open node produced; the cut is every tensor an open node consumes
    from a frozen one. Everything before the cut is frozen and (in a
    `Backbone` in inference mode) deterministic, so its outputs can be
    computed once and reused in every fine-tuning epoch.

    Returns:
        A list of `(name, tensor)` pairs, the name stable across rebuilds of
        the same architecture; empty when nothing in the backbone trains, or
        when an activation at the cut has a size known only per batch (a
        text encoder's token sequence, padded to each batch's longest text),
        which cannot be stored as one array.
    """
    operations = backbone.operations
    index = {id(operation): i for i, operation in enumerate(operations)}
    open_nodes, cut, seen = set(), [], set()
    for depth in sorted(backbone._nodes_by_depth, reverse=True):  # inputs first
        for node in backbone._nodes_by_depth[depth]:
            operation = node.operation
            inputs = node.input_tensors
            is_open = bool(getattr(operation, "trainable_weights", None)) or any(
                id(_producer(t)) in open_nodes for t in inputs)
            if not is_open:
                continue
            open_nodes.add(id(node))
            for tensor in inputs:
                if id(_producer(tensor)) not in open_nodes and id(tensor) not in seen:
                    seen.add(id(tensor))
                    producer, _, tensor_index = tensor._keras_history
                    cut.append((f"cut_{index[id(producer)]}_{tensor_index}", tensor))
    if any(None in tuple(tensor.shape[1:]) for _, tensor in cut):
        return []
    return cut


def prefix_model(model, tensors):
    """Maps a classifier's inputs to tensors inside its backbone, in inference mode."""
    backbone = find_backbone(model)
    fed = [node.input_tensors for nodes in model._nodes_by_depth.values() for node in nodes
           if node.operation is backbone]
    if len(fed) != 1 or len(fed[0]) != 1:
        raise ValueError(f"The classifier must call its backbone {backbone.name!r} once, on "
                         "one tensor.")
    into_backbone = keras.Model(model.inputs[0] if len(model.inputs) == 1 else model.inputs,
                                fed[0][0])
    inner = keras.Model(backbone.inputs, list(tensors))
    inputs = [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype) for t in model.inputs]
    inputs = inputs[0] if len(inputs) == 1 else inputs
    outputs = inner(into_backbone(inputs, training=False), training=False)
    return keras.Model(inputs, outputs, name="frozen_prefix")


def suffix_model(model, cut):
    """Maps a backbone cut (see `trainable_cut()`) to the classifier's output.

    It shares the classifier's layers and weights, so training it trains the
    classifier; the backbone part keeps the backbone's inference mode.
    """
    from tftransfer.backbones.backbone import Backbone

    backbone = find_backbone(model)
    tensors = [t for _, t in cut]
    inner = Backbone(inputs=tensors if len(tensors) > 1 else tensors[0],
                     outputs=backbone.output,
                     inference_mode=getattr(backbone, "inference_mode", True),
                     name=f"{backbone.name}_trainable")
    inputs = [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=name)
              for name, t in cut]
    x = inner(inputs if len(inputs) > 1 else inputs[0])
    for layer in model.layers[model.layers.index(backbone) + 1:]:
        x = layer(x)
    return keras.Model(inputs, x, name="trainable_suffix")


def compute_activations(prefix, dataset):
    """One inference pass of `prefix`: `([array per cut tensor], labels)`."""
    predict = predictor(prefix)
    outputs, labels = None, []
    for batch_inputs, batch_labels in dataset:
        values = predict(batch_inputs)
        values = values if isinstance(values, (list, tuple)) else [values]
        if outputs is None:
            outputs = [[] for _ in values]
        for store, value in zip(outputs, values):
            store.append(value.numpy())
        labels.append(batch_labels.numpy())
    if outputs is None:
        raise ValueError("data: the dataset is empty.")
    return [np.concatenate(store) for store in outputs], np.concatenate(labels)


def activation_dataset(arrays, labels, *, batch_size, shuffle, seed):
    """Batches of cached activations: one array, or a tuple for several cut tensors."""
    x = arrays[0] if len(arrays) == 1 else tuple(arrays)
    data = tf.data.Dataset.from_tensor_slices((x, labels))
    if shuffle:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class ForwardTo(keras.callbacks.Callback):
    """Runs a callback against another model than the one being trained.

    When a suffix model trains on cached activations, callbacks such as
    keras-tuner's checkpoint and `EarlyStopping` must see (and save) the
    whole classifier, which holds the same layers. `stop_training` set on
    the classifier is passed on to the model being trained.
    """

    def __init__(self, callback, model):
        super().__init__()
        self.callback = callback
        self.target = model
        callback.set_model(model)

    def set_model(self, model):
        self.trained = model
        self.target.stop_training = False

    def set_params(self, params):
        self.callback.set_params(params)


def _forward(name):
    def hook(self, *args, **kwargs):
        getattr(self.callback, name)(*args, **kwargs)
        if getattr(self.target, "stop_training", False):
            self.trained.stop_training = True
    hook.__name__ = name
    return hook


for _name in [name for name in dir(keras.callbacks.Callback) if name.startswith("on_")]:
    setattr(ForwardTo, _name, _forward(_name))
