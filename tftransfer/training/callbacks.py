"""Callbacks tftransfer adds by default, and the ones users ask for by name."""

import math
import os

import keras


class TerminateOnNaNWithAdvice(keras.callbacks.Callback):
    """Stops training at the first NaN or infinite loss and says what to try.

    The message is kept in `self.message` and printed; `tftransfer.fit()`
    raises it as a `FloatingPointError` once Keras has stopped.
    """

    def __init__(self, learning_rate=None):
        super().__init__()
        self.learning_rate = learning_rate
        self.message = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if math.isnan(loss) or math.isinf(loss):
            lower = (f" (for example {self.learning_rate / 10:g} instead of "
                     f"{self.learning_rate:g})" if self.learning_rate else "")
            self.message = (
                f"The loss became {loss} at batch {batch}. Try a lower learning rate{lower}, "
                "check the inputs for NaN or infinite values and the labels for values "
                "outside the classes, or train in float32 (mixed_precision='float32')."
            )
            print(f"\ntftransfer: {self.message}")
            self.model.stop_training = True


def default_callbacks(*, full_model, monitor, early_stopping_patience, checkpoint_dir, phase,
                      learning_rate, tensorboard):
    """The callbacks of one phase: NaN guard, early stopping, checkpoints, logs."""
    callbacks = [TerminateOnNaNWithAdvice(learning_rate)]
    if early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=early_stopping_patience, restore_best_weights=True,
            start_from_epoch=0))
    if checkpoint_dir is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(
            os.path.join(checkpoint_dir, f"backup_{phase}"), save_freq="epoch",
            delete_checkpoint=True))
        callbacks.append(BestModelCheckpoint(full_model, os.path.join(checkpoint_dir, "best.keras"),
                                             monitor=monitor))
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(checkpoint_dir, "log.csv"),
                                                   append=True))
    if tensorboard:
        log_dir = tensorboard if isinstance(tensorboard, str) else os.path.join(
            checkpoint_dir or "logs", "tensorboard")
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir))
    return callbacks


class BestModelCheckpoint(keras.callbacks.Callback):
    """Saves the full classifier when `monitor` improves, atomically.

    Unlike `keras.callbacks.ModelCheckpoint`, it saves `model` (the whole
    classifier) even while the head trains on cached features, and writes a
    temporary file that it renames, so a kill never leaves a broken file.
    """

    def __init__(self, model, path, monitor="val_loss"):
        super().__init__()
        self.full_model = model
        self.path = path
        self.monitor = monitor
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        better = (value > self.best if "acc" in self.monitor else value < self.best) \
            if self.best is not None else True
        if better:
            self.best = value
            temporary = self.path + ".tmp.keras"
            self.full_model.save(temporary)
            os.replace(temporary, self.path)
