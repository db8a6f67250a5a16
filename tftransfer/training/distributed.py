"""Training across machines with MultiWorkerMirroredStrategy.

Keras 3.15's `model.fit` fails under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585, tensorflow/tensorflow#72388): its symbolic build
reduces a data batch with `strategy.reduce("MEAN", ...)`, and its metric
reduction asks for `axis=0` on scalars, both of which the collective strategy
rejects. tftransfer runs the same phases with a small synchronous training loop
of its own there: per-replica gradients, averaged over the global batch, applied
by the model's compiled optimizer, with the Keras callbacks called per epoch.
Class weights and compiled metrics other than the loss are not used in this
loop. `MirroredStrategy` (several GPUs on one machine) goes through `model.fit`.
"""

import time

import keras
import tensorflow as tf

from tftransfer.data.sharding import with_auto_shard


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or (
        type(strategy).__name__ == "CollectiveAllReduceStrategy"
        and strategy.extended._num_workers > 1)


def _sharded(dataset, strategy):
    """The auto-shard policy the source needs (FILE for files read by a reader,
    DATA otherwise), unless the data or the user chose one already."""
    if (dataset.options().experimental_distribute.auto_shard_policy
            != tf.data.experimental.AutoShardPolicy.AUTO):
        return dataset  # e.g. from_tfrecords sets FILE
    return with_auto_shard(dataset, num_workers=strategy.extended._num_workers)


class _History:
    def __init__(self):
        self.history = {}
        self.epoch = []


def multi_worker_fit(model, train, *, validation=None, epochs, initial_epoch=0, callbacks=(),
                     strategy, verbose=1):
    """Synchronous data-parallel training of a compiled model; returns a History-like."""
    loss_object = model.loss
    if isinstance(loss_object, str):
        loss_object = keras.losses.get(loss_object)
    per_example = type(loss_object).from_config({**loss_object.get_config(), "reduction": None})
    distributed_train = strategy.experimental_distribute_dataset(_sharded(train, strategy))
    distributed_validation = (
        strategy.experimental_distribute_dataset(_sharded(validation, strategy))
        if validation is not None else None)

    def replica_loss(inputs, labels, training):
        predictions = model(inputs, training=training)
        values = per_example(labels, predictions)
        # Examples of this step on all replicas: uneven shares leave a replica
        # fewer or none (0 / 0 was NaN).
        global_batch = tf.distribute.get_replica_context().all_reduce(
            "SUM", tf.cast(tf.shape(values)[0], values.dtype))
        loss = tf.math.divide_no_nan(tf.reduce_sum(values), global_batch)
        if model.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        return loss

    @tf.function
    def train_step(batch):
        def step(inputs, labels):
            with tf.GradientTape() as tape:
                loss = replica_loss(inputs, labels, True)
            variables = model.trainable_variables
            gradients = tape.gradient(loss, variables)
            model.optimizer.apply_gradients(zip(gradients, variables))
            return loss

        return strategy.reduce("SUM", strategy.run(step, args=batch), axis=None)

    @tf.function
    def test_step(batch):
        return strategy.reduce(
            "SUM", strategy.run(lambda x, y: replica_loss(x, y, False), args=batch), axis=None)

    callback_list = keras.callbacks.CallbackList(list(callbacks), model=model)
    history = _History()
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        start = time.time()
        callback_list.on_epoch_begin(epoch)
        total, steps = 0.0, 0
        for step_index, batch in enumerate(distributed_train):
            callback_list.on_train_batch_begin(step_index)
            loss = float(train_step(batch))
            total, steps = total + loss, steps + 1
            callback_list.on_train_batch_end(step_index, {"loss": loss})
            if model.stop_training:
                break
        logs = {"loss": total / max(steps, 1)}
        if distributed_validation is not None:
            losses = [float(test_step(batch)) for batch in distributed_validation]
            logs["val_loss"] = sum(losses) / max(len(losses), 1)
        callback_list.on_epoch_end(epoch, logs)
        history.epoch.append(epoch)
        for key, value in logs.items():
            history.history.setdefault(key, []).append(value)
        if verbose:
            details = " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {time.time() - start:.1f}s - {details}")
        if model.stop_training:
            break
    callback_list.on_train_end()
    return history
