"""Memory over long runs: 50 short epochs of `tftransfer.fit` and 20 tuner trials.

RSS is read after every epoch (a callback) and after every trial (the
search's log). Growth is measured after a warm-up (the first epochs and
trials load code and trace functions once) and compared, in the same run, with
the baseline a user would otherwise write: one `model.fit` call of the same
epochs, and trials in their own processes (`isolate_trials=True`).
Writes bench/results/memory.json and memory.md;
tests/reliability/test_memory.py runs the same measurements, smaller, and
asserts the bounds.

Run: python bench/memory.py [--quick]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402


def _data(count=96, seed=0):
    import tftransfer

    rng = np.random.default_rng(seed)
    y = np.arange(count) % 3
    x = rng.uniform(0, 120, (count, 32, 32, 3)).astype("float32")
    x[..., 0] += 60 * y[:, None, None]
    return tftransfer.data.from_arrays(x, y, validation_split=0.25, batch_size=16, seed=0,
                                       class_names=["a", "b", "c"])


def _growth(values, warmup):
    """(growth after warm-up, least-squares growth per step after warm-up), in MB."""
    after = np.asarray(values[warmup:], dtype=float)
    if len(after) < 2:
        return 0.0, 0.0
    slope = float(np.polyfit(np.arange(len(after)), after, 1)[0])
    return float(after[-1] - after[0]), slope


def fit_growth(values, epochs, warmup=3):
    """Per-epoch growth within the fine-tuning phase, and the step when it starts.

    Each phase compiles and traces its own training function once: RSS steps
    up at the phase switch and should stay flat within a phase.
    """
    half = epochs // 2
    _, head_slope = _growth(values[:half], warmup)
    _, tune_slope = _growth(values[half:], warmup)
    return {"growth_mb_per_epoch_head": round(head_slope, 3),
            "growth_mb_per_epoch_fine_tune": round(tune_slope, 3),
            "phase_switch_step_mb": round(float(values[half] - values[half - 1]), 2),
            "growth_mb_after_warmup": round(float(values[-1] - values[warmup]), 2)}


def fit_rss(epochs=50, *, plain_keras=False, checkpoint_dir=None):
    """RSS (MB) after every epoch of a fit of `epochs` short epochs."""
    import keras

    import tftransfer
    from tftransfer.tuning import rss_mb

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.values.append(rss_mb())

    record = Record()
    record.values = []
    data = _data()
    keras.utils.set_random_seed(0)
    model = tftransfer.build_classifier("FashionCNN", 3)
    if plain_keras:
        tftransfer.unfreeze(model, blocks=1)
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(data.train, validation_data=data.validation, epochs=epochs, verbose=0,
                  callbacks=[record])
    else:
        half = epochs // 2
        # The top block at 1e-5, as measured in bench/results/memory.json (fit's defaults
        # before they were sized by the data).
        tftransfer.fit(model, data, head_epochs=half, fine_tune_epochs=epochs - half,
                       unfreeze_blocks=1, fine_tune_learning_rate=1e-5,
                       checkpoint_dir=checkpoint_dir, early_stopping_patience=None, verbose=0,
                       callbacks=[record], cache_features=False)
    return record.values


def tune_rss(trials=20, *, isolate_trials=False, directory=None, fine_tune_epochs=2):
    """RSS (MB) after every trial of a search of `trials` trials."""
    import tftransfer

    result = tftransfer.tune(
        "FashionCNN", _data(), max_trials=trials, head_epochs=1,
        fine_tune_epochs=fine_tune_epochs,
        directory=directory or tempfile.mkdtemp(prefix="tftransfer_memory_"),
        isolate_trials=isolate_trials, seed=0, overwrite=True, folds=None,
        search_space={"unfreeze_blocks": (0, 3), "fine_tune_learning_rate": (1e-5, 1e-2, "log"),
                      "dropout_rate": (0.0, 0.5)})
    return [trial["rss_mb"] for trial in result.trials]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20 epochs, 8 trials")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.trials = 20, 8
    from common import write_results

    start = time.time()
    warm_epochs, warm_trials = 3, 3
    fit_values = fit_rss(args.epochs, checkpoint_dir=tempfile.mkdtemp())
    keras_values = fit_rss(args.epochs, plain_keras=True)
    tune_values = tune_rss(args.trials)
    isolated_values = tune_rss(args.trials, isolate_trials=True)
    fit = fit_growth(fit_values, args.epochs, warm_epochs)
    fit_slope = fit["growth_mb_per_epoch_fine_tune"]
    keras_total, keras_slope = _growth(keras_values, warm_epochs)
    tune_total, tune_slope = _growth(tune_values, warm_trials)
    isolated_total, isolated_slope = _growth(isolated_values, warm_trials)
    figures = {
        "epochs": args.epochs, "trials": args.trials, "warmup_epochs": warm_epochs,
        "warmup_trials": warm_trials,
        "fit": {"rss_mb": [round(v, 1) for v in fit_values], **fit},
        "plain_keras_fit": {"rss_mb": [round(v, 1) for v in keras_values],
                            "growth_mb": round(keras_total, 2),
                            "growth_mb_per_epoch": round(keras_slope, 3)},
        "tune_in_process": {"rss_mb": tune_values, "growth_mb": round(tune_total, 2),
                            "growth_mb_per_trial": round(tune_slope, 3)},
        "tune_isolated": {"rss_mb": isolated_values, "growth_mb": round(isolated_total, 2),
                          "growth_mb_per_trial": round(isolated_slope, 3)},
        "fit_over_plain_keras_growth_per_epoch": round(fit_slope / keras_slope, 2)
        if keras_slope > 0.01 else None,
        "seconds": round(time.time() - start, 1),
    }
    table = [
        (f"`tftransfer.fit`, {args.epochs} epochs (checkpoints on): growth per epoch within "
         "a phase (head / fine-tune)", f"{fit['growth_mb_per_epoch_head']:.2f} / "
         f"{fit_slope:.2f} MB/epoch"),
        ("`tftransfer.fit`: one-time step when fine-tuning compiles",
         f"{fit['phase_switch_step_mb']:.1f} MB"),
        (f"plain `model.fit`, {args.epochs} epochs (baseline)",
         f"{keras_total:.1f} MB ({keras_slope:.2f} MB/epoch)"),
        (f"`tftransfer.tune`, {args.trials} trials in one process: growth after trial "
         f"{warm_trials}", f"{tune_total:.1f} MB ({tune_slope:.2f} MB/trial)"),
        (f"`tftransfer.tune(isolate_trials=True)`, {args.trials} trials",
         f"{isolated_total:.1f} MB ({isolated_slope:.2f} MB/trial)"),
    ]
    write_results("memory", figures, table, notes=(
        "RSS of the process that trains (for isolated trials: each trial process's RSS when "
        "its trial ends). FashionCNN at 32x32, 72 training images, batch 16, CPU."))


if __name__ == "__main__":
    main()
