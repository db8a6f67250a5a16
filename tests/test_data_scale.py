"""Data at scale: bounded memory (cache="auto"), start at once (bad files found while
training), remembered file checks, one-walk listing."""

import os

import numpy as np
import pytest
from PIL import Image

import tftransfer
from tftransfer.data import file_checks, from_directory, images


def _folder(root, per_class=20, bad=0, size=(12, 12)):
    """Two classes of solid grey PNGs whose value encodes (class, index); `bad` text
    files named .png in class b."""
    for label, name in enumerate(("a", "b")):
        os.makedirs(root / name, exist_ok=True)
        for index in range(per_class):
            value = 100 * label + 4 * index + 2
            Image.fromarray(np.full(size, value, np.uint8)).save(root / name / f"{index}.png")
    for index in range(bad):
        (root / "b" / f"bad_{index}.png").write_text("not an image")
    return root


def _values(dataset):
    return [int(round(float(x.mean()))) for batch, _ in dataset for x in batch.numpy()]


def test_auto_cache_follows_the_memory_budget(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos")
    monkeypatch.setenv("TFTRANSFER_CACHE_MEMORY_MB", "100")
    fits = from_directory(root, 12, validation_split=0.25)
    assert fits.cache == "memory" and "within the memory budget of 100 MB" in fits.cache_reason
    # 30 training images of 12x12x3 held twice are ~30 KB: a 0.01 MB budget is too small.
    monkeypatch.setenv("TFTRANSFER_CACHE_MEMORY_MB", "0.01")
    over = from_directory(root, 12, validation_split=0.25)
    assert over.cache is None and "over the memory budget" in over.cache_reason
    assert "TFTRANSFER_CACHE_MEMORY_MB" in over.cache_reason
    forced = from_directory(root, 12, validation_split=0.25, cache="memory")
    assert forced.cache == "memory" and "as given" in forced.cache_reason
    # Behaviour, not labels: files changed after the first epoch are read again without a
    # cache, and not with the memory cache.
    first_validation = _values(fits.validation)
    _values(over.validation)
    for name in os.listdir(root / "a"):
        Image.fromarray(np.full((12, 12), 250, np.uint8)).save(root / "a" / name)
    assert _values(fits.validation) == first_validation
    assert 250 in _values(over.validation)


def test_a_set_over_the_memory_budget_trains_with_every_default(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos", per_class=24)
    monkeypatch.setenv("TFTRANSFER_CACHE_MEMORY_MB", "0.01")
    data = from_directory(root, 12)
    assert data.cache is None
    model = tftransfer.build_classifier("FashionCNN", 2, image_size=12, weights=None)
    result = tftransfer.fit(model, data, head_epochs=1, fine_tune_epochs=1, verbose=0)
    assert len(result.history["phase"]) == 2


def test_without_a_cache_the_paths_are_reshuffled_each_epoch(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos", per_class=20)
    monkeypatch.setenv("TFTRANSFER_CACHE_MEMORY_MB", "0.01")
    data = from_directory(root, 12, validation_split=0.0, batch_size=8, seed=3)
    first, second = _values(data.train), _values(data.train)
    assert sorted(first) == sorted(second) and len(set(first)) == 40  # each image once
    assert first != second
    again = from_directory(root, 12, validation_split=0.0, batch_size=8, seed=3)
    assert _values(again.train) == first  # the seed fixes the order


def test_a_large_folder_starts_at_once_and_bad_files_are_found_while_training(
        tmp_path, monkeypatch):
    # Above CHECK_NOW_MAX_FILES new files, nothing is decoded before the bundle is
    # returned: the pipeline drops what fails and flags what it reads; after a pass, the
    # unflagged files are the bad ones. Before, every file was decoded first (25 s for
    # 60,000 small JPEGs), then by a background process: each file twice.
    root = _folder(tmp_path / "photos", per_class=20, bad=3)
    monkeypatch.setattr(images, "CHECK_NOW_MAX_FILES", 5)
    monkeypatch.setenv("TFTRANSFER_CACHE_MEMORY_MB", "0.01")  # decoded from the files
    decoded = []
    real_check = file_checks.check_file
    monkeypatch.setattr(file_checks, "check_file",
                        lambda path: decoded.append(path) or real_check(path))
    data = from_directory(root, 12, validation_split=0.25)
    assert data.file_check is not None and not data.file_check.done
    assert data.skipped == [] and decoded == []
    model = tftransfer.build_classifier("FashionCNN", 2, image_size=12, weights=None)
    with pytest.warns(UserWarning, match="skipped 3 unreadable file"):
        result = tftransfer.fit(model, data, head_epochs=2, fine_tune_epochs=0, verbose=0)
    assert result.history["phase"] == ["head", "head"] and data.file_check.done
    assert sorted(os.path.basename(p) for p, _ in data.skipped) == [
        "bad_0.png", "bad_1.png", "bad_2.png"]
    # Only the failures are decoded again (for the reason in the warning), and the reason
    # carries no TensorFlow graph names.
    assert sorted(os.path.basename(p) for p in decoded) == ["bad_0.png", "bad_1.png",
                                                           "bad_2.png"]
    assert all("{{" not in reason and "function_node" not in reason
               for _, reason in data.skipped)
    assert len(_values(data.train)) + len(_values(data.validation)) == 40  # bad ones dropped
    # Dropping makes the pipeline's length unknown: fit sizes its budget from the counts.
    assert int(data.train.cardinality()) < 0 and result.budget["steps_per_epoch"] in (1, 2)
    # After its first pass, the pipeline reads only the files that decoded: a bad file
    # fixed now stays out of this bundle (the next run checks it again and keeps it).
    Image.fromarray(np.full((12, 12), 91, np.uint8)).save(root / "b" / "bad_0.png")
    assert 91 not in _values(data.train) + _values(data.validation)
    # Remembered: the next run of the folder knows every file without decoding any.
    decoded.clear()
    again = from_directory(root, 12, validation_split=0.25)
    assert again.file_check is None and len(again.skipped) == 2
    assert [os.path.basename(p) for p in decoded] == ["bad_0.png"]


def test_wait_for_file_checks_finishes_the_check_at_once(tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos", per_class=10, bad=2)
    monkeypatch.setattr(images, "CHECK_NOW_MAX_FILES", 5)
    data = from_directory(root, 12, validation_split=0.25)
    assert not data.file_check.done
    with pytest.warns(UserWarning, match="skipped 2 unreadable file"):
        skipped = data.wait_for_file_checks()
    assert sorted(os.path.basename(p) for p, _ in skipped) == ["bad_0.png", "bad_1.png"]
    assert data.file_check.done
    assert len(_values(data.train)) + len(_values(data.validation)) == 20


def test_a_run_shorter_than_an_epoch_remembers_what_it_read(tmp_path, monkeypatch):
    # Checks are results of the pipeline's reads, so a run stopped early keeps them.
    root = _folder(tmp_path / "photos", per_class=20)
    monkeypatch.setattr(images, "CHECK_NOW_MAX_FILES", 5)
    data = from_directory(root, 12, validation_split=0.0, batch_size=8)
    next(iter(data.train))
    data.file_check.update()  # also run when the process exits
    paths = [str(path) for path in sorted(root.glob("*/*.png"))]
    _, unchecked = file_checks.triage(paths, file_checks.RememberedChecks(str(root)))
    assert 8 <= len(paths) - len(unchecked) < len(paths)


def test_a_second_run_decodes_nothing_and_a_changed_file_is_checked_again(
        tmp_path, monkeypatch):
    root = _folder(tmp_path / "photos", per_class=6, bad=1)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        first = from_directory(root, 12, validate=True)
    checked = []
    real_check = file_checks.check_file
    monkeypatch.setattr(file_checks, "check_file",
                        lambda path: checked.append(path) or real_check(path))
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        second = from_directory(root, 12, validate=True)
    assert checked == [] and second.skipped == first.skipped
    # The bad file is fixed (new size and time): it alone is decoded again, and kept.
    Image.fromarray(np.full((12, 12), 90, np.uint8)).save(root / "b" / "bad_0.png")
    third = from_directory(root, 12, validate=True)
    assert [os.path.basename(p) for p in checked] == ["bad_0.png"]
    assert third.skipped == [] and sum(third.counts["train"].values()) + sum(
        third.counts["validation"].values()) == 13


def test_checked_folders_keep_a_known_length_for_fits_budget(tmp_path):
    # Only a pipeline with files still unchecked drops undecodable ones (which hides its
    # length); a checked folder keeps its length, so fit's data-sized budget and cosine
    # schedule see it. Before, every default pipeline dropped and fit fell back to epochs.
    data = from_directory(_folder(tmp_path / "photos", per_class=20), 12, batch_size=8,
                          validation_split=0.25)
    assert data.file_check is None
    assert int(data.train.cardinality()) == 4 and int(data.validation.cardinality()) == 2


def test_validate_is_checked():
    with pytest.raises(ValueError, match="validate: expected 'auto', True or False"):
        from_directory(".", 12, validate="yes")


def test_listing_is_one_sorted_walk_that_skips_hidden_entries(tmp_path):
    for path in ("c/z.png", "c/a/b.png", "c/.hidden/x.png", "c/.dot.png", "c/__pycache__/y",
                 "c/m/n/o.png"):
        os.makedirs(os.path.dirname(tmp_path / path), exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    found = [os.path.relpath(p, tmp_path) for p in images._files_under(str(tmp_path / "c"),
                                                                       False)]
    # The order os.walk gave before (a folder's files, then its sub-folders): the same seed
    # keeps giving the same splits.
    assert found == ["c/z.png", "c/a/b.png", "c/m/n/o.png"]


def test_a_folder_read_through_tf_io_gfile(tmp_path, monkeypatch):
    # A path with a scheme is listed, checked and read through tf.io.gfile (gs://, s3://
    # ...); file:// is that code on local files. Before, os.walk found nothing there.
    root = _folder(tmp_path / "photos", per_class=5, bad=1)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = from_directory("file://" + str(root), 12, validation_split=0.0, batch_size=4)
    assert data.class_names == ["a", "b"] and data.counts["train"] == {"a": 5, "b": 5}
    assert [p.split("/")[-1] for p, _ in data.skipped] == ["bad_0.png"]
    assert sorted(_values(data.train)) == sorted(
        100 * label + 4 * index + 2 for label in (0, 1) for index in range(5))
