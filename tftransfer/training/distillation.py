"""Knowledge distillation: train a small student on a fine-tuned teacher's soft targets.

Hinton, Vinyals and Dean (2015): loss = alpha * T^2 * KL(teacher_T || student_T)
+ (1 - alpha) * cross-entropy(labels, student), where `_T` is the softmax at
temperature T. tftransfer's classifiers end in a softmax, so their log
probabilities serve as logits (a softmax is unchanged by a constant shift).

Two ways in:
- `distill(teacher, student, data)`: the student is any `build_classifier()`
  model and trains with `fit()`'s machinery (head phase, fine-tuning,
  callbacks, checkpoints, mixed precision); the labels travel packed with the
  teacher's log probabilities, so the student stays a plain Keras model,
  ready for `export()`. The teacher runs once per example when the data's
  order is fixed (no shuffle, no augmentation): its outputs are cached.
- `Distiller`: a `keras.Model` that holds teacher and student, for those
  who write their own loop or call `compile()`/`fit()` themselves.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tftransfer.data.bundle import DatasetBundle
from tftransfer.training import feature_cache
from tftransfer.training.trainer import HEAD_LEARNING_RATE, Trainer


def _check(teacher, student, temperature, alpha):
    for name, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model):
            raise TypeError(f"{name}: expected a keras.Model; received {type(model).__name__}.")
    teacher_classes, student_classes = int(teacher.output_shape[-1]), int(student.output_shape[-1])
    if teacher_classes != student_classes:
        raise ValueError(f"teacher and student: the teacher predicts {teacher_classes} classes "
                         f"and the student {student_classes}; build the student with "
                         f"num_classes={teacher_classes}.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            temperature <= 0:
        raise ValueError(f"temperature: expected a number > 0 (4 is common); received "
                         f"{temperature!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected a weight in [0, 1]; received {alpha!r}.")
    return teacher_classes


# The floor under probabilities before their log: far below any probability a
# float32 softmax yields (1e-7 flattened a confident teacher's soft targets and
# cut the gradient of a confidently wrong student: log(1e-7) is only -16).
LOG_FLOOR = 1e-30


def distillation_loss(labels, teacher_log_probabilities, student_probabilities, *,
                      temperature, alpha):
    """Per-example `alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE`."""
    student_log = ops.log(ops.clip(ops.cast(student_probabilities, "float32"), LOG_FLOOR,
                                   1.0))
    teacher_log = ops.cast(teacher_log_probabilities, "float32")
    teacher_soft = ops.softmax(teacher_log / temperature, axis=-1)
    student_soft_log = ops.log_softmax(student_log / temperature, axis=-1)
    teacher_soft_log = ops.log_softmax(teacher_log / temperature, axis=-1)
    kl = ops.sum(teacher_soft * (teacher_soft_log - student_soft_log), axis=-1)
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    cross_entropy = -ops.take_along_axis(student_log, labels[:, None], axis=-1)[:, 0]
    return alpha * temperature ** 2 * kl + (1.0 - alpha) * cross_entropy


@keras.saving.register_keras_serializable(package="tftransfer")
class PackedDistillationLoss(keras.losses.Loss):
    """The distillation loss for labels packed as `[label, teacher log probabilities...]`.

    Args:
        temperature: float. Defaults to `4.0`.
        alpha: float. Weight of the soft-target term. Defaults to `0.9`.
    """

    def __init__(self, temperature=4.0, alpha=0.9, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        return distillation_loss(y_true[:, 0], y_true[:, 1:], y_pred,
                                 temperature=self.temperature, alpha=self.alpha)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="tftransfer")
class PackedAccuracy(keras.metrics.Mean):
    """Accuracy against the label column of packed distillation targets."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.cast(y_true[:, 0], "int32")
        correct = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels),
                           "float32")
        return super().update_state(correct, sample_weight=sample_weight)


def _log_probabilities(teacher):
    size = None
    shape = getattr(teacher, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and None not in shape[1:3]:
        size = (int(shape[1]), int(shape[2]))

    def run(images):
        if size is not None and tuple(images.shape[1:3]) != size:
            # A teacher at its own input size (an EfficientNetB3 at 300 teaching a
            # student at 224): the same images, resized for it.
            images = tf.image.resize(images, size)
        probabilities = ops.cast(teacher(images, training=False), "float32")
        return ops.log(ops.clip(probabilities, LOG_FLOOR, 1.0))
    return run


def pack_with_teacher(teacher, dataset, *, cache="auto"):
    """`(inputs, [label, teacher log probabilities...])` batches.

    With `cache="auto"`, a dataset whose order is fixed (no shuffle, equal
    batches) is run through the teacher once and its outputs are zipped back
    in each epoch;
    otherwise the teacher runs in the input pipeline on every batch (it then
    sees exactly the (augmented) images the student sees).

    Returns:
        `(dataset, cached)`.
    """
    if dataset is None:
        return None, False
    teacher_fn = _log_probabilities(teacher)

    def pack(labels, log_probabilities):
        labels = tf.cast(tf.reshape(labels, (-1, 1)), tf.float32)
        return tf.concat([labels, tf.cast(log_probabilities, tf.float32)], axis=-1)

    if cache in ("auto", True) and not feature_cache.shuffles(dataset):
        predict = tf.function(teacher_fn)
        outputs, batch_sizes = [], []
        for inputs, labels in dataset:  # one pass: the teacher runs once per example
            outputs.append(predict(inputs).numpy())
            batch_sizes.append(int(labels.shape[0]))
        if batch_sizes and all(size == batch_sizes[0] for size in batch_sizes[:-1]):
            teacher_batches = tf.data.Dataset.from_tensor_slices(
                np.concatenate(outputs)).batch(batch_sizes[0])
            zipped = tf.data.Dataset.zip((dataset, teacher_batches))
            return zipped.map(lambda batch, teach: (batch[0], pack(batch[1], teach))), True
    mapped = dataset.map(lambda inputs, labels: (inputs, pack(labels, teacher_fn(inputs))))
    return mapped.prefetch(tf.data.AUTOTUNE), False


def distill(teacher, student, data, *, temperature=4.0, alpha=0.9, validation_data=None,
            cache_teacher="auto", head_epochs="auto", fine_tune_epochs="auto",
            unfreeze_blocks="all", unfreeze_layers=None, unfreeze_fraction=None,
            head_learning_rate=HEAD_LEARNING_RATE, fine_tune_learning_rate="auto",
            optimizer="adam", schedule="cosine", warmup_fraction=0.05, mixed_precision="auto",
            jit_compile="auto", cache_features="auto", checkpoint_dir=None, callbacks=None,
            early_stopping_patience="auto", tensorboard=False, strategy=None,
            discriminative_lr=None, anchor_to_pretrained=None, seed=1337, verbose="auto",
            revert_diverged=True):
    """Trains `student` on `teacher`'s soft targets and the labels.

    loss = `alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) *
    cross-entropy(labels, student)`. The student trains with `fit()`: head
    phase, then fine-tuning (for a student from scratch, pass
    `head_epochs=0, unfreeze_fraction=1.0`), with the same callbacks,
    checkpoints, mixed precision and `TrainingResult`, and stays a plain
    Keras model for `export()`. The logged `accuracy` is against the labels.
    It takes `fit()`'s arguments but `loss`, `metrics`, `class_weight` and
    `label_smoothing` (the distillation loss replaces them) and `batch_size`
    (the data comes batched).

    Args:
        teacher: `keras.Model`. A trained classifier (softmax output), for
            example an EfficientNetB3 fine-tuned with `fit()`.
        student: `keras.Model`. From `build_classifier()`, with the
            teacher's number of classes (for example MobileNetV3Small); data at
            another image size is resized for it (and for the teacher).
        data: `DatasetBundle` or `tf.data.Dataset` of `(images, labels)`
            batches with integer labels.
        temperature: float > 0. Defaults to `4.0`.
        alpha: float in [0, 1]. Weight of the soft targets; `0` is plain
            training on the labels. Defaults to `0.9`.
        validation_data: dataset, when `data` is not a bundle. Defaults to None.
        cache_teacher: `"auto"` (cache the teacher's outputs when the data's
            order is fixed) or False. Defaults to `"auto"`.
        head_epochs, fine_tune_epochs: int or `"auto"`. As in `fit()`.
        unfreeze_blocks, unfreeze_layers, unfreeze_fraction: As in `fit()`.
        head_learning_rate, fine_tune_learning_rate, optimizer, schedule: As in
            `fit()`.
        warmup_fraction, discriminative_lr, anchor_to_pretrained: As in `fit()`.
        mixed_precision, jit_compile, cache_features, strategy: As in `fit()`.
        checkpoint_dir, callbacks, early_stopping_patience, tensorboard: As in
            `fit()`.
        seed, verbose, revert_diverged: As in `fit()`.

    Returns:
        A `TrainingResult` (its `model` is the student).

    Example:

    >>> import numpy as np, tftransfer
    >>> x, y = np.random.uniform(0, 255, (32, 32, 32, 3)), np.arange(32) % 2
    >>> data = tftransfer.data.from_arrays(x, y)
    >>> teacher = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> student = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> result = tftransfer.distill(teacher, student, data, head_epochs=1,
    ...                             fine_tune_epochs=1, verbose=0)
    >>> result.history["phase"]
    ['head', 'fine_tune']
    """
    _check(teacher, student, temperature, alpha)
    if isinstance(data, DatasetBundle):
        train, validation = data.train, data.validation
    elif isinstance(data, tf.data.Dataset):
        train, validation = data, validation_data
    else:
        raise TypeError("data: expected a DatasetBundle or a tf.data.Dataset of (images, "
                        f"labels) batches; received {type(data).__name__}.")
    packed_train, cached = pack_with_teacher(teacher, train, cache=cache_teacher)
    packed_validation, _ = pack_with_teacher(teacher, validation, cache=cache_teacher)
    shape = student.input_shape
    if isinstance(shape, tuple) and len(shape) == 4 and None not in shape[1:3]:
        # A student at another input size than the data (a 16x16 student of a 32x32
        # teacher) gets the same images, resized for it.
        size = (int(shape[1]), int(shape[2]))

        def resize(images, targets):
            if tuple(images.shape[1:3]) != size:
                images = tf.image.resize(images, size)
            return images, targets

        packed_train = packed_train.map(resize)
        packed_validation = (packed_validation.map(resize)
                             if packed_validation is not None else None)
    trainer = Trainer(student, packed_train, validation_data=packed_validation,
                      loss=PackedDistillationLoss(temperature, alpha),
                      metrics=[PackedAccuracy()], class_weight=None, packed_labels=True,
                      head_epochs=head_epochs, fine_tune_epochs=fine_tune_epochs,
                      unfreeze_blocks=unfreeze_blocks, unfreeze_layers=unfreeze_layers,
                      unfreeze_fraction=unfreeze_fraction,
                      head_learning_rate=head_learning_rate,
                      fine_tune_learning_rate=fine_tune_learning_rate, optimizer=optimizer,
                      schedule=schedule, warmup_fraction=warmup_fraction,
                      mixed_precision=mixed_precision, jit_compile=jit_compile,
                      cache_features=cache_features, checkpoint_dir=checkpoint_dir,
                      callbacks=callbacks, early_stopping_patience=early_stopping_patience,
                      tensorboard=tensorboard, strategy=strategy,
                      discriminative_lr=discriminative_lr,
                      anchor_to_pretrained=anchor_to_pretrained, seed=seed, verbose=verbose,
                      revert_diverged=revert_diverged)
    result = trainer.run()
    result.teacher_outputs_cached = cached
    return result


@keras.saving.register_keras_serializable(package="tftransfer")
class Distiller(keras.Model):
    """A `keras.Model` that trains its student on its teacher's soft targets.

    `Distiller(teacher, student)` calls the student; compile it with an
    optimizer (and metrics against the labels) and `fit` it on `(images,
    labels)`: the teacher runs in inference mode on each batch and the loss
    is `alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE`. Use
    `distiller.student` afterwards.

    Args:
        teacher: `keras.Model` with a softmax output.
        student: `keras.Model` with the same number of classes.
        temperature: float > 0. Defaults to `4.0`.
        alpha: float in [0, 1]. Defaults to `0.9`.

    Example:

    >>> import keras, numpy as np, tftransfer
    >>> teacher = tftransfer.build_classifier("FashionCNN", 3, weights=None)
    >>> student = tftransfer.build_classifier("FashionCNN", 3, weights=None)
    >>> distiller = tftransfer.Distiller(teacher, student, temperature=2.0)
    >>> distiller.compile(keras.optimizers.Adam(1e-3))
    >>> x, y = np.random.uniform(0, 255, (8, 32, 32, 3)), np.arange(8) % 3
    >>> history = distiller.fit(x, y, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss']
    """

    def __init__(self, teacher, student, temperature=4.0, alpha=0.9, **kwargs):
        super().__init__(**kwargs)
        _check(teacher, student, temperature, alpha)
        self.teacher = teacher
        self.student = student
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.teacher.trainable = False

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_log = _log_probabilities(self.teacher)(x)
        losses = distillation_loss(y, teacher_log, y_pred, temperature=self.temperature,
                                   alpha=self.alpha)
        if sample_weight is not None:
            losses = losses * ops.cast(ops.reshape(sample_weight, (-1,)), losses.dtype)
        loss = ops.mean(losses)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return loss

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha,
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"),
                                                        custom_objects=custom_objects)
        student = keras.saving.deserialize_keras_object(config.pop("student"),
                                                        custom_objects=custom_objects)
        return cls(teacher, student, **config)
