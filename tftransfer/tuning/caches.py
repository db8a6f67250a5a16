"""The caches a search shares between trials, on disk, and the marker of what made them.

Every trial builds the same backbone (same weights, same seed), so the
backbone's features of the train and validation splits are computed once per
search (`features.npz`), and each distinct head setting (head learning rate,
dropout) trains its head once, on those features (`head_<key>.npz`). A marker
in the cache folder records the backbone weights, data and head schedule
that made them: anything else and the caches are rebuilt.
"""

import hashlib
import json
import os
import warnings

import keras
import numpy as np

from tftransfer import files
from tftransfer.training import feature_cache
from tftransfer.training.freezing import find_backbone
from tftransfer.training.schedules import make_schedule

#: `fit`'s warmup, shared by every trial's schedules.
WARMUP_FRACTION = 0.05
HEAD_LAYERS = ("head_dense_", "predictions")


class _SharedCaches:
    """The feature and head caches of `TransferHyperModel` (a mixin).

    Uses the hypermodel's `backbone`, `data`, `seed`, `verbose`,
    `head_epochs` and `cache_dir`, and keeps the features in `_features`,
    the activations (`_ActivationCache`) in `_activations`, and the head
    phases it trained in `head_runs`.
    """

    # --- the on-disk caches and what produced them -----------------------------------

    CACHE_FILES = ("features.npz", "activations.npz")

    def _produced_by(self, model):
        """What the caches depend on: backbone weights, data content, head schedule."""
        digest = hashlib.sha1()
        for weight in find_backbone(model).weights:
            digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
        return {"backbone": str(self.backbone), "backbone_weights": digest.hexdigest(),
                "input_shape": [d for d in model.input_shape[1:]],
                "train": _data_digest(self.data.train),
                "validation": _data_digest(self.data.validation),
                "class_names": list(self.data.class_names),
                "head_epochs": self.head_epochs, "seed": self.seed}

    def _check_cache(self, model):
        """Rebuilds the caches in `cache_dir` when another backbone or data made them."""
        if self._cache_checked or not self.cache_dir:
            return
        self._cache_checked = True
        produced_by = self._produced_by(model)
        files.remove_temporaries(self.cache_dir)
        if os.path.isdir(self.cache_dir) and not files.marker_matches(self.cache_dir,
                                                                     produced_by):
            stale = [name for name in os.listdir(self.cache_dir)
                     if name in self.CACHE_FILES or (name.startswith("head_")
                                                     and name.endswith(".npz"))]
            for name in stale:
                os.remove(os.path.join(self.cache_dir, name))
            if stale:
                warnings.warn(f"tftransfer: the caches in {self.cache_dir} were made from "
                              "another backbone or other data; rebuilding them.", stacklevel=3)
            self._features, self._activations = None, {}
        files.write_marker(self.cache_dir, produced_by)

    # --- the shared head phase ------------------------------------------------------

    def _head_key(self, hp):
        key = json.dumps({"head_learning_rate": hp.get("head_learning_rate"),
                          "dropout_rate": hp.get("dropout_rate"),
                          "head_epochs": self.head_epochs, "seed": self.seed,
                          "schedule": "cosine"},
                         sort_keys=True)
        return hashlib.sha1(key.encode()).hexdigest()[:16]

    def _head_path(self, key):
        return os.path.join(self.cache_dir, f"head_{key}.npz") if self.cache_dir else None

    def _features_for(self, model):
        """Backbone features of the train and validation splits, computed once.

        Every trial builds the same backbone (same weights, same seed), so the
        features of the first trial's frozen backbone serve them all.
        """
        path = os.path.join(self.cache_dir, "features.npz") if self.cache_dir else None
        if self._features is None and path and os.path.exists(path):
            stored = np.load(path)
            validation = ((stored["vx"], stored["vy"]) if "vx" in stored.files else None)
            self._features = ((stored["x"], stored["y"]), validation)
        if self._features is None:
            feature_model, _ = feature_cache.split_model(model)
            predict = feature_cache.predictor(feature_model)
            train = feature_cache.compute_features(feature_model, self.data.train,
                                                   predict=predict)
            validation = (feature_cache.compute_features(
                feature_model, self.data.validation, predict=predict)
                if self.data.validation is not None else None)
            self._features = (train, validation)
            if path:
                os.makedirs(self.cache_dir, exist_ok=True)
                arrays = {"x": train[0], "y": train[1]}
                if validation is not None:
                    arrays.update(vx=validation[0], vy=validation[1])
                with files.replacing(path) as temporary:
                    np.savez(temporary, **arrays)
        return self._features

    @staticmethod
    def _head_layers(model):
        return [layer for layer in model.layers
                if layer.name.startswith(HEAD_LAYERS) and layer.weights]

    def _train_head(self, hp, model):
        """Trains the head on cached features, or loads it if this setting ran before."""
        key = self._head_key(hp)
        path = self._head_path(key)
        layers = self._head_layers(model)
        if path and os.path.exists(path):
            stored = np.load(path)
            values = [stored[f"w{i}"] for i in range(len(stored.files))]
            weights = [w for layer in layers for w in layer.weights]
            for weight, value in zip(weights, values):
                weight.assign(value)
            return True
        (x, y), validation = self._features_for(model)
        _, head = feature_cache.split_model(model)
        keras.utils.set_random_seed(self.seed)
        features = feature_cache.feature_dataset(x, y, batch_size=32, shuffle=True,
                                                 seed=self.seed)
        # fit's head phase: Adam, cosine schedule with warmup over the phase.
        head.compile(keras.optimizers.Adam(make_schedule(
            "cosine", float(hp.get("head_learning_rate")), steps_per_epoch=-(-len(y) // 32),
            epochs=self.head_epochs, warmup_fraction=WARMUP_FRACTION)),
            "sparse_categorical_crossentropy", metrics=["accuracy"])
        head.fit(features, epochs=self.head_epochs, verbose=self.verbose, shuffle=False)
        self.head_runs += 1
        if path:
            os.makedirs(self.cache_dir, exist_ok=True)
            values = [w.numpy() for layer in layers for w in layer.weights]
            with files.replacing(path) as temporary:
                np.savez(temporary, **{f"w{i}": v for i, v in enumerate(values)})
        return False


def _data_digest(dataset):
    """An order-free digest of a dataset's content (shuffling does not change it).

    Each example's input and label are hashed together and the hashes summed
    modulo 2**64: reordering the examples keeps the sum, while another image,
    another text or a label moved from one example to another changes it (a
    digest of pixel sums and label counts, as before, missed the last two).
    """
    if dataset is None:
        return None
    count, pairs, labels = 0, 0, {}
    for inputs, targets in dataset:
        parts = ([inputs[key] for key in sorted(inputs)] if isinstance(inputs, dict)
                 else [inputs]) + [targets]
        parts = [np.asarray(part) for part in parts]
        for index in range(len(parts[-1])):
            digest = hashlib.sha1()
            for part in parts:
                _hash_value(digest, part[index])
            pairs = (pairs + int.from_bytes(digest.digest()[:8], "big")) % 2 ** 64
        count += len(parts[-1])
        for label, number in zip(*np.unique(parts[-1], return_counts=True)):
            labels[str(label)] = labels.get(str(label), 0) + int(number)
    return {"examples": count, "pairs": f"{pairs:016x}", "labels": dict(sorted(labels.items()))}


def _hash_value(digest, value):
    """Feeds one example's part (an array, or a text as bytes) to `digest`."""
    if isinstance(value, bytes):
        digest.update(value + b"\0")
        return
    value = np.asarray(value)
    if value.dtype == object:  # texts (tf.string)
        for text in value.ravel():
            digest.update(bytes(text) + b"\0")
    else:
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
