"""tf.data service (dispatcher and workers in this process) and multi-worker auto-sharding."""

import collections
import dataclasses
import socket
import time
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
# The op a multi-worker strategy applies when it distributes a dataset; called
# here directly to see what each worker of a cluster would read.
from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

import tftransfer
from tftransfer.data.service import (
    DataService,
    distribute_bundle,
    start_data_service,
    start_data_workers,
)
from tftransfer.data.sharding import shard_policy_for, with_auto_shard

Policy = tf.data.experimental.AutoShardPolicy
COUNT, SIZE = 24, 16


@pytest.fixture(scope="module")
def service():
    with start_data_service(workers=2) as running:
        yield running


def make_bundle():
    # Image i is filled with the value i: an example's id travels with it.
    ids = np.arange(COUNT, dtype="uint8")
    x = np.repeat(ids[:, None], SIZE * SIZE, axis=1).reshape(COUNT, SIZE, SIZE)
    y = (ids >= COUNT // 2).astype("int64")
    return tftransfer.data.from_arrays(x, y, batch_size=4, validation_split=0.25, seed=0)


@pytest.fixture(scope="module")
def bundle():
    return make_bundle()


def ids_and_labels(dataset):
    ids, labels = [], []
    for images, batch_labels in dataset:
        ids.extend(int(value) for value in images.numpy()[:, 0, 0, 0])
        labels.extend(int(value) for value in batch_labels.numpy())
    return ids, labels


def write_folder(path):
    """Two class folders of three tiny PNG files."""
    path.mkdir(exist_ok=True)
    for label in ("a", "b"):
        (path / label).mkdir()
        for index in range(3):
            tf.io.write_file(str(path / label / f"{index}.png"),
                             tf.io.encode_png(np.full((4, 4, 3), index, np.uint8)))
    return str(path)


def free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


class ExamplesSeen(keras.metrics.Metric):
    """Counts the examples of an epoch (Keras resets metrics each epoch)."""

    def __init__(self, name="examples", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_weight(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))

    def result(self):
        return self.count * 1.0  # a value, not the variable evaluate() resets


def test_distributed_epoch_reads_every_example_once_per_epoch(service, bundle):
    local_ids, _ = ids_and_labels(bundle.train)
    remote = distribute_bundle(bundle, service)
    assert remote.class_names == bundle.class_names and remote.counts == bundle.counts
    for _ in range(2):  # each epoch is a new job, read once more
        ids, labels = ids_and_labels(remote.train)
        assert sorted(ids) == sorted(local_ids) and len(set(ids)) == 18
        assert labels == [int(i >= COUNT // 2) for i in ids]  # pairs stay together
    assert sorted(ids_and_labels(remote.validation)[0]) == sorted(
        ids_and_labels(bundle.validation)[0])
    assert remote.test is None and remote.train is not bundle.train


def test_parallel_epochs_gives_one_pass_per_worker(service, bundle):
    remote = distribute_bundle(bundle, service, processing_mode="parallel_epochs",
                               splits=("train",))
    ids, _ = ids_and_labels(remote.train)
    local_ids, _ = ids_and_labels(bundle.train)
    assert collections.Counter(ids) == collections.Counter(local_ids * 2)
    assert remote.validation is bundle.validation  # not among the splits: stays local


def test_trainers_sharing_a_job_split_the_epoch(service, bundle):
    first = distribute_bundle(bundle, service, job_name="shared", splits=("train",))
    second = distribute_bundle(bundle, service, job_name="shared", splits=("train",))
    # tf.data turns auto-sharding off for a shared job: the service splits it.
    assert first.train.options().experimental_distribute.auto_shard_policy == Policy.OFF
    iterators, ids = [iter(first.train), iter(second.train)], []
    while iterators:
        for iterator in list(iterators):
            try:
                ids.extend(int(v) for v in next(iterator)[0].numpy()[:, 0, 0, 0])
            except StopIteration:
                iterators.remove(iterator)
    # Two readers of one job: together they read the epoch once, not twice.
    assert sorted(ids) == sorted(ids_and_labels(bundle.train)[0])


def test_fit_and_model_fit_train_from_the_service(service, bundle):
    remote = distribute_bundle(bundle, service)
    model = tftransfer.build_classifier("FashionCNN", 2, image_size=SIZE, weights=None)
    result = tftransfer.fit(model, remote, head_epochs=1, fine_tune_epochs=0, verbose=0)
    # The head phase cached the features of the train split, read from the service.
    assert result.feature_cache.startswith("on (memory): 18 examples")
    assert np.isfinite(result.history["loss"][0]) and np.isfinite(result.history["val_loss"][0])

    model = tftransfer.build_classifier("FashionCNN", 2, image_size=SIZE, weights=None)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=[ExamplesSeen()])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Your input ran out of data")  # unknown length
        history = model.fit(remote.train, validation_data=remote.validation, epochs=2,
                            verbose=0).history
    assert history["examples"] == [18.0, 18.0] and history["val_examples"] == [6.0, 6.0]
    assert all(np.isfinite(history["loss"]))


@pytest.mark.timeout(60, method="thread")  # without the up-front check, tf.data would hang
def test_a_wrong_target_fails_clearly_and_fast(bundle):
    for target, error in (("localhost:5050", ValueError), ("http://localhost:5050", ValueError),
                          ("grpc://localhost:port", ValueError), (5050, TypeError)):
        with pytest.raises(error, match="service: expected"):
            distribute_bundle(bundle, target)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"nothing answered at grpc://localhost:\d+"):
        distribute_bundle(bundle, f"grpc://localhost:{free_port()}", timeout=1.0)
    with pytest.raises(ConnectionError, match="Start the dispatcher first"):
        start_data_workers(f"grpc://localhost:{free_port()}", timeout=1.0)
    assert time.monotonic() - start < 10  # tf.data alone would wait, not fail
    with pytest.raises(ValueError, match="processing_mode"):
        distribute_bundle(bundle, "grpc://localhost:5050", processing_mode="epochs")
    with pytest.raises(ValueError, match="splits"):
        distribute_bundle(bundle, "grpc://localhost:5050", splits="train")
    with pytest.raises(ValueError, match="workers"):
        start_data_service(workers=-1)


def test_pipelines_workers_cannot_run_are_refused_or_flagged(service, bundle, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    folder = tftransfer.data.from_directory(write_folder(tmp_path / "images"), 4, batch_size=2,
                                            validation_split=0.0, cache=str(cache))
    # Every worker would write this cache at once, then read all of it.
    with pytest.raises(ValueError, match="train pipeline caches to the file"):
        distribute_bundle(folder, service)
    in_python = dataclasses.replace(bundle, train=bundle.train.map(
        lambda x, y: (tf.py_function(lambda v: v, [x], tf.float32), y)))
    with pytest.warns(UserWarning, match="train pipeline calls Python"):
        distribute_bundle(in_python, service)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distribute_bundle(bundle, service)  # tf ops only: no warning


def test_a_folder_checked_while_read_runs_on_the_service(service, tmp_path, monkeypatch):
    # A folder with files not checked yet flags what its pipeline reads in variables of
    # this process; the service's workers get the pipeline without them (and, until the
    # check ends, drop bad files uncounted, with a warning that says so).
    folder = write_folder(tmp_path / "images")
    tf.io.write_file(str(tmp_path / "images" / "b" / "bad.png"), b"not an image")
    monkeypatch.setattr(tftransfer.data.images, "CHECK_NOW_MAX_FILES", 2)
    data = tftransfer.data.from_directory(folder, 4, batch_size=2, validation_split=0.0)
    assert data.file_check is not None
    with pytest.warns(UserWarning, match="not all checked yet"):
        remote = distribute_bundle(data, service, splits=("train",))
    assert sum(int(labels.shape[0]) for _, labels in remote.train) == 6
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data.wait_for_file_checks()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        remote = distribute_bundle(data, service, splits=("train",))
    assert sum(int(labels.shape[0]) for _, labels in remote.train) == 6


def test_workers_join_a_dispatcher_started_elsewhere(bundle):
    with start_data_service(workers=0, host="127.0.0.1") as dispatcher:
        assert dispatcher.target.startswith("grpc://127.0.0.1:") and not dispatcher.workers
        with start_data_workers(dispatcher.target, workers=1, host="127.0.0.1") as workers:
            assert isinstance(workers, DataService) and workers.dispatcher is None
            remote = distribute_bundle(bundle, dispatcher.target, splits=("train",))
            assert sorted(ids_and_labels(remote.train)[0]) == sorted(
                ids_and_labels(bundle.train)[0])
    assert dispatcher.dispatcher is None and not workers.workers  # stopped


def shards(make_dataset, workers=2):
    """What each of `workers` workers reads in its first epoch under the auto-shard policy.

    Every worker builds its own pipeline, as the processes of a cluster do: a
    seeded shuffle gives each the same order in the same epoch.
    """
    return [list(_AutoShardDataset(make_dataset(), workers, index).as_numpy_iterator())
            for index in range(workers)]


def test_arrays_and_paths_are_sharded_by_data(bundle, tmp_path):
    assert shard_policy_for(bundle.train) == Policy.DATA
    sharded = with_auto_shard(bundle)
    for split in ("train", "validation"):
        assert getattr(sharded, split).options().experimental_distribute.auto_shard_policy \
            == Policy.DATA
    # Each worker keeps its own batches: together they read the epoch once.
    parts = shards(lambda: with_auto_shard(make_bundle()).train)
    ids = [int(v) for part in parts for images, _ in part for v in images[:, 0, 0, 0]]
    assert all(parts) and sorted(ids) == sorted(ids_and_labels(bundle.train)[0])
    # FILE finds no file to shard in arrays: the reason DATA is chosen.
    with pytest.raises(tf.errors.NotFoundError, match="unshardable"):
        shards(lambda: with_auto_shard(make_bundle().train, "file"))

    # Paths read by tf.io.read_file in a map are elements, not files: DATA too.
    folder = tftransfer.data.from_directory(write_folder(tmp_path), 4, batch_size=2,
                                            validation_split=0.0)
    assert shard_policy_for(folder.train) == Policy.DATA


def test_files_read_by_a_reader_are_sharded_by_file(service, bundle, tmp_path):
    paths = []
    for index in range(4):
        paths.append(str(tmp_path / f"part-{index}.tfrecord"))
        with tf.io.TFRecordWriter(paths[-1]) as writer:
            for record in range(3):
                writer.write(f"{index}-{record}".encode())
    records = tf.data.Dataset.from_tensor_slices(paths).interleave(
        tf.data.TFRecordDataset, num_parallel_calls=2).batch(2)
    assert shard_policy_for(records) == Policy.FILE
    parts = shards(lambda: with_auto_shard(records))
    files = [{record.decode().split("-")[0] for batch in part for record in batch}
             for part in parts]
    assert files[0] | files[1] == {"0", "1", "2", "3"} and not files[0] & files[1]
    assert shard_policy_for(tf.data.TFRecordDataset(paths)) == Policy.FILE
    assert shard_policy_for(records, num_workers=4) == Policy.FILE
    # Fewer files than workers (a small TFDS split is one file): FILE fails.
    with pytest.raises(tf.errors.InvalidArgumentError, match="Could not apply FILE"):
        shards(lambda: with_auto_shard(records, "file"), workers=5)
    assert shard_policy_for(records, num_workers=5) == Policy.DATA
    assert shard_policy_for(tf.data.TFRecordDataset(paths[0]), num_workers=2) == Policy.DATA
    parts = shards(lambda: with_auto_shard(records, num_workers=5), workers=5)
    assert sorted(record for part in parts for batch in part for record in batch) == sorted(
        f"{index}-{record}".encode() for index in range(4) for record in range(3))
    # Read from the service: the service hands out the data, no sharding on top.
    remote = distribute_bundle(bundle, service, splits=("train",))
    assert shard_policy_for(remote.train) == Policy.OFF


def test_with_auto_shard_checks_its_input_and_warns_on_random_order(bundle):
    dataset = with_auto_shard(bundle.train, Policy.FILE)
    assert dataset.options().experimental_distribute.auto_shard_policy == Policy.FILE
    with pytest.raises(ValueError, match="policy: expected"):
        with_auto_shard(bundle.train, "files")
    with pytest.raises(TypeError, match="data: expected"):
        with_auto_shard([1, 2])
    tf.random.set_seed(None)  # the autouse fixture set a global seed; drop it
    unseeded = tf.data.Dataset.range(8).shuffle(8).batch(2)
    with pytest.warns(UserWarning, match="shuffles without a seed"):
        with_auto_shard(unseeded)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with_auto_shard(tf.data.Dataset.range(8).shuffle(8, seed=1).batch(2))
        with_auto_shard(unseeded, "off")  # not sharded by data: order does not matter
