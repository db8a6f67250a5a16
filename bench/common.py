"""Shared helpers for the benchmarks: machine facts, versions, writing results."""

import datetime
import json
import os
import platform
import time

# `make bench --quick` (bench/run_all.py) points this at bench/results/quick/.
RESULTS = os.environ.get("TFTRANSFER_BENCH_RESULTS") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "results")


def machine():
    import tensorflow as tf

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }
    try:
        with open("/proc/meminfo") as handle:
            info["memory_gb"] = round(int(handle.readline().split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    return info


def versions():
    import keras
    import numpy
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": numpy.__version__}


def write_results(name, figures, table, *, notes=""):
    """Writes bench/results/<name>.json and <name>.md (a short markdown table)."""
    os.makedirs(RESULTS, exist_ok=True)
    record = {
        "name": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "figures": figures,
        "notes": notes,
    }
    with open(os.path.join(RESULTS, f"{name}.json"), "w") as handle:
        json.dump(record, handle, indent=2)
    lines = [f"### {name}", "", "| figure | value |", "|---|---|"]
    lines += [f"| {label} | {value} |" for label, value in table]
    if notes:
        lines += ["", notes]
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return record


def plot_by_labels(rows, budgets, methods, path, *, title, ylabel="test accuracy",
                   tick=str):
    """Accuracy against labelled images per class, one line (mean ± std) per method.

    `rows[str(budget)][method]` holds `mean` and `std`; a method missing at a budget
    is left out there.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.8, 4.4))
    for method in methods:
        present = [b for b in budgets if method in rows[str(b)]]
        if present:
            axis.errorbar(present, [rows[str(b)][method]["mean"] for b in present],
                          yerr=[rows[str(b)][method]["std"] for b in present], marker="o",
                          capsize=3, label=method)
    axis.set_xscale("log")
    axis.set_xticks(budgets, [tick(b) for b in budgets])
    axis.set_xlabel("labelled images per class")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    figure.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


class EpochTimer:
    """A Keras callback that records each epoch's wall time."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._start)

        return _Timer()
