"""keras-tuner search over freeze depth and learning rates, sharing the head phase.

A plain keras-tuner loop trains the head from scratch in every trial. Here the
backbone's features are computed once per search (the head phase trains on
them), the head phase runs once per distinct head setting (head learning
rate, dropout) and its weights are kept on disk, and every trial that
fine-tunes from that head setting starts from those weights. What is searched
(`TransferHyperModel`), how the next trial is chosen (keras-tuner's oracles)
and who runs the trials (keras-tuner's tuners) stay separate: the hypermodel
works with any keras-tuner Tuner.
"""

import contextlib
import dataclasses
import gc
import hashlib
import json
import os
import time
import warnings
from typing import Dict, List, Optional

import keras
import keras_tuner as kt
import numpy as np

from tftransfer import checks, files
from tftransfer.data.bundle import DatasetBundle
from tftransfer.models import build_classifier
from tftransfer.training import feature_cache
from tftransfer.training.budgets import default_budget
from tftransfer.training.freezing import backbone_blocks, find_backbone, freeze, unfreeze
from tftransfer.training.optimizers import discriminative_multipliers, layerwise_optimizer
from tftransfer.training.schedules import make_schedule
from tftransfer.training.trainer import (FINE_TUNE_LEARNING_RATE, HEAD_LEARNING_RATE,
                                         TEXT_FINE_TUNE_LEARNING_RATE)

SEARCHABLE = ("unfreeze_blocks", "fine_tune_learning_rate", "head_learning_rate", "dropout_rate",
              "layer_decay")
#: Labelled examples (train + validation) below which `folds="auto"` selects by k-fold.
FOLDS_BELOW = 1000
#: The folds `folds="auto"` uses.
AUTO_FOLDS = 3
#: `fit`'s warmup, shared by every trial's schedules.
WARMUP_FRACTION = 0.05
TUNERS = ("bayesian", "hyperband", "random")
OBJECTIVES = ("val_accuracy", "val_loss", "accuracy", "loss")
HEAD_LAYERS = ("head_dense_", "predictions")


def rss_mb():
    """This process's resident memory in MB (Linux /proc, else psutil, else 0)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError):
        try:
            import psutil

            return psutil.Process().memory_info().rss / 2 ** 20
        except ImportError:
            return 0.0


def _define(hp, name, spec, start=None):
    """Declares one hyperparameter from a compact spec; `start` is its default
    (the first trial's value) when the spec holds it."""
    if isinstance(spec, (list, tuple)) and len(spec) in (2, 3) and not isinstance(spec, list):
        low, high = spec[0], spec[1]
        sampling = spec[2] if len(spec) == 3 else "linear"
        inside = start is not None and low <= start <= high
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return hp.Int(name, low, high, default=int(start) if inside else None)
        return hp.Float(name, float(low), float(high), sampling=sampling,
                        default=float(start) if inside else None)
    if isinstance(spec, list):
        return hp.Choice(name, spec, default=start if start in spec else None)
    return hp.Fixed(name, spec)


def _defaults_first(oracle_class):
    """`oracle_class` whose first trial is the hyperparameters' defaults (fit's recipe)."""

    class DefaultsFirst(oracle_class):
        def populate_space(self, trial_id):
            values = dict(self.hyperparameters.values)
            if values and not self._duplicate(values):
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
            return super().populate_space(trial_id)

    DefaultsFirst.__name__ = oracle_class.__name__
    return DefaultsFirst


class _TransferTuner(kt.Tuner):
    """A keras-tuner Tuner that scores a trial by k-fold cross-validation when
    given one hypermodel per fold (else as keras-tuner does)."""

    def __init__(self, *args, fold_models=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fold_models = list(fold_models or [])

    def run_trial(self, trial, *args, **kwargs):
        if not self.fold_models:
            return super().run_trial(trial, *args, **kwargs)
        histories = []
        for hypermodel in self.fold_models:
            keras.backend.clear_session()
            model = hypermodel.build(trial.hyperparameters)
            histories.append(hypermodel.fit(trial.hyperparameters, model,
                                            epochs=kwargs.get("epochs")))
        # keras-tuner averages the folds' best-epoch objectives.
        return histories


class TransferHyperModel(kt.HyperModel):
    """A keras-tuner HyperModel for transfer learning.

    Any keras-tuner Tuner accepts it. `build(hp)` returns the classifier
    with its backbone's top `unfreeze_blocks` blocks open; `fit(hp, model,
    ...)` runs the head phase (shared between trials with the same head
    setting, trained on features computed once) and then fine-tunes.

    Args:
        backbone: str or Keras object. As in `build_classifier()`; for data
            of strings, a text encoder as in `build_text_classifier()`. A Keras
            model is cloned for every trial with the weights it had when
            the hypermodel was made, so every trial starts from the same
            pretrained weights whatever the order, and the object you pass
            is left as it was. (A layer that cannot be cloned is restored to
            those weights before each build instead, and holds the last
            built model's weights afterwards.)
        data: `DatasetBundle`. Needs a validation split for `val_*`
            objectives.
        search_space: dict or None. Name -> spec: `(low, high)` ints or
            floats (`(low, high, "log")` for log sampling), a list (a
            choice), or a single value (fixed). Names: `unfreeze_blocks`,
            `fine_tune_learning_rate`, `head_learning_rate`,
            `dropout_rate`, `layer_decay`. Entries replace the defaults:
            unfreeze blocks 0..N (all of them), fine-tune learning rate
            log-uniform 3e-5..3e-3 (1e-5..3e-4 for a text encoder), head
            learning rate in {1e-3, 3e-3}, dropout in {0.0, 0.2, 0.5},
            layer-wise decay in {1.0, 0.8}.
        head_epochs: int or `"auto"` (`fit`'s data-sized budget). Defaults
            to `"auto"`.
        fine_tune_epochs: int or `"auto"`. Defaults to `"auto"`.
        weights: as in `build_classifier()`. Defaults to `"imagenet"`.
        cache_dir: str or None. Where the shared head weights go.
        seed: int. Defaults to `1337`.
        activation_cache_mb: int. Memory for the frozen part's activations:
            fine-tuning trains only the open blocks and the head, on the
            activations at the first open block, computed once for all the
            searched depths that fit in this budget (the others run the whole
            model). `0` turns it off. Defaults to `1024`.

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> hypermodel = tftransfer.TransferHyperModel("MobileNetV2", data)  # doctest: +SKIP
    >>> tuner = keras_tuner.RandomSearch(hypermodel, "val_accuracy", 5)  # doctest: +SKIP
    """

    def __init__(self, backbone, data, *, search_space=None, head_epochs="auto",
                 fine_tune_epochs="auto", weights="imagenet", cache_dir=None, seed=1337,
                 verbose=0, activation_cache_mb=1024):
        super().__init__(name="transfer")
        if not isinstance(data, DatasetBundle):
            raise TypeError("data: expected a DatasetBundle (tftransfer.data.from_*); "
                            f"received {type(data).__name__}.")
        self.backbone = backbone
        # A Keras object is never trained in place: each trial builds on a copy with the
        # weights it had now (`_trial_backbone`), so trials do not depend on their order
        # and the caller's object is left as it was.
        self._pristine = None
        if isinstance(backbone, keras.layers.Layer):
            self._pristine = ([keras.ops.convert_to_numpy(w).copy() for w in backbone.weights],
                              [layer.trainable for layer in _all_layers(backbone)])
        self.data = data
        self.weights = weights
        # Strings in: a text encoder (`build_text_classifier`), else images.
        self.text = _is_text(data)
        if head_epochs != "auto":
            checks.check_int(head_epochs, "head_epochs")
        if fine_tune_epochs != "auto":
            checks.check_int(fine_tune_epochs, "fine_tune_epochs", minimum=1)
        steps = int(data.train.cardinality())
        # `fit`'s data-sized budget (tftransfer.training.budgets) unless given.
        self.budget = default_budget(steps if steps > 0 else None, head_epochs=head_epochs,
                                     fine_tune_epochs=fine_tune_epochs)
        self.head_epochs = self.budget.head_epochs
        self.fine_tune_epochs = self.budget.fine_tune_epochs
        checks.check_number(activation_cache_mb, "activation_cache_mb", low=0.0)
        self.seed = seed
        self.verbose = verbose
        self.cache_dir = cache_dir
        self.num_blocks = self._count_blocks()
        self.search_space = self._space(search_space or {})
        self._features = None
        self.activation_cache_mb = activation_cache_mb
        self._activations = {}  # cut tensor name -> (train array, validation array)
        self._activation_labels = None
        self.head_runs = 0
        self.log: List[dict] = []
        self._cache_checked = False

    def _trial_backbone(self):
        """The backbone argument for one build: a name as it is; a Keras model as a
        fresh clone holding the weights it had when the search began; another
        Keras layer restored to those weights (it cannot be cloned)."""
        if self._pristine is None:
            return self.backbone
        values, _ = self._pristine
        if isinstance(self.backbone, keras.Model):
            try:
                clone = keras.models.clone_model(self.backbone)
            except (ValueError, TypeError, NotImplementedError):
                clone = None  # a subclassed model: restore the original instead
            if clone is not None and len(clone.weights) == len(values):
                clone.set_weights(values)
                return clone
        self.restore_backbone()
        return self.backbone

    def restore_backbone(self):
        """Puts a Keras backbone argument back as it was given (weights and trainable flags)."""
        if self._pristine is None:
            return
        values, flags = self._pristine
        for weight, value in zip(self.backbone.weights, values):
            weight.assign(value)
        for layer, flag in zip(_all_layers(self.backbone), flags):
            layer.trainable = flag

    def build_classifier(self, dropout_rate, weights=None):
        """The trial's classifier: `build_text_classifier` for text data, else
        `build_classifier`, on `_trial_backbone()`."""
        if self.text:
            from tftransfer.models import build_text_classifier

            return build_text_classifier(self._trial_backbone(), self.data.num_classes,
                                         dropout_rate=dropout_rate,
                                         weights=None if weights is None else "pretrained")
        return build_classifier(self._trial_backbone(), self.data.num_classes,
                                image_size=self.data.image_size, weights=weights,
                                dropout_rate=dropout_rate)

    def _count_blocks(self):
        probe = self.build_classifier(0.2, weights=None)
        try:
            count = len(backbone_blocks(probe))
        except ValueError:
            count = 1  # a TF-Hub module: frozen (0) or fine-tuned whole (1)
        del probe
        keras.backend.clear_session()
        return count

    def _space(self, given):
        if not isinstance(given, dict):
            raise TypeError("search_space: expected a dict of name -> spec; received "
                            f"{type(given).__name__}.")
        unknown = sorted(set(given) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"search_space: unknown hyperparameter(s) {unknown}; the "
                             f"searchable ones are {list(SEARCHABLE)}.")
        space = {
            "unfreeze_blocks": (0, self.num_blocks),
            # Transformers fine-tune around 5e-5 (BERT's 2e-5..5e-5), convolutions ~1e-3.
            "fine_tune_learning_rate": (1e-5, 3e-4, "log") if self.text else (3e-5, 3e-3, "log"),
            "head_learning_rate": [1e-3, 3e-3],
            "dropout_rate": [0.0, 0.2, 0.5],
            "layer_decay": [1.0, 0.8],
        }
        space.update(given)
        blocks = space["unfreeze_blocks"]
        highest = max(blocks) if isinstance(blocks, (list, tuple)) else blocks
        if highest > self.num_blocks:
            raise ValueError(f"search_space: unfreeze_blocks up to {highest}, but the "
                             f"backbone has {self.num_blocks} blocks.")
        return space

    def start_values(self):
        """`fit`'s defaults in this space's terms: the first trial's values."""
        return {"unfreeze_blocks": self.num_blocks,
                "fine_tune_learning_rate": (TEXT_FINE_TUNE_LEARNING_RATE if self.text
                                            else FINE_TUNE_LEARNING_RATE),
                "head_learning_rate": HEAD_LEARNING_RATE, "dropout_rate": 0.2,
                "layer_decay": 1.0}

    def build(self, hp):
        start = self.start_values()
        values = {name: _define(hp, name, spec, start.get(name))
                  for name, spec in self.search_space.items()}
        keras.utils.set_random_seed(self.seed)  # the same backbone (and head init) every trial
        model = self.build_classifier(float(values["dropout_rate"]), weights=self.weights)
        self._unfreeze(model, int(values["unfreeze_blocks"]))
        model.compile(keras.optimizers.Adam(float(values["fine_tune_learning_rate"])),
                      "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    @staticmethod
    def _unfreeze(model, blocks):
        backbone = find_backbone(model)
        if blocks == 0:
            freeze(model)
        elif isinstance(backbone, keras.Model):
            unfreeze(model, blocks=blocks)
        else:
            unfreeze(model)

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

    # --- fine-tuning on cached activations -------------------------------------------

    def _depths(self):
        spec = self.search_space["unfreeze_blocks"]
        if isinstance(spec, tuple):
            return list(range(int(spec[0]), int(spec[1]) + 1))
        return sorted({int(v) for v in (spec if isinstance(spec, list) else [spec])})

    def _cached_fine_tuning(self, model, blocks):
        """`(suffix model, train, validation)` on cached activations, or None.

        None when the part before the open blocks is not frozen and
        deterministic (augmented data, a random layer, a backbone in training
        mode or not Functional) or its activations do not fit the budget.
        """
        if not self.activation_cache_mb or self.data.augmented:
            return None
        backbone = find_backbone(model)
        shuffle = feature_cache.shuffles(self.data.train)
        if blocks == 0:
            if feature_cache.why_not_cacheable(model) is not None:
                return None
            (x, y), validation = self._features_for(model)
            _, head = feature_cache.split_model(model)
            train = feature_cache.feature_dataset(x, y, batch_size=self._batch_size(),
                                                  shuffle=shuffle, seed=self.seed)
            validation = (feature_cache.feature_dataset(
                *validation, batch_size=self._batch_size(), shuffle=False, seed=None)
                if validation is not None else None)
            return head, train, validation
        if not isinstance(backbone, keras.Model) or not getattr(backbone, "inference_mode", False):
            return None
        if self.text:
            return None  # token activations: as long as each batch's longest text
        for layer in model.layers[:model.layers.index(backbone)]:
            for sublayer in [layer] + list(layer._flatten_layers(include_self=False)):
                if isinstance(sublayer, feature_cache.RANDOM_LAYERS):
                    return None
        cut = feature_cache.trainable_cut(backbone)
        if not cut or not self._activations_for(model, blocks, cut):
            return None
        (y, vy) = self._activation_labels
        names = [name for name, _ in cut]
        suffix = feature_cache.suffix_model(model, cut)
        train = feature_cache.activation_dataset(
            [self._activations[name][0] for name in names], y,
            batch_size=self._batch_size(), shuffle=shuffle, seed=self.seed)
        validation = (feature_cache.activation_dataset(
            [self._activations[name][1] for name in names], vy,
            batch_size=self._batch_size(), shuffle=False, seed=None)
            if vy is not None else None)
        return suffix, train, validation

    def _batch_size(self):
        if not hasattr(self, "_batch"):
            inputs, _ = next(iter(self.data.train.take(1)))
            self._batch = int(inputs.shape[0])
        return self._batch

    def _examples(self):
        return _labelled_examples(self.data) or 1

    def _activations_for(self, model, blocks, cut):
        """Activations at every searched depth's cut, in one pass; False if over budget."""
        if all(name in self._activations for name, _ in cut):
            return True
        path = os.path.join(self.cache_dir, "activations.npz") if self.cache_dir else None
        if path and os.path.exists(path):
            stored = np.load(path)
            if all(f"{name}.x" in stored.files and
                   stored[f"{name}.x"].shape[1:] == tuple(t.shape[1:]) for name, t in cut):
                for name in {f.rsplit(".", 1)[0] for f in stored.files if "." in f}:
                    self._activations[name] = (
                        stored[f"{name}.x"],
                        stored[f"{name}.vx"] if f"{name}.vx" in stored.files else None)
                self._activation_labels = (stored["y"],
                                           stored["vy"] if "vy" in stored.files else None)
                return True
        backbone = find_backbone(model)
        budget = self.activation_cache_mb * 2 ** 20
        examples = self._examples()
        chosen, used = {}, 0
        # The deepest cuts are the smallest: take depths from 1 up while they fit.
        for depth in sorted(d for d in self._depths() if d > 0):
            self._unfreeze(model, depth)
            tensors = dict(feature_cache.trainable_cut(backbone))
            new = {name: t for name, t in tensors.items() if name not in chosen}
            size = sum(int(np.prod(t.shape[1:])) * 4 for t in new.values()) * examples
            if used + size > budget:
                continue
            chosen.update(new)
            used += size
        self._unfreeze(model, blocks)
        if not all(name in chosen for name, _ in cut):
            return False
        names = list(chosen)
        prefix = feature_cache.prefix_model(model, [chosen[name] for name in names])
        train, y = feature_cache.compute_activations(prefix, self.data.train)
        validation, vy = (feature_cache.compute_activations(prefix, self.data.validation)
                          if self.data.validation is not None else (None, None))
        for i, name in enumerate(names):
            self._activations[name] = (train[i], validation[i] if validation else None)
        self._activation_labels = (y, vy)
        if path:
            arrays = {"y": y}
            if vy is not None:
                arrays["vy"] = vy
            for name, (x, vx) in self._activations.items():
                arrays[f"{name}.x"] = x
                if vx is not None:
                    arrays[f"{name}.vx"] = vx
            os.makedirs(self.cache_dir, exist_ok=True)
            with files.replacing(path) as temporary:
                np.savez(temporary, **arrays)
        return True

    def fit(self, hp, model, *args, **kwargs):
        start, rss_before = time.time(), rss_mb()
        kwargs.pop("x", None)
        epochs = kwargs.pop("epochs", None) or self.fine_tune_epochs
        initial_epoch = kwargs.pop("initial_epoch", 0)
        callbacks = kwargs.pop("callbacks", [])
        blocks = int(hp.get("unfreeze_blocks"))
        self._check_cache(model)
        # The head phase needs the backbone frozen: freeze, train or load the
        # head, then open the searched blocks again and recompile.
        freeze(model)
        reused = self._train_head(hp, model)
        self._unfreeze(model, blocks)
        head_start = [w.numpy().copy() for layer in self._head_layers(model)
                      for w in layer.weights]
        cached = self._cached_fine_tuning(model, blocks)
        if cached is not None:
            # Only the open blocks and the head run, on activations at the first
            # open block; callbacks see (and checkpoint) the whole classifier.
            trained, train, validation = cached
            callbacks = [feature_cache.ForwardTo(callback, model) for callback in callbacks]
        else:
            trained, train, validation = model, self.data.train, self.data.validation
        # fit's fine-tuning phase: Adam, cosine schedule with warmup, and
        # layer-wise decay (`discriminative_lr`) below 1.
        steps = int(train.cardinality())
        optimizer = keras.optimizers.Adam(make_schedule(
            "cosine", float(hp.get("fine_tune_learning_rate")),
            steps_per_epoch=steps if steps > 0 else None, epochs=epochs - initial_epoch,
            warmup_fraction=WARMUP_FRACTION))
        decay = float(hp.get("layer_decay")) if "layer_decay" in hp.values else 1.0
        if blocks and decay < 1.0:
            optimizer = layerwise_optimizer(optimizer, discriminative_multipliers(model, decay))
        trained.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = trained.fit(train, validation_data=validation, epochs=epochs,
                              initial_epoch=initial_epoch, callbacks=callbacks,
                              verbose=self.verbose, shuffle=False)
        trainable = [layer.name for layer in find_backbone(model).layers
                     if getattr(layer, "trainable", False) and layer.trainable_weights] \
            if isinstance(find_backbone(model), keras.Model) else []
        self.log.append({
            "hyperparameters": dict(hp.values), "head_reused": reused,
            "fine_tuned_on_cached_activations": cached is not None,
            "head_start_checksum": float(sum(float(np.abs(w).sum()) for w in head_start)),
            "trainable_backbone_layers": trainable,
            "seconds": round(time.time() - start, 3),
            "rss_mb": round(rss_mb(), 1), "rss_growth_mb": round(rss_mb() - rss_before, 1),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        })
        if self.cache_dir and os.environ.get(_ISOLATED_ENV):
            os.makedirs(self.cache_dir, exist_ok=True)
            with open(os.path.join(self.cache_dir, "trial_log.jsonl"), "a") as handle:
                handle.write(json.dumps(self.log[-1]) + "\n")
        gc.collect()
        return history



def _all_layers(layer):
    """The layer and every layer inside it, in a fixed order."""
    return [layer] + [inner for inner in layer._flatten_layers(include_self=False)]


def _data_digest(dataset):
    """An order-free digest of a dataset's content (shuffling does not change it)."""
    if dataset is None:
        return None
    count, total, squares, labels = 0, 0.0, 0.0, {}
    for inputs, targets in dataset:
        if getattr(inputs, "dtype", None) == "string":
            # Texts: an order-free sum of each text's hash (and of its squares).
            inputs = [int.from_bytes(hashlib.sha1(text).digest()[:6], "big") / 2 ** 48
                      for text in np.asarray(inputs).ravel()]
        values = np.asarray(inputs, dtype=np.float64) if not isinstance(inputs, dict) else \
            np.concatenate([np.asarray(v, np.float64).ravel() for v in inputs.values()])
        count += len(targets)
        total += float(values.sum())
        squares += float(np.square(values).sum())
        for label, number in zip(*np.unique(np.asarray(targets), return_counts=True)):
            labels[str(label)] = labels.get(str(label), 0) + int(number)
    return {"examples": count, "sum": float(f"{total:.8g}"), "squares": float(f"{squares:.8g}"),
            "labels": dict(sorted(labels.items()))}


@contextlib.contextmanager
def atomic_search_files():
    """keras-tuner's JSON state and trial checkpoints, written atomically.

    keras-tuner writes `oracle.json`, `trial.json` and each trial's best
    weights in place: a kill mid-write leaves a torn file that the next
    `reload()` cannot read. Inside this block they are written to a temporary
    name and renamed.
    """
    from keras_tuner.src import utils as kt_utils
    from keras_tuner.src.engine import tuner_utils

    original_json, original_save = kt_utils.save_json, tuner_utils.SaveBestEpoch._save_model

    def save_json(path, obj):
        text = json.dumps(obj)
        with files.replacing(path) as temporary:
            with open(temporary, "w") as handle:
                handle.write(text)
        return text

    def save_model(self):
        with files.replacing(self.filepath) as temporary:
            self.model.save_weights(temporary)

    kt_utils.save_json, tuner_utils.SaveBestEpoch._save_model = save_json, save_model
    try:
        yield
    finally:
        kt_utils.save_json, tuner_utils.SaveBestEpoch._save_model = original_json, original_save


@dataclasses.dataclass
class TuningResult:
    """What `tftransfer.tune()` returns.

    Attributes:
        best_model: `keras.Model` or None (None on a worker process): the
            best trial's model, or with `refit`, the best configuration
            trained by `fit()` on train + validation.
        best_hyperparameters: dict.
        trials: list of dicts, one per finished trial: id, hyperparameters,
            score, and (for trials this process ran) seconds, RSS and
            whether the head was reused.
        plot_path: str or None. Objective against unfreeze depth and
            fine-tuning learning rate.
        head_phases_run: int. Head phases this process trained.
        tuner: the keras-tuner Tuner.
        selection: str. How trials were scored: `"validation split"` or
            `"<k>-fold cross-validation"`.
        folds: int or None. The folds, when cross-validated.
        refit: bool. Whether `best_model` was refit on all labelled data.
        budget: dict. The epochs of each trial's phases and the rule behind
            them (`tftransfer.training.budgets`).
        refit_training: `TrainingResult` or None. The refit's history and
            budget, when refit.
        kept_defaults: bool. The choice is `fit`'s defaults (the first
            trial): with cross-validation, the best other trial did not score
            at least as well on every fold and better on average.
    """

    best_model: Optional[keras.Model]
    best_hyperparameters: Dict[str, object]
    trials: List[dict]
    plot_path: Optional[str]
    head_phases_run: int
    tuner: object
    selection: str = "validation split"
    folds: Optional[int] = None
    refit: bool = False
    budget: Optional[dict] = None
    refit_training: Optional[object] = None
    kept_defaults: bool = False


def _is_text(data):
    """Whether the bundle's inputs are strings (a text task)."""
    import tensorflow as tf

    spec = data.train.element_spec[0]
    return getattr(spec, "dtype", None) == tf.string


def _labelled_examples(data):
    return sum(sum(data.counts.get(split, {}).values()) for split in ("train", "validation"))


def _resolve_folds(folds, data, objective, tuner, isolate_trials):
    """The number of folds (None: the validation split), checked."""
    if folds is None:
        return None
    if folds == "auto":
        counts = [data.counts.get("train", {}).get(name, 0)
                  + data.counts.get("validation", {}).get(name, 0) for name in data.class_names]
        small = _labelled_examples(data) < FOLDS_BELOW
        usable = (data.task == "multiclass" and not data.augmented and tuner != "hyperband"
                  and not isolate_trials and objective.startswith("val_")
                  and min(counts or [0]) >= AUTO_FOLDS)
        return AUTO_FOLDS if small and usable else None
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected 'auto', None or an int of at least 2; received "
                         f"{folds!r}.")
    problems = []
    if data.task != "multiclass":
        problems.append(f"the task is {data.task!r} (folds are stratified by class)")
    if data.augmented:
        problems.append("the training split is augmented in the pipeline (folds hold the "
                        "labelled images in memory as they are)")
    if tuner == "hyperband":
        problems.append("tuner='hyperband' scores partial trials")
    if isolate_trials:
        problems.append("isolate_trials=True")
    if not objective.startswith("val_"):
        problems.append(f"objective {objective!r} is a training metric")
    if problems:
        raise ValueError(f"folds={folds}: cross-validation cannot be used here: "
                         + "; ".join(problems) + ". Pass folds=None to choose on the "
                         "validation split.")
    return folds


def _labelled_arrays(data):
    """Train and validation examples as `(x, y)` arrays, in memory."""
    xs, ys = [], []
    for split in (data.train, data.validation):
        if split is None:
            continue
        for inputs, labels in split:
            xs.append(np.asarray(inputs))
            ys.append(np.asarray(labels))
    return np.concatenate(xs), np.concatenate(ys)


def _fold_bundles(x, y, data, folds, seed, batch_size):
    """`folds` bundles: each holds one stratified fold out as its validation split."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=int)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        fold_of[members] = (np.arange(len(members)) + int(rng.integers(folds))) % folds
    bundles = []
    for fold in range(folds):
        train, held = fold_of != fold, fold_of == fold
        counts = {split: {name: int(np.sum(y[mask] == index))
                          for index, name in enumerate(data.class_names)}
                  for split, mask in (("train", train), ("validation", held))}
        bundles.append(dataclasses.replace(
            data, test=None, counts=counts, augmented=False,
            train=tf.data.Dataset.from_tensor_slices((x[train], y[train])).shuffle(
                int(train.sum()), seed=seed + fold, reshuffle_each_iteration=True).batch(
                batch_size),
            validation=tf.data.Dataset.from_tensor_slices((x[held], y[held])).batch(
                batch_size)))
    return bundles


def _fold_scores(fold_models, values, objective):
    """Each fold's best-epoch objective for the trial with these values, or None."""
    pick = min if objective.endswith("loss") else max
    scores = []
    for model in fold_models:
        runs = [entry for entry in model.log if entry["hyperparameters"] == values]
        if not runs or objective not in runs[-1]["history"]:
            return None
        scores.append(pick(runs[-1]["history"][objective]))
    return np.asarray(scores)


def _keep_defaults_unless_beaten(best, defaults, fold_models, objective):
    """`(values, kept_defaults)`: fit's defaults stay the choice unless the best
    trial scores at least as well on every fold and better on average.

    With a few images per fold the best of several trials wins partly by
    chance (its mean is biased upwards by the choice itself); asking it to
    beat the fixed recipe fold by fold keeps the search from trading a known
    recipe for noise.
    """
    if best == defaults:
        return best, True
    mine, theirs = _fold_scores(fold_models, best, objective), _fold_scores(
        fold_models, defaults, objective)
    if mine is None or theirs is None:
        return best, False
    gain = (theirs - mine) if objective.endswith("loss") else (mine - theirs)
    if np.all(gain >= 0) and gain.mean() > 0:
        return best, False
    return defaults, True


def _refit(hypermodel, data, values, arrays, *, head_epochs, fine_tune_epochs, seed, verbose):
    """The chosen configuration trained by `fit()` on train + validation."""
    from tftransfer.training.trainer import fit

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = hypermodel.build_classifier(float(values.get("dropout_rate", 0.2)),
                                        weights=hypermodel.weights)
    blocks = int(values.get("unfreeze_blocks", hypermodel.num_blocks))
    decay = float(values.get("layer_decay", 1.0))
    if arrays is not None:
        labelled = arrays
    else:
        batch = hypermodel._batch_size()
        merged = data.train.unbatch()
        if data.validation is not None:
            merged = merged.concatenate(data.validation.unbatch())
        labelled = merged.shuffle(min(_labelled_examples(data), 2048), seed=seed,
                                  reshuffle_each_iteration=True).batch(batch)
    return fit(model, labelled, head_epochs=head_epochs,
               fine_tune_epochs=fine_tune_epochs if blocks else 0,
               unfreeze_blocks="all" if blocks >= hypermodel.num_blocks else max(blocks, 1),
               head_learning_rate=float(values.get("head_learning_rate", HEAD_LEARNING_RATE)),
               fine_tune_learning_rate=float(values.get(
                   "fine_tune_learning_rate",
                   hypermodel.start_values()["fine_tune_learning_rate"])),
               discriminative_lr=decay if blocks and decay < 1.0 else None,
               batch_size=hypermodel._batch_size(), seed=seed, verbose=verbose)


def tune(backbone, data, *, search_space=None, tuner="random", max_trials=10,
         objective="val_accuracy", directory="tuning", project_name=None, overwrite=False,
         head_epochs="auto", fine_tune_epochs="auto", folds="auto", refit="auto",
         executions_per_trial=1, weights="imagenet", isolate_trials=False, seed=1337,
         verbose=0, activation_cache_mb=1024):
    """Searches freeze depth and learning rates with keras-tuner, sharing the head phase.

    The first trial is `fit()`'s defaults (the whole backbone, BatchNorm
    frozen, at 1e-3 after a head at 3e-3, dropout 0.2), and every trial
    trains as `fit()` does (its data-sized budget, cosine schedules with
    warmup, layer-wise decay when searched), so the search starts from the
    fixed recipe and keeps it unless another configuration scores better.
    With fewer than 1,000 labelled examples (`folds="auto"`), a 20 %
    hold-out is a handful of images and picks by noise: each trial is then
    scored by 3-fold stratified cross-validation over train + validation;
    the best configuration replaces `fit`'s defaults only if it scores at
    least as well on every fold and better on average (the best of several
    noisy scores is biased upwards by the choice itself), and the choice is
    trained again by `fit()` on all of them (`refit`).

    Backbone features are computed once per search (per fold); each distinct
    head setting (head learning rate, dropout) trains its head once, on those
    features, and every trial that fine-tunes from it starts from the same
    head weights (kept under `<directory>/<project_name>/heads/`).
    Fine-tuning, too, reuses what does not change: the frozen part's
    activations at the first open block are computed once for all searched
    depths, and each trial trains only its open blocks and head on them. The
    session is cleared between trials. Run again with `overwrite=False`
    after a kill and the search goes on without repeating finished trials.
    With KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT
    set, processes act as keras-tuner's chief (`KERASTUNER_TUNER_ID=chief`,
    which serves the oracle) and workers (any other id), for a search across
    machines.

    Args:
        backbone: str or Keras object. As in `build_classifier()`, or a
            text encoder as in `build_text_classifier()` when the data's
            inputs are strings (every trial then takes raw strings). Every
            trial starts from the same pretrained weights, and a Keras
            object you pass is left as it was.
        data: `DatasetBundle` with a validation split, or an `(x, y)` pair
            of images (or texts) and integer labels as `fit()` takes: folds are
            drawn from them (or a seeded 20 % validation split, from 1,000
            examples) and the refit trains on them in the order given, so a
            search that keeps `fit`'s defaults returns the model
            `fit(model, (x, y), seed=seed)` would (on the same initial weights).
        search_space: dict or None. See `TransferHyperModel`. The default
            searches unfreeze depth 0 (head only) to all blocks, the
            fine-tuning learning rate 3e-5..3e-3 (log; 1e-5..3e-4 for a text
            encoder, whose first trial fine-tunes at 5e-5), head learning rate
            {1e-3, 3e-3}, dropout {0, 0.2, 0.5} and layer-wise decay
            {1.0, 0.8}.
        tuner: `"random"`, `"bayesian"` or `"hyperband"`. Defaults to
            `"random"`. (Random and Bayesian start with `fit`'s defaults.)
        max_trials: int. Defaults to `10`.
        objective: `"val_accuracy"`, `"val_loss"`, `"accuracy"` or
            `"loss"`. Defaults to `"val_accuracy"`.
        directory: str. Defaults to `"tuning"`.
        project_name: str or None. Defaults to `"<backbone>_search"`.
        overwrite: bool. Start over. Defaults to `False` (resume).
        head_epochs: int or `"auto"` (`fit`'s data-sized budget, on each
            trial's training examples). Defaults to `"auto"`.
        fine_tune_epochs: int or `"auto"`. Defaults to `"auto"`.
        folds: `"auto"`, None or an int >= 2. Score each trial by k-fold
            stratified cross-validation over train + validation (held in
            memory). `"auto"`: 3 folds below 1,000 labelled examples when the
            data allows it (a multiclass bundle without pipeline
            augmentation, a `val_*` objective, random or Bayesian search,
            trials in this process), else the validation split. Defaults to
            `"auto"`.
        refit: `"auto"` or bool. Train the best configuration again with
            `fit()` on train + validation and return that model. `"auto"`:
            when cross-validated (no trial model is the answer then).
            Defaults to `"auto"`.
        executions_per_trial: int. Defaults to `1`.
        weights: as in `build_classifier()`. Defaults to `"imagenet"`.
        isolate_trials: bool. Run each trial in its own process, for the memory
            that Keras and TensorFlow keep after a trial even when the session
            is cleared (about 35 MB per MobileNetV2 trial with Keras 3.15).
            This process serves keras-tuner's oracle; the data is written once
            to `<directory>/<project_name>/data/` for the trial processes, and
            the backbone must be a name or handle. Defaults to `False`.
        seed: int. Defaults to `1337`.
        verbose: int. Defaults to `0`.
        activation_cache_mb: int. Fine-tuning trains only the open blocks and
            the head, on the frozen part's activations computed once per
            search, for the depths whose activations fit in this many MB
            (train and validation splits together). `0` turns it off.
            Defaults to `1024`.

    Returns:
        A `TuningResult`.

    Example:

    >>> import numpy as np, tftransfer
    >>> data = tftransfer.data.from_arrays(
    ...     np.random.uniform(0, 255, (24, 16, 16, 3)), np.arange(24) % 2, seed=0)
    >>> result = tftransfer.tune("FashionCNN", data, max_trials=2, head_epochs=2,
    ...                          fine_tune_epochs=2, directory="/tmp/tftransfer_tune_doc",
    ...                          overwrite=True)
    >>> result.selection, result.refit, result.best_model.output_shape
    ('3-fold cross-validation', True, (None, 2))
    """
    directory = checks.check_path(directory, "directory")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials: expected an int of at least 1; received {max_trials!r}.")
    if tuner not in TUNERS:
        raise ValueError(f"tuner: expected one of {TUNERS}; received {tuner!r}.")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: the model reports {list(OBJECTIVES)}; received "
                         f"{objective!r}.")
    given = None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        given = tuple(np.asarray(part) for part in data)
        if len(given[0]) != len(given[1]):
            raise ValueError(f"data: x and y have different lengths ({len(given[0])} and "
                             f"{len(given[1])}).")
        from tftransfer.data.images import from_arrays
        from tftransfer.data.text import from_texts

        if given[0].dtype.kind in "USO":
            given = (given[0].astype(str), given[1])
            data = from_texts(list(given[0]), given[1], validation_split=0.2, seed=seed)
        else:
            data = from_arrays(*given, validation_split=0.2, seed=seed)
    if isinstance(data, DatasetBundle) and objective.startswith("val_") and data.validation is None:
        raise ValueError(f"objective: {objective!r} needs a validation split, and the data has "
                         "none; build it with validation_split > 0 or use 'loss'/'accuracy'.")
    if refit not in ("auto", True, False):
        raise ValueError(f"refit: expected 'auto', True or False; received {refit!r}.")
    if not isinstance(data, DatasetBundle):
        raise TypeError("data: expected a DatasetBundle (tftransfer.data.from_*) or an (x, y) "
                        "pair of arrays; "
                        f"received {type(data).__name__}.")
    folds = _resolve_folds(folds, data, objective, tuner, isolate_trials)
    refit = bool(folds) if refit == "auto" else refit
    if refit and isolate_trials:
        raise ValueError("refit: not with isolate_trials=True (the backbone is rebuilt in the "
                         "trial processes); load the best trial's model instead.")
    name = backbone if isinstance(backbone, str) else getattr(backbone, "name", "model")
    project_name = project_name or "".join(
        c if c.isalnum() else "_" for c in str(name).split("/")[-1]) + "_search"
    if not isinstance(project_name, str) or project_name in ("", ".", "..") or any(
            sep in project_name for sep in ("/", "\\", os.sep)):
        raise ValueError("project_name: expected a plain folder name inside `directory` (no "
                         f"'/', '\\' or '..'); received {project_name!r}.")
    project_dir = os.path.join(directory, project_name)
    settings = dict(search_space=search_space, head_epochs=head_epochs,
                    fine_tune_epochs=fine_tune_epochs, weights=weights, seed=seed,
                    verbose=verbose, activation_cache_mb=activation_cache_mb)
    hypermodel = TransferHyperModel(backbone, data, cache_dir=os.path.join(project_dir, "heads"),
                                    **settings)
    arrays, fold_models = given, []
    if folds:
        arrays = given or _labelled_arrays(data)
        fold_models = [TransferHyperModel(backbone, bundle, cache_dir=os.path.join(
            project_dir, "heads", f"fold{index}"), **settings)
            for index, bundle in enumerate(_fold_bundles(*arrays, data, folds, seed,
                                                         hypermodel._batch_size()))]
    # What a killed search was writing (under temporary names) goes first.
    files.remove_temporaries(project_dir, recursive=True)
    with atomic_search_files():
        direction = "min" if objective.endswith("loss") else "max"
        target = kt.Objective(objective, direction)
        common = dict(directory=directory, project_name=project_name, overwrite=overwrite)
        if tuner == "hyperband":
            search = kt.Hyperband(hypermodel, max_epochs=max(hypermodel.fine_tune_epochs, 2),
                                  executions_per_trial=executions_per_trial, objective=target,
                                  seed=seed, **common)
        else:
            oracle_class = (kt.oracles.RandomSearchOracle if tuner == "random"
                            else kt.oracles.BayesianOptimizationOracle)
            search = _TransferTuner(
                oracle=_defaults_first(oracle_class)(objective=target, max_trials=max_trials,
                                                     seed=seed),
                hypermodel=hypermodel, executions_per_trial=executions_per_trial,
                fold_models=fold_models, **common)
        if overwrite and os.path.isdir(hypermodel.cache_dir):
            import shutil

            shutil.rmtree(hypermodel.cache_dir, ignore_errors=True)
        if isolate_trials:
            _isolated_search(search, hypermodel, project_dir, dict(
                backbone=backbone, search_space=search_space, tuner=tuner, max_trials=max_trials,
                objective=objective, directory=directory, project_name=project_name,
                head_epochs=head_epochs, fine_tune_epochs=fine_tune_epochs,
                executions_per_trial=executions_per_trial, weights=weights, seed=seed,
                activation_cache_mb=activation_cache_mb, folds=None, refit=False),
                epochs=hypermodel.fine_tune_epochs)
        else:
            search.search(epochs=hypermodel.fine_tune_epochs)

        if isolate_trials:
            hypermodel.log = _read_isolated_log(hypermodel.cache_dir)
        ran = fold_models or [hypermodel]
        if fold_models:
            hypermodel.log = [entry for model in fold_models for entry in model.log]
        is_worker = os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief" and \
            "KERASTUNER_ORACLE_IP" in os.environ
        # A worker's oracle is a client of the chief's: it knows only its own trials.
        trials = _trial_table(search, hypermodel) if not is_worker else [
            {"trial_id": None, "status": "COMPLETED", "score": None,
             "hyperparameters": entry["hyperparameters"],
             **{k: entry[k] for k in ("seconds", "rss_mb", "rss_growth_mb", "head_reused")}}
            for entry in hypermodel.log]
        best_hp = {}
        best_model = refit_training = None
        kept_defaults = False
        if not is_worker:
            best = search.get_best_hyperparameters(1)
            best_hp = dict(best[0].values) if best else {}
            if fold_models and best:
                best_hp, kept_defaults = _keep_defaults_unless_beaten(
                    # The space's defaults: the first trial's values (fit's defaults).
                    best_hp, dict(search.oracle.hyperparameters.values), fold_models,
                    objective)
            if refit and best:
                refit_training = _refit(hypermodel, data, best_hp, arrays,
                                        head_epochs=head_epochs,
                                        fine_tune_epochs=fine_tune_epochs, seed=seed,
                                        verbose=verbose)
                best_model = refit_training.model
            else:
                with warnings.catch_warnings():
                    # keras-tuner restores the trial checkpoint's optimizer state into a
                    # model built without one; the weights are what count here.
                    warnings.filterwarnings("ignore",
                                            message="Skipping variable loading for optimizer")
                    models = search.get_best_models(1) if best else []
                best_model = models[0] if models else None
        plot_path = None if is_worker else _plot_trials(trials, objective,
                                                        os.path.join(project_dir, "trials.png"))
        return TuningResult(best_model=best_model, best_hyperparameters=best_hp, trials=trials,
                            plot_path=plot_path,
                            head_phases_run=sum(model.head_runs for model in ran),
                            tuner=search,
                            selection=(f"{folds}-fold cross-validation" if folds
                                       else "validation split"),
                            folds=folds, refit=bool(refit), budget=hypermodel.budget.as_dict(),
                            refit_training=refit_training, kept_defaults=kept_defaults)


def _trial_table(search, hypermodel):
    ran = {json.dumps(entry["hyperparameters"], sort_keys=True): entry
           for entry in hypermodel.log}
    rows = []
    for trial in search.oracle.trials.values():
        values = dict(trial.hyperparameters.values)
        entry = ran.get(json.dumps(values, sort_keys=True), {})
        rows.append({"trial_id": trial.trial_id, "status": str(trial.status),
                     "score": trial.score, "hyperparameters": values,
                     **{k: entry[k] for k in ("seconds", "rss_mb", "rss_growth_mb", "head_reused")
                        if k in entry}})
    return sorted(rows, key=lambda row: row["trial_id"])


def _plot_trials(trials, objective, path):
    scored = [t for t in trials if t["score"] is not None]
    if not scored:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    depth = [t["hyperparameters"].get("unfreeze_blocks", 0) for t in scored]
    rates = [t["hyperparameters"].get("fine_tune_learning_rate", 0) for t in scored]
    scores = [t["score"] for t in scored]
    axes[0].scatter(depth, scores)
    axes[0].set_xlabel("unfreeze_blocks")
    axes[1].scatter(rates, scores)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("fine_tune_learning_rate")
    for axis in axes:
        axis.set_ylabel(objective)
    figure.suptitle("Trials")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# --- isolated trials -----------------------------------------------------------------------

_ISOLATED_ENV = "TFTRANSFER_ISOLATED_TRIAL"


def _read_isolated_log(cache_dir):
    path = os.path.join(cache_dir, "trial_log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _isolated_search(search, hypermodel, project_dir, settings, *, epochs):
    """Serves the oracle here and runs each trial in a fresh process, one after another."""
    import socket
    import subprocess
    import sys
    import threading

    if not isinstance(settings["backbone"], str):
        raise ValueError("isolate_trials: the backbone must be a name or a 'tfhub:' handle, so "
                         "that trial processes can build it.")
    data_dir = os.path.join(project_dir, "data")
    data = hypermodel.data
    if not os.path.exists(os.path.join(data_dir, "bundle.json")):
        for split in ("train", "validation"):
            dataset = getattr(data, split)
            if dataset is not None:
                dataset.save(os.path.join(data_dir, split))
        # Written last: a data folder without it (a killed run) is written again.
        files.write_json(os.path.join(data_dir, "bundle.json"), {
            "class_names": data.class_names, "counts": data.counts,
            "class_weights": {str(k): v for k, v in data.class_weights.items()},
            "image_size": list(data.image_size or [])})
    spec_path = os.path.join(project_dir, "isolated_trial.json")
    # JSON has no tuples: ranges (tuples) are tagged so they stay ranges, not choices.
    space = {name: ({"range": list(spec)} if isinstance(spec, tuple) else spec)
             for name, spec in (settings.get("search_space") or {}).items()}
    files.write_json(spec_path, {**settings, "search_space": space or None,
                                 "data_dir": data_dir})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    variables = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port}
    saved = {key: os.environ.get(key) for key in list(variables) + ["KERASTUNER_TUNER_ID"]}
    os.environ.update(variables, KERASTUNER_TUNER_ID="chief")
    failures = []
    try:
        chief = threading.Thread(target=search.search, daemon=True,
                                 kwargs={"epochs": epochs})
        chief.start()
        while chief.is_alive():
            # One tuner id for every trial process: keras-tuner forgets a tuner id
            # (and lets the chief exit) only once that id is told to stop, and a
            # process that died mid-trial hands its trial to the next one.
            env = {**os.environ, **variables, "KERASTUNER_TUNER_ID": "isolated",
                   _ISOLATED_ENV: "1"}
            result = subprocess.run([sys.executable, "-m", "tftransfer.tuning", spec_path],
                                    env=env, capture_output=True, text=True)
            if result.returncode != 0:
                failures.append(result.stderr[-2000:])
                if len(failures) >= 3:
                    raise RuntimeError("isolate_trials: trial processes keep failing:\n"
                                       + failures[-1])
            chief.join(timeout=0.5)
        chief.join()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_one_isolated_trial(spec_path):
    """Entry point of a trial process: load the data, run one trial, exit."""
    import tensorflow as tf

    with open(spec_path) as handle:
        spec = json.load(handle)
    with open(os.path.join(spec["data_dir"], "bundle.json")) as handle:
        meta = json.load(handle)

    def load(split):
        path = os.path.join(spec["data_dir"], split)
        return tf.data.Dataset.load(path) if os.path.exists(path) else None

    data = DatasetBundle(train=load("train"), validation=load("validation"), test=None,
                         class_names=meta["class_names"], counts=meta["counts"],
                         class_weights={int(k): v for k, v in meta["class_weights"].items()},
                         image_size=tuple(meta["image_size"]) or None)
    base = kt.engine.base_tuner.BaseTuner
    original = base.on_trial_end

    def on_trial_end(self, trial):
        original(self, trial)
        os._exit(0)  # one trial per process: the next one starts with fresh memory

    base.on_trial_end = on_trial_end
    settings = {k: v for k, v in spec.items() if k != "data_dir"}
    settings["search_space"] = {
        name: (tuple(value["range"]) if isinstance(value, dict) and "range" in value else value)
        for name, value in (settings.get("search_space") or {}).items()} or None
    tune(settings.pop("backbone"), data, **settings)


if __name__ == "__main__":
    import sys

    _run_one_isolated_trial(sys.argv[1])
