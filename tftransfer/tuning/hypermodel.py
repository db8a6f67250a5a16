"""`TransferHyperModel`: what a search tries, as a keras-tuner HyperModel.

`build(hp)` returns the classifier with the searched blocks open; `fit(hp,
model)` runs the head phase (shared between trials through the caches of
`tftransfer.tuning.caches`) and fine-tunes, on cached activations where
`tftransfer.tuning.activations` allows. Any keras-tuner Tuner runs it.
"""

import gc
import time
from typing import List

import keras
import keras_tuner as kt
import numpy as np

from tftransfer import checks
from tftransfer.data.bundle import DatasetBundle
from tftransfer.models import build_classifier
from tftransfer.training import feature_cache
from tftransfer.training.budgets import default_budget
from tftransfer.training.freezing import backbone_blocks, find_backbone, freeze, unfreeze
from tftransfer.training.optimizers import discriminative_multipliers, layerwise_optimizer
from tftransfer.training.schedules import make_schedule
from tftransfer.tuning.activations import _ActivationCache
from tftransfer.tuning.caches import WARMUP_FRACTION, _SharedCaches
from tftransfer.tuning.space import _define, _search_space, _start_values
from tftransfer.tuning.trial_log import _append_isolated_log, rss_mb


class TransferHyperModel(_SharedCaches, _ActivationCache, kt.HyperModel):
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
        return _search_space(given, self.num_blocks, self.text)

    def start_values(self):
        """`fit`'s defaults in this space's terms: the first trial's values."""
        return _start_values(self.num_blocks, self.text)

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
        # As fit(): BatchNorm stays frozen unless the backbone is not pretrained.
        freeze_batch_norm = getattr(backbone, "pretrained", True)
        if blocks == 0:
            freeze(model)
        elif isinstance(backbone, keras.Model):
            unfreeze(model, blocks=blocks, freeze_batch_norm=freeze_batch_norm)
        else:
            unfreeze(model, freeze_batch_norm=freeze_batch_norm)
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
        _append_isolated_log(self.cache_dir, self.log[-1])
        gc.collect()
        return history


def _all_layers(layer):
    """The layer and every layer inside it, in a fixed order."""
    return [layer] + [inner for inner in layer._flatten_layers(include_self=False)]


def _is_text(data):
    """Whether the bundle's inputs are strings (a text task)."""
    import tensorflow as tf

    spec = data.train.element_spec[0]
    return getattr(spec, "dtype", None) == tf.string
