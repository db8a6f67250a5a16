"""kill -9 at random moments during fit, tune, export and cache writing.

Each test starts `workloads.py MODE` in a child process, kills it with
SIGKILL after a random delay (seeded: the same moments every run; CI runs
one per workload, TFTRANSFER_KILL_REPEATS=10 runs ten), and then checks what a user would
find: the next run resumes or starts clean and finishes, and no file that a
later run reads is torn. Kills land anywhere: in training steps, in the
middle of writing weights, JSON, SavedModels or caches. The export kill is
timed from the workload's own events: after the first version is published,
somewhere in the second export, so there is always a version to load and serve.
"""

import glob
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import workloads  # noqa: E402

from tftransfer.files import TEMPORARY_TAG  # noqa: E402

REPEATS = int(os.environ.get("TFTRANSFER_KILL_REPEATS", "1"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Seconds of work after READY over which the kill moment is drawn (about the
# length of each workload on a 2-core CI machine). Export times its kill from
# the first published version instead (kill_at_random).
SPANS = {"fit": 3.5, "tune": 6.0, "features": 3.0}

pytestmark = pytest.mark.slow


def kill_at_random(mode, folder, attempt):
    """Runs MODE in a child and SIGKILLs it; returns the delay used.

    The delay counts from READY, except for export: from the line that says
    version 1 is published, drawn over the time that first export took, so
    the kill lands in the second export (or just after it)."""
    rng = np.random.default_rng([sum(map(ord, mode)), attempt])
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen([sys.executable, workloads.__file__, mode, str(folder)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = _lines_of(child)
        _wait_for(lines, "READY", mode, timeout=300)
        if mode == "export":
            published = _wait_for(lines, "PUBLISHED 1 ", mode, timeout=300)
            delay = float(rng.uniform(0.0, float(published.split()[2])))
        else:
            delay = float(rng.uniform(0.3, SPANS[mode]))
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return delay


def _lines_of(child):
    """A queue of the child's output lines, read by a thread (so waits can time out)."""
    lines = queue.Queue()

    def read():
        for line in child.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for(lines, prefix, mode, *, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"the {mode} workload printed no {prefix!r} line in "
                                 f"{timeout} s") from None
        assert line is not None, f"the {mode} workload ended before printing {prefix!r}"
        if line.startswith(prefix):
            return line


def leftovers(folder):
    return [path for path in glob.glob(os.path.join(str(folder), "**", "*"), recursive=True)
            if TEMPORARY_TAG in os.path.basename(path)]


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_fit_killed_anywhere_resumes_and_finishes(tmp_path, attempt):
    import keras

    kill_at_random("fit", tmp_path, attempt)
    checkpoint_dir = tmp_path / "ckpt"
    result = workloads.fit(tmp_path)  # the next run: resumes where the killed one was
    epochs = result.history.get("epoch", [])
    assert not epochs or epochs[-1] == 5  # the last epoch ran (history: this run's epochs)
    assert (checkpoint_dir / "fine_tune.done.weights.h5").exists()
    best = keras.saving.load_model(checkpoint_dir / "best.keras", safe_mode=True)
    x, _ = workloads.arrays(8)
    assert np.isfinite(best.predict(x, verbose=0)).all()
    assert np.isfinite(result.model.predict(x, verbose=0)).all()
    assert not glob.glob(str(checkpoint_dir / "backup_*"))  # the per-epoch state is cleaned up
    assert json.loads((checkpoint_dir / "history.json").read_text())
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_tune_killed_anywhere_resumes_and_finishes(tmp_path, attempt):
    kill_at_random("tune", tmp_path, attempt)
    result = workloads.tune(tmp_path)
    statuses = [trial["status"] for trial in result.trials]
    assert statuses.count("COMPLETED") == 3, statuses
    for path in glob.glob(str(tmp_path / "search" / "search" / "**" / "*.json"), recursive=True):
        with open(path) as handle:
            json.load(handle)  # none torn
    x, _ = workloads.arrays(8)
    assert np.isfinite(result.best_model.predict(x, verbose=0)).all()
    assert not leftovers(tmp_path)


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_export_killed_anywhere_leaves_only_complete_versions(tmp_path, attempt):
    import tensorflow as tf

    delay = kill_at_random("export", tmp_path, attempt)
    base = tmp_path / "exports"
    versions = sorted(int(name) for name in os.listdir(base) if name.isdigit())
    # The kill came after version 1 was published: there is always one to check.
    assert versions and versions[0] == 1, versions
    x, _ = workloads.arrays(2)
    checked = 0
    for version in versions:  # every version that is visible is whole
        loaded = tf.saved_model.load(str(base / str(version)))
        probabilities = loaded.signatures["serving_default"](images=tf.constant(x))
        assert np.isfinite(probabilities["probabilities"].numpy()).all()
        assert json.loads((base / str(version) / "export_manifest.json").read_text())
        checked += 1
    assert checked == len(versions) >= 1
    print(f"export killed {delay:.2f} s after version 1 was published; versions checked: "
          f"{versions}")  # shown with pytest -rP
    result = workloads.export(tmp_path)  # the next export works and takes the next number
    assert result.version == (versions[-1] + 1 if versions else 1)
    assert (base / "models.config").read_text().strip()
    assert not leftovers(tmp_path) and not [n for n in os.listdir(base) if n.startswith(".")]


@pytest.mark.parametrize("attempt", range(REPEATS))
def test_caches_killed_while_written_are_rebuilt_or_read_whole(tmp_path, attempt):
    workloads.image_folder(tmp_path)
    kill_at_random("features", tmp_path, attempt)
    for path in glob.glob(str(tmp_path / "features" / "*.npy")):
        np.load(path)  # a feature file that is there is whole
    data, x, y = workloads.features(tmp_path)  # the next run: file caches rebuilt or reused
    assert len(x) == len(y) == 48
    images = np.concatenate([batch.numpy() for batch, _ in data.train])
    again = np.concatenate([batch.numpy() for batch, _ in data.train])  # now from the cache
    assert images.shape == (48, workloads.IMAGE_SIZE, workloads.IMAGE_SIZE, 3)
    np.testing.assert_array_equal(np.sort(images.sum(axis=(1, 2, 3))),
                                  np.sort(again.sum(axis=(1, 2, 3))))
    assert not leftovers(tmp_path)
