"""Two-phase transfer training: the head on a frozen backbone, then fine-tuning.

`fit()` is the one call; `Trainer` exposes the same steps one by one.
"""

import dataclasses
import os
import sys
import time
import warnings
from typing import Dict, List

import keras
import numpy as np
import tensorflow as tf

from tftransfer import checks, files
from tftransfer.data.bundle import DatasetBundle
from tftransfer.training import anchoring, budgets, feature_cache
from tftransfer.training.callbacks import default_callbacks
from tftransfer.training.distributed import is_multi_worker, multi_worker_fit
from tftransfer.training.freezing import backbone_blocks, find_backbone, freeze, unfreeze
from tftransfer.training.optimizers import discriminative_multipliers, layerwise_optimizer
from tftransfer.training.precision import apply_policy, model_policy, resolve_mixed_precision
from tftransfer.training.schedules import SCHEDULES, make_schedule

PHASES = ("head", "fine_tune")
# Chosen in bench/recipes.py (see the README's "Defaults" section).
HEAD_LEARNING_RATE = 3e-3
FINE_TUNE_LEARNING_RATE = 1e-3
#: `fine_tune_learning_rate="auto"` on transformer text encoders: BERT's fine-tuning range
#: (2e-5 to 5e-5, Devlin et al., 2019); at 1e-3 a whole MiniLM diverges.
TEXT_FINE_TUNE_LEARNING_RATE = 5e-5


def default_fine_tune_rate(model):
    """`fine_tune_learning_rate="auto"`: 5e-5 for a transformer text encoder, else 1e-3.

    Example:

    >>> import tftransfer
    >>> from tftransfer.training.trainer import default_fine_tune_rate
    >>> default_fine_tune_rate(tftransfer.build_classifier("FashionCNN", 2, weights=None))
    0.001
    """
    from tftransfer.backbones.text_layers import TextBackbone

    try:
        backbone = find_backbone(model)
    except ValueError:
        return FINE_TUNE_LEARNING_RATE
    return TEXT_FINE_TUNE_LEARNING_RATE if isinstance(backbone, TextBackbone) else \
        FINE_TUNE_LEARNING_RATE


@dataclasses.dataclass
class TrainingResult:
    """What `tftransfer.fit()` returns.

    Attributes:
        model: the trained `keras.Model` (a copy built in the strategy's
            scope when a distribution strategy was used).
        history: dict of lists, one entry per epoch across both phases, with
            `history["phase"]` (`"head"` or `"fine_tune"`) and
            `history["epoch"]` (continuing across phases).
        best: dict. The best epoch by the monitored metric and its logs.
        timings: dict. Seconds per phase (and for feature extraction).
        feature_cache: str. Whether the head phase used cached features, and
            why not when it did not.
        mixed_precision: str. The dtype policy used.
        resumed: bool. Whether this run resumed from `checkpoint_dir`.
        budget: dict. The epochs each phase got and the rule that chose them
            (`head_epochs`, `fine_tune_epochs`, `steps_per_epoch`, `rule`;
            see `tftransfer.training.budgets`).
        fine_tune_reverted: bool. Fine-tuning diverged (its final training
            loss was above the head phase's and half a uniform guess's) and
            the model was put back to the head phase's weights
            (`revert_diverged`).
    """

    model: keras.Model
    history: Dict[str, List]
    best: Dict[str, object]
    timings: Dict[str, float]
    feature_cache: str
    mixed_precision: str
    resumed: bool = False
    budget: Dict[str, object] = dataclasses.field(default_factory=dict)
    fine_tune_reverted: bool = False


def _task_of(model):
    try:
        layer = model.get_layer("predictions")
        activation = layer.get_config().get("activation")
    except ValueError:
        layer, activation = model.layers[-1], getattr(model.layers[-1], "activation", None)
        activation = getattr(activation, "__name__", activation)
    units = int(model.output_shape[-1])
    if activation == "softmax":
        return "multiclass", units
    if activation == "sigmoid":
        return ("binary" if units == 1 else "multilabel"), units
    return "regression", units


def default_loss(task, *, sparse_labels=True, label_smoothing=0.0):
    """The loss that fits a head's task (see `_task_of`)."""
    if task == "multiclass":
        if sparse_labels:
            return keras.losses.SparseCategoricalCrossentropy()
        return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    if task in ("binary", "multilabel"):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    return keras.losses.MeanSquaredError()


def _check_epochs(value, argument, *, allow_auto=False):
    if allow_auto and isinstance(value, str) and value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        expected = "'auto' or a non-negative int" if allow_auto else "a non-negative int"
        raise ValueError(f"{argument}: expected {expected}; received {value!r}.")
    return int(value)


def _check_rate(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{argument}: expected a positive float; received {value!r}.")
    return float(value)


class Trainer:
    """Runs the transfer-learning phases one by one.

    `Trainer(model, data, ...)` checks every argument and the data against
    the model before anything trains; then `train_head()` and `fine_tune()`
    run the phases (in that order), and `result()` gathers a
    `TrainingResult`. `tftransfer.fit()` is `Trainer(...).run()`. The
    arguments are `fit()`'s.

    Example:

    >>> import numpy as np, tftransfer
    >>> model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    >>> data = tftransfer.data.from_arrays(
    ...     np.random.uniform(0, 255, (32, 32, 32, 3)), np.arange(32) % 2)
    >>> trainer = tftransfer.Trainer(model, data, head_epochs=1, fine_tune_epochs=1,
    ...                              verbose=0)
    >>> trainer.train_head(); trainer.fine_tune()
    >>> trainer.result().history["phase"]
    ['head', 'fine_tune']
    """

    def __init__(self, model, data, *, validation_data=None, head_epochs="auto",
                 fine_tune_epochs="auto", unfreeze_blocks="all", unfreeze_layers=None,
                 unfreeze_fraction=None, head_learning_rate=HEAD_LEARNING_RATE,
                 fine_tune_learning_rate="auto", optimizer="adam",
                 schedule="cosine", warmup_fraction=0.05, label_smoothing=0.0,
                 class_weight="auto", loss=None, metrics=None, mixed_precision="auto",
                 jit_compile="auto", cache_features="auto", checkpoint_dir=None, callbacks=None,
                 early_stopping_patience="auto", tensorboard=False, strategy=None, batch_size=32,
                 discriminative_lr=None, anchor_to_pretrained=None, seed=1337,
                 verbose="auto", packed_labels=False, revert_diverged=True, lora_rank=None):
        if not isinstance(model, keras.Model):
            raise TypeError(f"model: expected a keras.Model; received {type(model).__name__}.")
        head_epochs = _check_epochs(head_epochs, "head_epochs", allow_auto=True)
        fine_tune_epochs = _check_epochs(fine_tune_epochs, "fine_tune_epochs", allow_auto=True)
        self.head_learning_rate = _check_rate(head_learning_rate, "head_learning_rate")
        if fine_tune_learning_rate == "auto":
            fine_tune_learning_rate = default_fine_tune_rate(model)
        self.fine_tune_learning_rate = _check_rate(fine_tune_learning_rate,
                                                   "fine_tune_learning_rate")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}; received {schedule!r}.")
        self.schedule = schedule
        self.warmup_fraction = float(warmup_fraction)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected a float in [0, 1); received "
                             f"{label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)
        if cache_features not in ("auto", True, False, None, "memory", "disk"):
            raise ValueError("cache_features: expected 'auto', True, False, 'memory' or 'disk'; "
                             f"received {cache_features!r}.")
        self.cache_features = cache_features
        if early_stopping_patience is not None:
            _check_epochs(early_stopping_patience, "early_stopping_patience", allow_auto=True)
        self.early_stopping_patience = early_stopping_patience
        self.tensorboard = tensorboard
        self.user_callbacks = list(callbacks or [])
        self.optimizer = optimizer
        if discriminative_lr is not None and (
                isinstance(discriminative_lr, bool) or not isinstance(discriminative_lr, (int, float))
                or not 0 < discriminative_lr <= 1):
            raise ValueError("discriminative_lr: expected None or a decay factor in (0, 1]; "
                             f"received {discriminative_lr!r}.")
        self.discriminative_lr = discriminative_lr
        if not isinstance(revert_diverged, bool):
            raise ValueError(f"revert_diverged: expected True or False; received "
                             f"{revert_diverged!r}.")
        self.revert_diverged = revert_diverged
        self.fine_tune_reverted = False
        if anchor_to_pretrained is not None and (
                isinstance(anchor_to_pretrained, bool)
                or not isinstance(anchor_to_pretrained, (int, float)) or anchor_to_pretrained < 0):
            raise ValueError("anchor_to_pretrained: expected None or a lambda >= 0 (L2-SP "
                             f"strength, e.g. 0.01); received {anchor_to_pretrained!r}.")
        self.anchor_strength = anchor_to_pretrained
        self.seed = seed
        self.verbose = (1 if sys.stdout.isatty() else 2) if verbose == "auto" else int(verbose)
        self.checkpoint_dir = (checks.check_path(checkpoint_dir, "checkpoint_dir")
                               if checkpoint_dir is not None else None)
        checks.check_int(batch_size, "batch_size", minimum=1)
        if self.checkpoint_dir:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
            files.remove_temporaries(self.checkpoint_dir)

        self.task, self.num_outputs = _task_of(model)
        # distill(): labels arrive as [label, teacher log probabilities...].
        self.packed_labels = bool(packed_labels)
        self._input_model = model
        self.train, self.validation, self.class_weight, self.augmented = self._data(
            data, validation_data, class_weight, batch_size)
        self.sparse_labels = self._check_labels()
        self.loss = self._loss(loss)
        self.metrics = metrics if metrics is not None else self._default_metrics()
        self._check_loss()

        if lora_rank is not None:
            from tftransfer.training.lora import enable_lora

            enable_lora(model, lora_rank, verbose=bool(self.verbose))
        self.policy = resolve_mixed_precision(mixed_precision)
        if self.policy != "float32" and model_policy(model) == "float32":
            apply_policy(model, self.policy)
        self.jit_compile = (bool(tf.config.list_physical_devices("GPU"))
                            if jit_compile == "auto" else bool(jit_compile))
        self.strategy = strategy or (tf.distribute.get_strategy()
                                     if tf.distribute.has_strategy() else None)
        self.model = self._in_strategy_scope(model)
        self.unfreeze_kwargs = self._unfreeze_kwargs(unfreeze_blocks, unfreeze_layers,
                                                     unfreeze_fraction)
        # A pipeline that drops undecodable files has no known length: the bundle's
        # counts say how many examples it holds (the few dropped ones aside).
        self.steps_per_epoch = self._steps(self.train) or self._steps_from_counts(data)
        self.budget = budgets.default_budget(self.steps_per_epoch, head_epochs=head_epochs,
                                             fine_tune_epochs=fine_tune_epochs)
        self.head_epochs = self.budget.head_epochs
        self.fine_tune_epochs = self.budget.fine_tune_epochs
        self.monitor = "val_loss" if self.validation is not None else "loss"
        # A resumed run keeps the history of the phases an earlier run finished.
        self.history = self._stored_history()
        self.timings = {}
        self.cache_note = "not used"
        self.resumed = False

    # --- data and labels --------------------------------------------------------------

    def _data(self, data, validation_data, class_weight, batch_size):
        augmented = False
        if isinstance(data, DatasetBundle):
            train, validation = data.train, data.validation
            weights = data.class_weights
            augmented = bool(getattr(data, "augmented", False))
            if self.task == "multiclass" and data.num_classes != self.num_outputs:
                raise ValueError(
                    f"data: the data has {data.num_classes} classes {data.class_names[:10]} but "
                    f"the model's head has {self.num_outputs} outputs. Build the model with "
                    f"num_classes={data.num_classes}."
                )
        elif isinstance(data, tf.data.Dataset):
            train, validation, weights = data, validation_data, None
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            x, y = (np.asarray(part) for part in data)
            if len(x) != len(y):
                raise ValueError(f"data: x and y have different lengths ({len(x)} and {len(y)}).")
            train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
                len(x), seed=self.seed).batch(batch_size)
            validation, weights = validation_data, None
        else:
            raise TypeError("data: expected a DatasetBundle, a tf.data.Dataset of (inputs, "
                            f"labels) batches or an (x, y) pair; received {type(data).__name__}.")
        if isinstance(validation, (tuple, list)):
            validation = tf.data.Dataset.from_tensor_slices(tuple(validation)).batch(batch_size)
        if class_weight == "auto":
            if weights and self.task in ("multiclass", "binary"):
                values = [w for w in weights.values() if w > 0]
                class_weight = weights if values and max(values) / min(values) > 1.5 else None
            else:
                class_weight = None
        elif class_weight is not None and not isinstance(class_weight, dict):
            raise TypeError("class_weight: expected 'auto', None or a dict {label: weight}; "
                            f"received {type(class_weight).__name__}.")
        return train, validation, class_weight, augmented

    def _check_labels(self):
        try:
            inputs, labels = next(iter(self.train.take(1)))
            self.batch_size = int(inputs.shape[0])
            # Kept for _check_loss, so that the first batch is read (decoded) once.
            self._first_batch = (inputs, labels)
        except StopIteration:
            raise ValueError("data: the training data is empty.") from None
        except (TypeError, ValueError):
            raise ValueError("data: expected (inputs, labels) batches.") from None
        labels = np.asarray(labels)
        if self.task == "regression":
            return False
        if self.packed_labels:
            if labels.ndim != 2 or labels.shape[-1] != self.num_outputs + 1:
                raise ValueError("data: distillation targets must be [label, one teacher log "
                                 f"probability per class] ({self.num_outputs + 1} columns); "
                                 f"received shape {labels.shape}.")
            labels = labels[:, 0]
            flat = labels.reshape(-1)
            if flat.size and (flat.min() < 0 or flat.max() >= self.num_outputs):
                raise ValueError(f"data: labels range over {flat.min()}..{flat.max()} but the "
                                 f"student has {self.num_outputs} classes.")
            return False
        if labels.ndim >= 2 and labels.shape[-1] > 1 or self.task == "multilabel":
            width = labels.shape[-1] if labels.ndim >= 2 else 1
            if width != self.num_outputs:
                raise ValueError(
                    f"data: labels have {width} columns but the model's head has "
                    f"{self.num_outputs} outputs; they must match."
                )
            return False
        flat = labels.reshape(-1)
        limit = 2 if self.task == "binary" else self.num_outputs
        if flat.size and (flat.min() < 0 or flat.max() >= limit or
                          not np.allclose(flat, np.round(flat))):
            raise ValueError(
                f"data: labels range over {flat.min()}..{flat.max()} but the model's head has "
                f"{self.num_outputs} output(s) ({self.task}): labels must be ints in "
                f"0..{limit - 1}. Build the model with num_classes matching the data."
            )
        return True

    def _loss(self, loss):
        if loss is not None:
            return loss
        if self.task == "multiclass" and self.sparse_labels and self.label_smoothing > 0:
            # Keras' sparse cross-entropy has no label smoothing: one-hot the labels.
            depth = self.num_outputs
            to_one_hot = lambda x, y: (x, tf.one_hot(tf.cast(y, tf.int32), depth))  # noqa
            self.train = self.train.map(to_one_hot)
            if self.validation is not None:
                self.validation = self.validation.map(to_one_hot)
            self._first_batch = to_one_hot(*self._first_batch)
            self.sparse_labels = False
        return default_loss(self.task, sparse_labels=self.sparse_labels,
                            label_smoothing=self.label_smoothing)

    def _default_metrics(self):
        if self.task == "multiclass":
            return ["accuracy"]
        if self.task in ("binary", "multilabel"):
            return [keras.metrics.BinaryAccuracy(name="accuracy")]
        return [keras.metrics.MeanAbsoluteError(name="mae")]

    def _check_loss(self):
        inputs, labels = self._first_batch
        loss = keras.losses.get(self.loss) if isinstance(self.loss, str) else self.loss
        outputs = self._input_model(inputs, training=False)
        try:
            value = loss(labels, outputs)
            float(np.asarray(value).mean())
        except Exception as error:
            raise ValueError(
                f"loss: {getattr(loss, 'name', loss)!r} cannot compare these labels (shape "
                f"{tuple(labels.shape)}, {labels.dtype}) with the model's outputs (shape "
                f"{tuple(outputs.shape)}): {str(error).splitlines()[0][:200]}. Leave loss=None "
                f"for the loss that fits a {self.task} head, or pass a compatible one."
            ) from None

    # --- model ---------------------------------------------------------------------------

    def _in_strategy_scope(self, model):
        if self.strategy is None:
            return model
        if model.weights and created_in_scope(self.strategy, model.weights[0]):
            return model
        with self.strategy.scope():
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
        return clone

    def _unfreeze_kwargs(self, blocks, layers, fraction):
        explicit = {k: v for k, v in (("layers", layers), ("fraction", fraction)) if v is not None}
        if len(explicit) > 1 or (explicit and blocks not in (None, "all")):
            raise ValueError("unfreeze_blocks, unfreeze_layers and unfreeze_fraction: pass one.")
        if "fraction" in explicit:
            checks.check_number(fraction, "unfreeze_fraction", low=0.0, high=1.0)
        if explicit:
            return explicit
        if blocks is None or (isinstance(blocks, str) and blocks == "all"):
            return {}  # the whole backbone, BatchNorm frozen
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise ValueError("unfreeze_blocks: expected 'all' or a non-negative int; received "
                             f"{blocks!r}.")
        backbone = find_backbone(self.model)
        if not isinstance(backbone, keras.Model):
            return {}  # a TF-Hub module: fine-tune it whole
        try:
            named = backbone_blocks(self.model)
        except ValueError:
            raise ValueError(
                f"unfreeze_blocks: the backbone {backbone.name!r} has no named blocks; pass "
                "unfreeze_blocks='all', unfreeze_layers or unfreeze_fraction.") from None
        if blocks > len(named):
            raise ValueError(
                f"unfreeze_blocks: {blocks} is more than the {len(named)} blocks of "
                f"{backbone.name!r}; pass at most {len(named)}.")
        return {"blocks": blocks}

    def _steps_from_counts(self, data):
        if not isinstance(data, DatasetBundle) or data.task != "multiclass":
            return None  # multi-label counts are label counts, not examples
        examples = sum(data.counts.get("train", {}).values())
        return -(-examples // self.batch_size) if examples and self.batch_size else None

    @staticmethod
    def _steps(dataset):
        cardinality = int(tf.data.experimental.cardinality(dataset))
        return cardinality if cardinality > 0 else None

    def _optimizer(self, learning_rate, epochs):
        schedule = make_schedule(self.schedule, learning_rate, steps_per_epoch=self.steps_per_epoch,
                                 epochs=max(epochs, 1), warmup_fraction=self.warmup_fraction)
        if callable(self.optimizer) and not isinstance(self.optimizer, keras.optimizers.Optimizer):
            return self.optimizer(schedule)
        if isinstance(self.optimizer, keras.optimizers.Optimizer):
            config = self.optimizer.get_config()
            config["learning_rate"] = (keras.saving.serialize_keras_object(schedule)
                                       if not isinstance(schedule, float) else schedule)
            return type(self.optimizer).from_config(config)
        try:
            base = keras.optimizers.get(self.optimizer)
        except ValueError:
            raise ValueError(f"optimizer: unknown optimizer {self.optimizer!r}; pass a Keras "
                             "optimizer name ('adam', 'sgd', 'adamw', ...) or instance.") from None
        return type(base)(learning_rate=schedule)

    def _compile(self, model, learning_rate, epochs, multipliers=None):
        scope = self.strategy.scope() if self.strategy is not None else _null_scope()
        with scope:
            optimizer = self._optimizer(learning_rate, epochs)
            if multipliers:
                optimizer = layerwise_optimizer(optimizer, multipliers)
            if self.policy == "mixed_float16" and not isinstance(
                    optimizer, keras.optimizers.LossScaleOptimizer):
                # Keras scales the loss only when the outer model's own policy is
                # mixed_float16; a model converted layer by layer needs it said.
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            model.compile(optimizer=optimizer, loss=self.loss, metrics=list(self.metrics),
                          jit_compile=self.jit_compile)

    # --- phases ----------------------------------------------------------------------------

    def _stored_history(self):
        if not self.checkpoint_dir or not any(
                os.path.exists(self._marker(phase)) for phase in ("head", "fine_tune")):
            return {}
        stored = files.read_json(os.path.join(self.checkpoint_dir, "history.json"), {})
        return stored if isinstance(stored, dict) else {}

    def _marker(self, phase):
        return os.path.join(self.checkpoint_dir, f"{phase}.done.weights.h5") \
            if self.checkpoint_dir else None

    def _record(self, phase, logs_by_epoch, first_epoch):
        for offset, logs in enumerate(logs_by_epoch):
            # One entry per epoch in every list: a figure only one phase logs (the
            # L2-SP penalty) is None in the other phase's epochs.
            done = len(self.history.get("phase", []))
            for key in [k for k in self.history if k not in ("phase", "epoch")] + [
                    k for k in logs if k not in self.history]:
                value = logs.get(key)
                self.history.setdefault(key, [None] * done).append(
                    None if value is None else float(value))
            self.history.setdefault("phase", []).append(phase)
            self.history.setdefault("epoch", []).append(first_epoch + offset)

    def _patience(self, phase_epochs):
        """Early stopping's patience: `"auto"` watches validation data only (a
        schedule sized by `budgets` needs no stop on the training loss), with
        a quarter of the phase's epochs, at least 3, as patience."""
        if self.early_stopping_patience != "auto":
            return self.early_stopping_patience
        if self.validation is None:
            return None
        return max(3, int(np.ceil(phase_epochs / 4)))

    def _callbacks(self, phase, learning_rate):
        epochs = self.head_epochs if phase == "head" else self.fine_tune_epochs
        callbacks = default_callbacks(
            full_model=self.model, monitor=self.monitor,
            early_stopping_patience=self._patience(epochs),
            checkpoint_dir=self.checkpoint_dir, phase=phase, learning_rate=learning_rate,
            tensorboard=self.tensorboard)
        return callbacks + self.user_callbacks

    def _finish_phase(self, phase, callbacks):
        for callback in callbacks:
            message = getattr(callback, "message", None)
            if message:
                raise FloatingPointError(message)
        marker = self._marker(phase)
        if marker:
            # The history first, then the marker: a finished phase's epochs are never lost.
            files.write_json(os.path.join(self.checkpoint_dir, "history.json"), self.history)
            with files.replacing(marker) as temporary:
                self.model.save_weights(temporary)

    def _resume(self, phase):
        marker = self._marker(phase)
        if marker and os.path.exists(marker):
            self.model.load_weights(marker)
            self.resumed = True
            if self.verbose:
                print(f"tftransfer: the {phase} phase finished in an earlier run; resuming after it.")
            return True
        return False

    def _fit(self, model, train, *, validation, epochs, initial_epoch, callbacks):
        if self.strategy is not None and is_multi_worker(self.strategy):
            with self.strategy.scope():
                return multi_worker_fit(model, train, validation=validation, epochs=epochs,
                                        initial_epoch=initial_epoch, callbacks=callbacks,
                                        strategy=self.strategy, verbose=self.verbose)
        return model.fit(train, validation_data=validation, epochs=epochs,
                         initial_epoch=initial_epoch, class_weight=self.class_weight,
                         callbacks=callbacks, shuffle=False, verbose=self.verbose)

    def train_head(self):
        """Phase 1: train the head on the frozen backbone (on cached features when valid)."""
        if self.head_epochs == 0 or self._resume("head"):
            return self
        freeze(self.model)
        start = time.time()
        reason = feature_cache.why_not_cacheable(self.model, augmented_data=self.augmented)
        if self.strategy is not None and reason is None:
            reason = "a distribution strategy is in use"
        use_cache = self.cache_features not in (False, None) and reason is None
        if self.cache_features is True and reason is not None:
            raise ValueError(f"cache_features=True, but the head phase cannot use cached "
                             f"features: {reason}.")
        callbacks = self._callbacks("head", self.head_learning_rate)
        if use_cache:
            storage = "disk" if self.cache_features == "disk" else "memory"
            feature_model, head_model = feature_cache.split_model(self.model)
            directory = (os.path.join(self.checkpoint_dir, "features")
                         if self.checkpoint_dir and storage == "disk" else None)
            predict = feature_cache.predictor(feature_model)
            x, y = feature_cache.compute_features(feature_model, self.train, storage=storage,
                                                  directory=directory, predict=predict)
            # Cached features keep the data's own order unless it reshuffles by epoch.
            train = feature_cache.feature_dataset(
                x, y, batch_size=self.batch_size,
                shuffle=feature_cache.shuffles(self.train), seed=self.seed)
            validation = None
            if self.validation is not None:
                vx, vy = feature_cache.compute_features(feature_model, self.validation,
                                                        predict=predict)
                validation = feature_cache.feature_dataset(
                    vx, vy, batch_size=self.batch_size, shuffle=False, seed=None)
            self.timings["feature_extraction"] = time.time() - start
            self.cache_note = f"on ({storage}): {len(x)} examples, features {x.shape[1:]}"
            target, train_data = head_model, train
        else:
            self.cache_note = f"off: {reason}" if reason else "off: cache_features=False"
            target, train_data, validation = self.model, self.train, self.validation
        if self.verbose:
            print(f"tftransfer: head phase, {self.head_epochs} epoch(s) at learning rate "
                  f"{self.head_learning_rate:g}; feature cache {self.cache_note}.")
        self._compile(target, self.head_learning_rate, self.head_epochs)
        history = self._fit(target, train_data, validation=validation, epochs=self.head_epochs,
                            initial_epoch=0, callbacks=callbacks)
        self._record("head", _per_epoch(history.history), _first_epoch(history))
        self.timings["head"] = time.time() - start
        self._finish_phase("head", callbacks)
        return self

    def fine_tune(self):
        """Phase 2: unfreeze the top of the backbone (BatchNorm stays frozen, unless
        the backbone is not pretrained) and continue at the lower learning rate,
        counting epochs on from phase 1."""
        if self.fine_tune_epochs == 0 or self._resume("fine_tune"):
            return self
        start = time.time()
        # BatchNorm stays frozen in a pretrained backbone; one built at random
        # initialization (weights=None) has no statistics worth keeping: it trains.
        pretrained = getattr(find_backbone(self.model), "pretrained", True)
        unfreeze(self.model, freeze_batch_norm=pretrained, **self.unfreeze_kwargs)
        if self.verbose:
            trainable = sum(int(np.prod(w.shape)) for w in self.model.trainable_weights)
            what = self.unfreeze_kwargs or "the whole module"
            print(f"tftransfer: fine-tuning phase, {self.fine_tune_epochs} epoch(s) at learning "
                  f"rate {self.fine_tune_learning_rate:g}, unfreezing {what} "
                  f"({trainable:,} trainable weights).")
        callbacks = self._callbacks("fine_tune", self.fine_tune_learning_rate)
        if self.anchor_strength is not None:
            # L2-SP: anchored at the weights fine-tuning starts from (the pretrained
            # ones: the backbone was frozen until now).
            anchoring.anchor_to_pretrained(self.model, self.anchor_strength)
            callbacks = [anchoring.AnchorPenaltyLogger(self.model)] + callbacks
        multipliers = (discriminative_multipliers(self.model, self.discriminative_lr)
                       if self.discriminative_lr is not None else None)
        head_losses = [loss for phase, loss in zip(self.history.get("phase", []),
                                                   self.history.get("loss", []))
                       if phase == "head" and loss is not None]
        # (With L2-SP the fine-tuning loss holds the penalty: not comparable.)
        guard = self.revert_diverged and bool(head_losses) and self.anchor_strength is None
        before = [w.numpy().copy() for w in self.model.weights] if guard else None
        self._compile(self.model, self.fine_tune_learning_rate, self.fine_tune_epochs,
                      multipliers)
        try:
            history = self._fit(self.model, self.train, validation=self.validation,
                                epochs=self.head_epochs + self.fine_tune_epochs,
                                initial_epoch=self.head_epochs, callbacks=callbacks)
        finally:
            if self.anchor_strength is not None:
                anchoring.release_anchor(self.model)
        self._record("fine_tune", _per_epoch(history.history), _first_epoch(history))
        final = history.history.get("loss", [None])[-1] if history.history.get("loss") else None
        if guard and final is not None and final > self._diverged_above(head_losses[-1]):
            # Fine-tuning ended fitting the training data worse than the head alone
            # did, and no better than knowing nothing: it diverged (too high a rate for
            # this backbone). Keep the head phase's model.
            for weight, value in zip(self.model.weights, before):
                weight.assign(value)
            self.fine_tune_reverted = True
            warnings.warn(
                f"tftransfer: fine-tuning at learning rate {self.fine_tune_learning_rate:g} "
                f"ended with a training loss of {final:.4g}, above the head phase's "
                f"{head_losses[-1]:.4g} and half the loss of a uniform guess: it diverged, "
                f"so the model keeps the head phase's "
                f"weights (TrainingResult.fine_tune_reverted). Try "
                f"fine_tune_learning_rate={self.fine_tune_learning_rate / 3:.2g}.",
                stacklevel=3)
        self.timings["fine_tune"] = time.time() - start
        self._finish_phase("fine_tune", callbacks)
        return self

    def _diverged_above(self, head_loss):
        """The final fine-tuning loss above which fine-tuning diverged: the head's
        own final loss, and at least half a uniform guess's (log K for K classes;
        a head on frozen features overfits a small set, so its loss alone is too
        low a bar for a healthy fine-tuning run that ends a little above it)."""
        classes = 2 if self.task in ("binary", "multilabel") else self.num_outputs
        if self.task == "regression" or classes < 2:
            return head_loss
        return max(head_loss, 0.5 * float(np.log(classes)))

    def result(self):
        """The `TrainingResult` of the phases run so far."""
        best = {}
        values = self.history.get(self.monitor)
        if values:
            index = int(np.argmin(values))
            best = {"monitor": self.monitor, "epoch": self.history["epoch"][index],
                    "phase": self.history["phase"][index],
                    **{k: v[index] for k, v in self.history.items()
                       if k not in ("phase", "epoch")}}
        if self.checkpoint_dir:
            files.write_json(os.path.join(self.checkpoint_dir, "history.json"), self.history)
        return TrainingResult(model=self.model, history=dict(self.history), best=best,
                              timings=dict(self.timings), feature_cache=self.cache_note,
                              mixed_precision=self.policy, resumed=self.resumed,
                              budget=self.budget.as_dict(),
                              fine_tune_reverted=self.fine_tune_reverted)

    def run(self):
        """Both phases, then the result."""
        self.train_head()
        self.fine_tune()
        return self.result()


def created_in_scope(strategy, variable):
    """Whether a Keras (or tf) variable was created under `strategy`."""
    variable = getattr(variable, "value", variable)
    try:
        return strategy.extended.variable_created_in_scope(variable)
    except AttributeError:
        return False


def _per_epoch(history):
    keys = list(history)
    count = len(history[keys[0]]) if keys else 0
    return [{key: history[key][index] for key in keys} for index in range(count)]


def _first_epoch(history):
    epochs = getattr(history, "epoch", None) or [0]
    return int(epochs[0]) if epochs else 0


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def fit(model, data, *, validation_data=None, head_epochs="auto", fine_tune_epochs="auto",
        unfreeze_blocks="all", unfreeze_layers=None, unfreeze_fraction=None,
        head_learning_rate=HEAD_LEARNING_RATE, fine_tune_learning_rate="auto", optimizer="adam",
        schedule="cosine", warmup_fraction=0.05, label_smoothing=0.0, class_weight="auto",
        loss=None, metrics=None, mixed_precision="auto", jit_compile="auto",
        cache_features="auto", checkpoint_dir=None, callbacks=None,
        early_stopping_patience="auto", tensorboard=False, strategy=None, batch_size=32,
        discriminative_lr=None, anchor_to_pretrained=None, seed=1337, verbose="auto",
        revert_diverged=True, lora_rank=None):
    """Trains a classifier for transfer: the head first, then fine-tuning.

    Phase 1 freezes the backbone and trains the head at `head_learning_rate`
    (on backbone features computed once, when that gives the same result:
    the backbone is frozen and nothing random runs before it). Phase 2
    unfreezes the top `unfreeze_blocks` blocks (or `unfreeze_layers` layers,
    or `unfreeze_fraction` of them) with BatchNorm kept frozen (a backbone
    built with `weights=None` trains its BatchNorm instead), recompiles at
    `fine_tune_learning_rate`, and continues the epoch count. Each phase has a
    cosine schedule with warmup, early stopping that restores the best
    weights, a NaN guard that says what to try, and, with `checkpoint_dir`,
    resumable checkpoints (a killed run started again resumes in the right
    phase at the right epoch), the best full model (`best.keras`) and a CSV
    log. Every argument and the data are checked before any training.

    Args:
        model: `keras.Model`. A classifier from `build_classifier()`.
        data: `DatasetBundle`, `tf.data.Dataset` of `(inputs, labels)`
            batches, or an `(x, y)` pair of arrays.
        validation_data: dataset or `(x, y)`, when `data` is not a bundle.
            Defaults to None.
        head_epochs: int or `"auto"`. `"auto"` gives the head at least 300
            optimizer steps and 2 epochs (at most 100), so that it converges
            on the frozen features whatever the data's size
            (`tftransfer.training.budgets`; the choice is in
            `TrainingResult.budget`). Defaults to `"auto"`.
        fine_tune_epochs: int or `"auto"`. `"auto"`: at least 100 steps and 2
            epochs (at most 100). Defaults to `"auto"`.
        unfreeze_blocks: `"all"` or int. How much of the backbone to
            fine-tune: `"all"` of it (BatchNorm stays frozen), or its top
            named blocks. Defaults to `"all"`.
        unfreeze_layers: int or None. Top layers to fine-tune instead.
            Defaults to None.
        unfreeze_fraction: float or None. Fraction of layers instead.
            Defaults to None.
        head_learning_rate: float. Defaults to `3e-3`.
        fine_tune_learning_rate: float or `"auto"`: 1e-3 on image backbones
            (chosen in `bench/recipes.py`), 5e-5 on transformer text encoders
            (BERT's fine-tuning range). Defaults to `"auto"`.
        optimizer: str, optimizer instance or callable `lr -> optimizer`.
            Defaults to `"adam"`.
        schedule: `"cosine"` (with linear warmup over `warmup_fraction` of
            the steps) or `"constant"`. Defaults to `"cosine"`.
        warmup_fraction: float. Defaults to `0.05`.
        label_smoothing: float. Defaults to `0.0`.
        class_weight: `"auto"` (the bundle's weights when its classes are
            imbalanced by more than 1.5x), None or a dict. Defaults to
            `"auto"`.
        loss: loss or None. Defaults to the loss that fits the head's task.
        metrics: list or None. Defaults to accuracy (MAE for regression).
        mixed_precision: `"auto"` (mixed on GPUs that benefit, float32 on
            CPUs), `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`. The
            output stays float32; loss scaling is Keras'. Defaults to
            `"auto"`.
        jit_compile: `"auto"` (XLA on GPUs), True or False. Defaults to
            `"auto"`.
        cache_features: `"auto"`, True, False, `"memory"` or `"disk"`.
            Defaults to `"auto"`.
        checkpoint_dir: str or None. Enables resumable training. Defaults to
            None.
        callbacks: list of extra Keras callbacks, run after tftransfer's.
            Defaults to None.
        early_stopping_patience: `"auto"`, int or None (off). `"auto"`: off
            without validation data (the budget sets the length), else a
            quarter of the phase's epochs (at least 3). Defaults to `"auto"`.
        tensorboard: bool or a log folder. Defaults to `False`.
        strategy: a `tf.distribute.Strategy` or None (the active one, if any).
            Defaults to None.
        batch_size: int. For `(x, y)` array data. Defaults to `32`.
        discriminative_lr: float or None. Fine-tune with learning rates that
            shrink with depth: the top unfrozen block at
            `fine_tune_learning_rate * d`, the next at `* d**2`, and so on
            (the head at the full rate). Defaults to None (one rate).
        anchor_to_pretrained: float or None. L2-SP (Li et al., ICML 2018):
            during fine-tuning, add `lambda * ||w - w_start||^2` over the
            backbone's trainable weights (their values when fine-tuning
            starts: the pretrained ones) and `lambda * ||w||^2` over the
            head's kernels, as Keras weight regularizers (part of the logged
            `loss`; `l2_sp_penalty` and `head_l2_penalty` are logged too).
            Keeps small-data fine-tuning close to what was pretrained.
            Defaults to None (off).
        seed: int. Shuffle seed for array data and cached features. Defaults
            to `1337`.
        verbose: `"auto"` (1 on a terminal, else 2), 0, 1 or 2. Defaults to
            `"auto"`.
        revert_diverged: bool. When fine-tuning ends with a higher training
            loss than the head phase ended with and than half a uniform
            guess's (`log(K) / 2` for K classes), it diverged (a rate too high
            for the backbone: ImageNet EfficientNet-Lite0 collapses to chance
            at 3e-3): put the head phase's weights back, warn with a lower
            rate to try, and set `TrainingResult.fine_tune_reverted`.
            Defaults to `True`.
        lora_rank: int or None. Train low-rank adapters (LoRA, rank
            `lora_rank`) on the query and value projections of a transformer
            backbone (KerasHub text or image) instead of its weights: the
            fine-tuning phase opens the LoRA factors of the top
            `unfreeze_blocks` blocks, and the head trains as usual. Prints
            the trainable parameter count. See
            `tftransfer.training.enable_lora()`. Defaults to None (off).

    Returns:
        A `TrainingResult`.

    Example:

    >>> import numpy as np, tftransfer
    >>> model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    >>> data = tftransfer.data.from_arrays(
    ...     np.random.uniform(0, 255, (64, 32, 32, 3)), np.arange(64) % 2)
    >>> result = tftransfer.fit(model, data, head_epochs=2, fine_tune_epochs=1, verbose=0)
    >>> result.history["phase"], result.history["epoch"]
    (['head', 'head', 'fine_tune'], [0, 1, 2])
    """
    # Spelled out (not **kwargs) so that inspect, IDEs and shift-tab list them;
    # tests/test_signatures.py checks that they match Trainer's.
    result = Trainer(
        model, data, validation_data=validation_data, head_epochs=head_epochs,
        fine_tune_epochs=fine_tune_epochs, unfreeze_blocks=unfreeze_blocks,
        unfreeze_layers=unfreeze_layers, unfreeze_fraction=unfreeze_fraction,
        head_learning_rate=head_learning_rate, fine_tune_learning_rate=fine_tune_learning_rate,
        optimizer=optimizer, schedule=schedule, warmup_fraction=warmup_fraction,
        label_smoothing=label_smoothing, class_weight=class_weight, loss=loss, metrics=metrics,
        mixed_precision=mixed_precision, jit_compile=jit_compile, cache_features=cache_features,
        checkpoint_dir=checkpoint_dir, callbacks=callbacks,
        early_stopping_patience=early_stopping_patience, tensorboard=tensorboard,
        strategy=strategy, batch_size=batch_size, discriminative_lr=discriminative_lr,
        anchor_to_pretrained=anchor_to_pretrained, seed=seed, verbose=verbose,
        revert_diverged=revert_diverged, lora_rank=lora_rank,
    ).run()
    check = getattr(data, "file_check", None)
    if check is not None and check.done:
        check.report()  # what the background file check found, once
    return result
