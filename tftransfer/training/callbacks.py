"""Callbacks tftransfer adds by default, and the ones users ask for by name."""

import glob
import math
import os
import shutil
import warnings

import keras

from tftransfer import files


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
        callbacks.append(ResumableBackup(os.path.join(checkpoint_dir, f"backup_{phase}")))
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
        # The best value so far is kept beside the file, so a resumed run (or the
        # next phase) only replaces the file with a better model.
        self.record = os.path.splitext(path)[0] + ".json"
        stored = files.read_json(self.record, {}) if os.path.exists(path) else {}
        self.best = stored.get("value") if stored.get("monitor") == monitor else None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        better = (value > self.best if "acc" in self.monitor else value < self.best) \
            if self.best is not None else True
        if better:
            self.best = float(value)
            with files.replacing(self.path) as temporary:
                self.full_model.save(temporary)
            files.write_json(self.record, {"monitor": self.monitor, "value": self.best,
                                           "epoch": int(epoch)})


class ResumableBackup(keras.callbacks.Callback):
    """Saves the training state every epoch so a killed `fit` resumes where it was.

    Like `keras.callbacks.BackupAndRestore`, but a kill at any moment leaves a
    state that loads: each epoch's weights (with the optimizer's) go to a new
    file under a temporary name that is renamed into place, and only then does
    `state.json` (also renamed into place) point at it. A state that cannot be
    read is reported and training starts the phase over, never from a torn
    file.

    Args:
        backup_dir: str. Folder of the state; removed when training ends.

    Example:

    >>> import numpy as np, keras, tempfile
    >>> from tftransfer.training.callbacks import ResumableBackup
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> backup = ResumableBackup(tempfile.mkdtemp() + "/backup")
    >>> _ = model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2, verbose=0,
    ...               callbacks=[backup])
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = os.fspath(backup_dir)
        self.state_path = os.path.join(self.backup_dir, "state.json")

    def on_train_begin(self, logs=None):
        files.remove_temporaries(self.backup_dir)
        state = files.read_json(self.state_path)
        if state is None:
            if os.path.exists(self.state_path):
                warnings.warn(f"tftransfer: {self.state_path} is not readable; this phase "
                              "starts over.", stacklevel=2)
            return
        weights = os.path.join(self.backup_dir, str(state.get("weights", "")))
        try:
            optimizer = self.model.optimizer
            if optimizer is not None and not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            self.model.load_weights(weights)
        except Exception as error:  # a state from another model, or removed by hand
            warnings.warn(f"tftransfer: the backup {weights} does not load ({error}); this "
                          "phase starts over.", stacklevel=2)
            return
        self.model._initial_epoch = int(state["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        with files.replacing(os.path.join(self.backup_dir, name)) as temporary:
            self.model.save_weights(temporary)
        files.write_json(self.state_path, {"epoch": epoch + 1, "weights": name})
        for old in glob.glob(os.path.join(glob.escape(self.backup_dir), "epoch-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)

    def on_train_end(self, logs=None):
        # Keras keeps `_initial_epoch` after fit: the next fit must not start there.
        self.model._initial_epoch = None
        shutil.rmtree(self.backup_dir, ignore_errors=True)
