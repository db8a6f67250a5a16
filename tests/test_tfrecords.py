"""Sharded TFRecord input: write a bundle, read it back, fail cleanly."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer import files
from tftransfer.data import tfrecords
from tftransfer.data.tfrecords import from_tfrecords, write_tfrecords


def _bundle(n=16, size=8, classes=2, multilabel=False, smooth=False, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    if smooth:  # JPEG's error is small on smooth images, large on noise
        ramp = np.linspace(0, 60, size)
        x = (rng.uniform(40, 120, (n, 1, 1, 3)) + ramp[None, :, None, None]
             + ramp[None, None, :, None])
    else:
        x = rng.integers(0, 256, (n, size, size, 3))
    x = x.astype("uint8")
    y = (rng.integers(0, 2, (n, classes)) if multilabel
         else np.arange(n) % classes)
    return tftransfer.data.from_arrays(x, y, validation_split=0.25, seed=0, **kwargs)


def _examples(dataset):
    """`[(image, label)]` of one pass, in the order the dataset gives them."""
    found = []
    for images, labels in dataset.as_numpy_iterator():
        found += list(zip(images, labels))
    return found


def _sorted(examples):
    """An order-free form of `_examples()`: sorted by image bytes."""
    return sorted((image.astype("uint8").tobytes(), np.asarray(label).tolist())
                  for image, label in examples)


def test_png_round_trip_is_exact(tmp_path):
    bundle = _bundle()
    write_tfrecords(bundle, tmp_path / "records", image_format="png", shards=2)
    loaded = from_tfrecords(tmp_path / "records", batch_size=5)
    assert loaded.class_names == bundle.class_names
    assert loaded.counts == bundle.counts
    assert loaded.class_weights == bundle.class_weights
    assert (loaded.image_size, loaded.task, loaded.test) == ((8, 8), "multiclass", None)
    for split in ("train", "validation"):
        original, read = _examples(getattr(bundle, split)), _examples(getattr(loaded, split))
        assert read[0][0].dtype == np.float32 and read[0][1].dtype == np.int64
        assert _sorted(read) == _sorted(original)
    cached = from_tfrecords(tmp_path / "records", cache="memory").train
    for _ in range(2):  # the first epoch fills the cache, the second reads it
        assert _sorted(_examples(cached)) == _sorted(_examples(bundle.train))


def test_jpeg_round_trip_is_within_jpeg_error(tmp_path):
    bundle = _bundle(size=16, smooth=True)
    metadata = write_tfrecords(bundle, tmp_path / "records", quality=95)
    assert metadata["image_format"] == "jpeg"
    loaded = from_tfrecords(tmp_path / "records")
    # One shard a split (shards=None, a few KB): validation comes back in written order.
    original, read = _examples(bundle.validation), _examples(loaded.validation)
    assert [label for _, label in read] == [label for _, label in original]
    error = np.abs(np.stack([image for image, _ in read]) -
                   np.stack([image for image, _ in original]))
    assert 0 < error.max() <= 8 and error.mean() < 2.0, (error.mean(), error.max())
    assert sorted(label for _, label in _examples(loaded.train)) == sorted(
        label for _, label in _examples(bundle.train))


def test_multilabel_round_trip(tmp_path):
    bundle = _bundle(classes=3, multilabel=True, class_names=["cat", "dog", "sky"])
    assert bundle.task == "multilabel"
    write_tfrecords(bundle, tmp_path / "records", image_format="png")
    loaded = from_tfrecords(tmp_path / "records")
    assert (loaded.task, loaded.class_names) == ("multilabel", ["cat", "dog", "sky"])
    assert loaded.counts == bundle.counts
    read = _examples(loaded.train)
    assert read[0][1].dtype == np.float32 and read[0][1].shape == (3,)
    assert _sorted(read) == _sorted((image, label.astype("float32"))
                                    for image, label in _examples(bundle.train))


def test_shard_count_and_file_names(tmp_path, monkeypatch):
    bundle = _bundle(n=24)
    metadata = write_tfrecords(bundle, tmp_path / "three", shards=3)
    names = sorted(os.listdir(tmp_path / "three"))
    assert names == ["metadata.json"] + [
        f"{split}-{index:05d}-of-00003.tfrecord"
        for split in ("train", "validation") for index in range(3)]
    train = metadata["splits"]["train"]
    assert [shard["examples"] for shard in train["shards"]] == [6, 6, 6]  # round-robin
    assert json.loads((tmp_path / "three" / "metadata.json").read_text()) == metadata

    # shards=None: one shard per 128 MiB of records, so one for this tiny set ...
    write_tfrecords(bundle, tmp_path / "auto")
    assert sorted(os.listdir(tmp_path / "auto"))[1:] == [
        "train-00000-of-00001.tfrecord", "validation-00000-of-00001.tfrecord"]
    # ... and a new one whenever the current shard reaches the size.
    monkeypatch.setattr(tfrecords, "SHARD_BYTES", 1)
    metadata = write_tfrecords(bundle, tmp_path / "small")
    assert len(metadata["splits"]["train"]["shards"]) == 18
    assert len(_examples(from_tfrecords(tmp_path / "small").train)) == 18


def _order(folder, seed):
    loaded = from_tfrecords(folder, batch_size=4, seed=seed, deterministic=True)
    return [image.tobytes() for image, _ in _examples(loaded.train)]


@pytest.mark.parametrize("shuffled", ["examples", "files"])
def test_deterministic_order_follows_the_seed(tmp_path, monkeypatch, shuffled):
    if shuffled == "files":  # no example buffer: the order is the seeded order of 8 shards
        monkeypatch.setattr(tfrecords, "SHUFFLE_EXAMPLES", 1)
        monkeypatch.setattr(tfrecords, "MIN_SHUFFLE", 1)
    shards = 8 if shuffled == "files" else 1
    write_tfrecords(_bundle(n=32), tmp_path / "records", shards=shards, image_format="png")
    first = _order(tmp_path / "records", seed=1)
    assert first == _order(tmp_path / "records", seed=1)
    assert first != _order(tmp_path / "records", seed=2)
    assert sorted(first) == sorted(_order(tmp_path / "records", seed=2))
    faster = from_tfrecords(tmp_path / "records", deterministic=False).train
    assert faster.options().deterministic is False


def _fail_after(monkeypatch, calls):
    real, seen = tfrecords._example, []

    def failing(*args):
        seen.append(1)
        if len(seen) > calls:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(tfrecords, "_example", failing)


def test_killed_write_leaves_no_folder(tmp_path, monkeypatch):
    bundle = _bundle()
    _fail_after(monkeypatch, 5)
    with pytest.raises(RuntimeError, match="killed"):
        write_tfrecords(bundle, tmp_path / "records", shards=2)
    assert os.listdir(tmp_path) == []  # no target, no temporary sibling
    with pytest.raises(ValueError, match="does not exist"):
        from_tfrecords(tmp_path / "records")


def test_killed_overwrite_keeps_the_old_folder(tmp_path, monkeypatch):
    write_tfrecords(_bundle(n=16), tmp_path / "records", shards=2)
    _fail_after(monkeypatch, 5)
    with pytest.raises(RuntimeError, match="killed"):
        write_tfrecords(_bundle(n=24), tmp_path / "records", shards=3, overwrite=True)
    assert os.listdir(tmp_path) == ["records"]
    assert sum(from_tfrecords(tmp_path / "records").counts["train"].values()) == 12


def test_killed_process_leaves_no_readable_folder(tmp_path):
    target = tmp_path / "records"
    code = textwrap.dedent(f"""
        import os, signal, numpy as np, tftransfer
        from tftransfer.data import tfrecords
        real, calls = tfrecords._example, []

        def example(*args):  # SIGKILL halfway: no except, no finally runs
            calls.append(1)
            if len(calls) > 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)

        tfrecords._example = example
        bundle = tftransfer.data.from_arrays(np.zeros((16, 8, 8), "uint8"), np.arange(16) % 2)
        tfrecords.write_tfrecords(bundle, r"{target}", shards=2)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    leftovers = os.listdir(tmp_path)
    assert len(leftovers) == 1 and files.TEMPORARY_TAG in leftovers[0], leftovers
    with pytest.raises(ValueError, match="does not exist"):
        from_tfrecords(target)
    write_tfrecords(_bundle(), target)  # the next write removes what the killed one left
    assert os.listdir(tmp_path) == ["records"]


def test_existing_folder_needs_overwrite(tmp_path):
    write_tfrecords(_bundle(n=16), tmp_path / "records")
    with pytest.raises(ValueError, match="overwrite=True"):
        write_tfrecords(_bundle(n=24), tmp_path / "records")
    write_tfrecords(_bundle(n=24), tmp_path / "records", overwrite=True)
    assert sum(from_tfrecords(tmp_path / "records").counts["train"].values()) == 18
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="did not write"):
        write_tfrecords(_bundle(), tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_bad_folders_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*write_tfrecords"):
        from_tfrecords(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metadata.json.*write_tfrecords"):
        from_tfrecords(tmp_path / "empty")

    def broken(name, change):
        folder = tmp_path / name
        write_tfrecords(_bundle(), folder, shards=2)
        change(folder)
        return folder

    path = broken("not_json", lambda f: (f / "metadata.json").write_text("{"))
    with pytest.raises(ValueError, match="not valid .* metadata.*write_tfrecords"):
        from_tfrecords(path)

    def drop_key(folder):
        metadata = json.loads((folder / "metadata.json").read_text())
        del metadata["class_names"]
        (folder / "metadata.json").write_text(json.dumps(metadata))

    with pytest.raises(ValueError, match="class_names"):
        from_tfrecords(broken("no_key", drop_key))
    path = broken("no_shard", lambda f: (f / "train-00001-of-00002.tfrecord").unlink())
    with pytest.raises(ValueError, match="train-00001-of-00002.tfrecord is missing"):
        from_tfrecords(path)

    def truncate(folder):
        shard = folder / "train-00000-of-00002.tfrecord"
        shard.write_bytes(shard.read_bytes()[:-10])

    with pytest.raises(ValueError, match="truncated.*write_tfrecords"):
        from_tfrecords(broken("truncated", truncate))

    def future(folder):
        metadata = json.loads((folder / "metadata.json").read_text())
        metadata["format_version"] = 99
        (folder / "metadata.json").write_text(json.dumps(metadata))

    with pytest.raises(ValueError, match="Upgrade tftransfer"):
        from_tfrecords(broken("future", future))
    with pytest.raises(ValueError, match="cache: .*'memory'"):
        from_tfrecords(broken("fine", lambda folder: None), cache="auto")


def test_write_rejects_bad_arguments(tmp_path):
    bundle = _bundle()
    for kwargs, message in [({"image_format": "gif"}, "image_format"),
                            ({"quality": 0}, "quality"), ({"shards": 0}, "shards")]:
        with pytest.raises(ValueError, match=message):
            write_tfrecords(bundle, tmp_path / "records", **kwargs)
    with pytest.raises(ValueError, match="augmentation=None"):
        write_tfrecords(_bundle(augmentation="light"), tmp_path / "records")
    with pytest.raises(TypeError, match="DatasetBundle"):
        write_tfrecords(bundle.train, tmp_path / "records")
    too_bright = tftransfer.data.from_arrays(np.full((8, 4, 4), 300.0), np.arange(8) % 2)
    with pytest.raises(ValueError, match=r"pixels above 255 or not finite.*\[0, 255\]"):
        write_tfrecords(too_bright, tmp_path / "records")
    assert os.listdir(tmp_path) == []


def test_train_split_is_auto_sharded_by_file(tmp_path):
    write_tfrecords(_bundle(n=32), tmp_path / "records", shards=4, image_format="png")
    train = from_tfrecords(tmp_path / "records").train
    assert (train.options().experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.FILE)
    # What MultiWorkerMirroredStrategy does to the dataset on each of 2 workers.
    from tensorflow.python.data.experimental.ops import distribute

    workers = [_sorted(_examples(distribute._AutoShardDataset(train, 2, index)))
               for index in range(2)]
    assert len(workers[0]) == len(workers[1]) == 12
    assert sorted(workers[0] + workers[1]) == _sorted(_examples(train))


def test_fit_runs_on_tfrecords(tmp_path):
    write_tfrecords(_bundle(n=32, size=16, classes=3), tmp_path / "records", shards=2)
    data = from_tfrecords(tmp_path / "records", batch_size=8)
    assert int(data.train.cardinality()) == 3  # 24 examples: known, for the schedules
    model = tftransfer.build_classifier("FashionCNN", 3, image_size=16, weights=None)
    result = tftransfer.fit(model, data, head_epochs=1, fine_tune_epochs=0, verbose=0)
    assert result.history["phase"] == ["head"]
    assert np.isfinite(result.history["loss"]).all()
