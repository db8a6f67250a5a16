import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tftransfer
from tftransfer.data import from_arrays, from_csv, from_directory, from_texts

SIZE = (16, 16)


def _solid(value, size=(20, 24)):
    return np.full(size + (3,), value, dtype=np.uint8)


def _write(path, value, kind):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = _solid(value)
    if kind == "jpeg":
        Image.fromarray(pixels).save(path, format="JPEG", quality=95)
    elif kind == "progressive":
        Image.fromarray(pixels).save(path, format="JPEG", quality=95, progressive=True)
    elif kind == "rgba":
        alpha = np.full(pixels.shape[:2] + (1,), 100, np.uint8)
        Image.fromarray(np.concatenate([pixels, alpha], -1), "RGBA").save(path, format="PNG")
    elif kind == "gray":
        Image.fromarray(pixels[:, :, 0], "L").save(path, format="PNG")
    elif kind == "gif":  # animated: the first frame is the one that counts
        frames = [Image.fromarray(pixels), Image.fromarray(_solid(255 - value))]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    elif kind == "bmp":
        Image.fromarray(pixels).save(path, format="BMP")
    else:
        raise ValueError(kind)


@pytest.fixture
def messy_folder(tmp_path):
    """Two real classes of every format, bad files, hidden files and an empty class.

    Every good image is a solid gray with its own value, so a pixel tells which
    file (and so which class) an example came from.
    """
    root = tmp_path / "photos"
    values = {}
    kinds = ["jpeg", "progressive", "rgba", "gray", "gif", "bmp"]
    value = 10
    for index, kind in enumerate(kinds):
        path = root / "cats" / f"cat_{index}.{ 'jpg' if 'jp' in kind or kind == 'progressive' else {'rgba': 'png', 'gray': 'png', 'gif': 'gif', 'bmp': 'bmp'}[kind]}"
        _write(str(path), value, kind)
        values[value] = "cats"
        value += 10
    _write(str(root / "cats" / "nested" / "deeper.jpg"), value, "jpeg")
    values[value] = "cats"
    value += 10
    for index in range(5):
        _write(str(root / "dogs" / f"dog_{index}.jpg"), value, "jpeg")
        values[value] = "dogs"
        value += 10
    good = root / "cats" / "cat_0.jpg"
    contents = good.read_bytes()
    (root / "cats" / "truncated.jpg").write_bytes(contents[: len(contents) // 2])
    (root / "dogs" / "zero.jpg").write_bytes(b"")
    (root / "dogs" / "notes.jpg").write_text("this is not an image")
    _write(str(root / "dogs" / ".hidden.jpg"), 250, "jpeg")
    _write(str(root / ".thumbnails" / "x" / "thumb.jpg"), 250, "jpeg")
    (root / "empty").mkdir()
    return root, values


def _all_examples(bundle):
    images, labels = [], []
    for split in (bundle.train, bundle.validation, bundle.test):
        if split is None:
            continue
        for x, y in split:
            images.append(x.numpy())
            labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_messy_folder_keeps_exactly_the_readable_images(messy_folder):
    root, values = messy_folder
    with pytest.warns(UserWarning) as record:
        bundle = from_directory(root, SIZE, batch_size=4, validation_split=0.25, seed=1)
    messages = " ".join(str(w.message) for w in record)
    assert "skipped 3 unreadable file(s)" in messages
    assert "empty class folder(s): ['empty']" in messages
    assert bundle.class_names == ["cats", "dogs"]
    assert sorted(os.path.basename(p) for p, _ in bundle.skipped) == [
        "notes.jpg", "truncated.jpg", "zero.jpg"]
    assert dict(bundle.skipped)[str(root / "dogs" / "zero.jpg")] == "empty file"
    assert bundle.empty_classes == ["empty"]
    kept = {split: sum(counts.values()) for split, counts in bundle.counts.items()}
    assert kept["train"] + kept["validation"] == 12 and kept["test"] == 0
    assert bundle.counts["train"]["cats"] + bundle.counts["validation"]["cats"] == 7

    images, labels = _all_examples(bundle)
    assert images.shape == (12,) + SIZE + (3,) and images.dtype == np.float32
    seen = []
    for image, label in zip(images, labels):
        mean = image.mean()
        value = min(values, key=lambda v: abs(v - mean))
        assert abs(value - mean) < 4  # a solid image, decoded to RGB whatever its format
        assert bundle.class_names[label] == values[value]
        seen.append(value)
    assert sorted(seen) == sorted(values)  # exactly the kept images, each once


def test_class_weights_follow_imbalance(messy_folder):
    root, _ = messy_folder
    with pytest.warns(UserWarning):
        bundle = from_directory(root, SIZE, validation_split=0.0)
    cats, dogs = bundle.counts["train"]["cats"], bundle.counts["train"]["dogs"]
    assert (cats, dogs) == (7, 5)
    assert bundle.class_weights[0] == pytest.approx(12 / (2 * 7))
    assert bundle.class_weights[1] == pytest.approx(12 / (2 * 5))


@pytest.fixture
def even_folder(tmp_path):
    root = tmp_path / "even"
    for label, name in enumerate(["a", "b", "c"]):
        for index in range(10):
            _write(str(root / name / f"{index}.png"), 5 + 8 * (label * 10 + index), "gray")
    return root


def _values(dataset):
    return sorted(round(float(x.numpy().mean())) for batch, _ in dataset for x in batch)


def test_splits_are_deterministic_for_a_seed_and_disjoint(even_folder):
    first = from_directory(even_folder, SIZE, validation_split=0.2, test_split=0.2, seed=7)
    second = from_directory(even_folder, SIZE, validation_split=0.2, test_split=0.2, seed=7)
    other = from_directory(even_folder, SIZE, validation_split=0.2, test_split=0.2, seed=8)
    parts = {split: _values(getattr(first, split)) for split in ("train", "validation", "test")}
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [18, 6, 6]
    assert not set(parts["train"]) & set(parts["validation"])
    assert not set(parts["train"]) & set(parts["test"])
    assert not set(parts["validation"]) & set(parts["test"])
    assert parts["validation"] == _values(second.validation)
    assert parts["test"] == _values(second.test)
    assert parts["validation"] != _values(other.validation)
    # Stratified: every class is in every split.
    assert all(count == 2 for count in first.counts["validation"].values())
    # The same seed gives the same shuffled order; each epoch reshuffles.
    third = from_directory(even_folder, SIZE, validation_split=0.2, test_split=0.2, seed=7)
    order = lambda bundle: [float(x.numpy().mean()) for batch, _ in bundle.train for x in batch]
    first_epoch = order(second)
    assert first_epoch == order(third)
    assert order(second) != first_epoch


def test_presplit_folders_are_recognised(tmp_path):
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for name in ("x", "y"):
            for index in range(count):
                _write(str(tmp_path / split / name / f"{index}.png"), 40 + index, "gray")
    bundle = from_directory(tmp_path, SIZE)
    assert bundle.counts["train"] == {"x": 4, "y": 4}
    assert bundle.counts["validation"] == {"x": 2, "y": 2}
    assert bundle.counts["test"] == {"x": 2, "y": 2}


def test_crop_and_pad_keep_the_aspect_ratio(tmp_path):
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[:, 15:25] = 255  # a white band in the middle
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        Image.fromarray(wide).save(tmp_path / name / "wide.png")
    cropped = from_directory(tmp_path, (10, 10), crop_to_aspect_ratio=True, validation_split=0.0)
    padded = from_directory(tmp_path, (10, 10), pad_to_aspect_ratio=True, validation_split=0.0)
    crop = next(iter(cropped.train))[0].numpy()[0]
    pad = next(iter(padded.train))[0].numpy()[0]
    assert crop[:, 3:7].mean() > 200  # the band fills the middle of the crop
    assert pad[0].max() == 0 and pad[-1].max() == 0  # letterboxed top and bottom rows


def test_single_class_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="path: .* does not exist"):
        from_directory(tmp_path / "nope", SIZE)
    _write(str(tmp_path / "only" / "one.png"), 10, "gray")
    with pytest.raises(ValueError, match="only one class.*'only'"):
        from_directory(tmp_path, SIZE)
    (tmp_path / "only" / "one.png").unlink()
    (tmp_path / "other").mkdir()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable images"):
        from_directory(tmp_path, SIZE)


@pytest.mark.parametrize("bad", [0, (16,), (16, -1), "big"])
def test_image_size_must_be_a_positive_pair(even_folder, bad):
    with pytest.raises(ValueError, match="image_size"):
        from_directory(even_folder, bad)


def test_arrays_of_different_lengths_and_bad_shapes():
    with pytest.raises(ValueError, match="x and y have different lengths: 4 images and 3"):
        from_arrays(np.zeros((4, 8, 8, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match="x: expected images"):
        from_arrays(np.zeros((4, 8)), np.zeros(4, int))


def test_from_arrays_turns_gray_into_rgb_and_resizes():
    x = np.stack([np.full((8, 8), 10 * i, np.uint8) for i in range(10)])
    y = np.arange(10) % 2
    bundle = from_arrays(x, y, image_size=12, validation_split=0.2, batch_size=3)
    images, labels = _all_examples(bundle)
    assert images.shape == (10, 12, 12, 3)
    assert sorted(np.round(images.mean(axis=(1, 2, 3))).tolist()) == [10.0 * i for i in range(10)]
    assert bundle.counts["validation"] == {"0": 1, "1": 1}


def test_from_csv_multiclass_and_multilabel(tmp_path):
    rows = ["file,label,red,round"]
    for index in range(8):
        _write(str(tmp_path / "img" / f"{index}.png"), 20 * index + 10, "gray")
        rows.append(f"img/{index}.png,{'even' if index % 2 == 0 else 'odd'},"
                    f"{index % 2},{int(index < 4)}")
    rows.append("img/missing.png,even,0,0")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="missing file"):
        bundle = from_csv(tmp_path / "labels.csv", "file", "label", 8, validation_split=0.25)
    assert bundle.class_names == ["even", "odd"]
    assert bundle.counts["train"] == {"even": 3, "odd": 3}
    with pytest.warns(UserWarning):
        multi = from_csv(tmp_path / "labels.csv", "file", ["red", "round"], 8,
                         validation_split=0.0)
    assert multi.task == "multilabel"
    _, labels = _all_examples(multi)
    assert labels.shape == (8, 2) and labels.sum(axis=0).tolist() == [4.0, 4.0]
    with pytest.raises(ValueError, match="column 'colour' is not in"):
        from_csv(tmp_path / "labels.csv", "file", "colour", 8)


def test_texts_and_text_directory(tmp_path):
    texts = ["good film", "bad film", "great", "awful", "fine", "poor"] * 3
    labels = ["pos", "neg"] * 9
    bundle = from_texts(texts, labels, validation_split=1 / 3, seed=0)
    assert bundle.class_names == ["neg", "pos"]
    batch_texts, batch_labels = next(iter(bundle.train))
    assert batch_texts.dtype == tf.string
    assert sum(bundle.counts["train"].values()) == 12
    with pytest.raises(ValueError, match="different lengths"):
        from_texts(["a", "b"], [0])
    for name, words in (("neg", ["bad", "awful"]), ("pos", ["good", "great"])):
        (tmp_path / name).mkdir()
        for index, word in enumerate(words):
            (tmp_path / name / f"{index}.txt").write_text(word)
    folder = tftransfer.data.from_text_directory(tmp_path, validation_split=0.0)
    assert folder.counts["train"] == {"neg": 2, "pos": 2}
    assert sorted(t.decode() for batch, _ in folder.train for t in batch.numpy()) == [
        "awful", "bad", "good", "great"]


def test_a_file_cache_left_by_a_killed_run_does_not_break_the_next(tmp_path):
    root = tmp_path / "many"
    for name in ("a", "b"):
        os.makedirs(root / name)
        for index in range(200):
            Image.fromarray(np.full((8, 8), index, np.uint8)).save(root / name / f"{index}.png")
    cache = tmp_path / "cache" / "photos"
    code = textwrap.dedent(f"""
        import os, signal, tftransfer
        bundle = tftransfer.data.from_directory(r"{root}", 8, batch_size=2, validate=False,
                                                validation_split=0.5, cache=r"{cache}")
        iterator = iter(bundle.validation)
        next(iterator)
        os.kill(os.getpid(), signal.SIGKILL)  # killed while the cache is half written
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert result.returncode == -signal.SIGKILL
    leftovers = os.listdir(cache.parent)
    assert any(name.endswith(".lockfile") for name in leftovers), leftovers
    bundle = from_directory(root, 8, batch_size=50, validation_split=0.5, cache=cache,
                            validate=False)
    for _ in range(2):  # the first epoch writes the cache, the second reads it
        assert sum(int(x.shape[0]) for x, _ in bundle.validation) == 200
        assert sum(int(x.shape[0]) for x, _ in bundle.train) == 200
    assert sum(name.endswith(".index") for name in os.listdir(cache.parent)) == 2


def test_augmentation_in_the_pipeline_changes_only_training_batches(even_folder):
    bundle = from_directory(even_folder, SIZE, validation_split=0.2, augmentation="heavy",
                            seed=3)
    plain = from_directory(even_folder, SIZE, validation_split=0.2, seed=3)
    assert _values(bundle.validation) == _values(plain.validation)
    augmented = np.concatenate([x.numpy() for x, _ in bundle.train])
    original = np.concatenate([x.numpy() for x, _ in plain.train])
    assert augmented.shape == original.shape
    assert not np.allclose(np.sort(augmented.ravel()), np.sort(original.ravel()))


def test_fashion_mnist_reader(tmp_path):
    if not os.path.isdir(tftransfer.datasets.FASHION_MNIST_PATH):
        pytest.skip("dataset-fashion-mnist is not installed")
    (x_train, y_train), (x_test, y_test) = tftransfer.datasets.fashion_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert np.bincount(y_train).tolist() == [6000] * 10
    (x5, y5), _ = tftransfer.datasets.fashion_mnist(classes=[5, 6, 7, 8, 9])
    assert len(x5) == 30000 and sorted(set(y5.tolist())) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(x5[y5 == 0][0], x_train[y_train == 5][0])
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        tftransfer.datasets.fashion_mnist(tmp_path / "none")
