"""Tuning speed and memory: tftransfer.tune against a plain keras-tuner search.

Both run RandomSearch with the same seed over the same space (unfreeze
blocks, fine-tuning learning rate, head learning rate, dropout), the same
trials and epochs. The plain search trains head and fine-tuning from scratch
in every trial, as a hand-written keras-tuner loop does; tftransfer computes
the frozen backbone's features once and trains each distinct head once.
Goal: at least 2x faster, with searches that learn: the backbone is
pretrained (EfficientNet-Lite0 with its ImageNet weights, offline; before,
a MobileNetV2 at random initialization whose searches both ended at chance
measured only the cost), and each search's best validation accuracy is
reported beside its time. Memory: the searching process's RSS over 20 trials
with isolate_trials=True (each trial in its own process); goal: growth per
trial at most 20 MB. The in-process growth is reported too: Keras 3.15 keeps
memory per trained model even after clear_session.

Run: python bench/tuning.py [--images 1500] [--trials 8] [--memory-trials 20]
       [--backbone EfficientNetLite0]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402

SIZE = 64


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--memory-trials", type=int, default=20)
    parser.add_argument("--head-epochs", type=int, default=4)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--backbone", default="EfficientNetLite0",
                        help="a pretrained registry backbone")
    args = parser.parse_args()

    import keras
    import keras_tuner as kt

    import tftransfer
    from tftransfer.tuning import rss_mb

    (x_all, y_all), _ = tftransfer.datasets.fashion_mnist()
    pick = np.random.default_rng(0).choice(len(x_all), args.images, replace=False)
    data = tftransfer.data.from_arrays(x_all[pick], y_all[pick], image_size=SIZE,
                                       validation_split=0.2, batch_size=32)
    scratch = tempfile.mkdtemp(prefix="tftransfer_tuning_bench_")
    blocks_in_backbone = len(tftransfer.backbone_blocks(tftransfer.build_classifier(
        args.backbone, 10, image_size=SIZE))) - 1  # the stem is not searched

    class PlainHyperModel(kt.HyperModel):
        """What a user writes by hand: both phases from scratch in every trial."""

        def build(self, hp):
            blocks = hp.Int("unfreeze_blocks", 0, blocks_in_backbone)
            hp.Float("fine_tune_learning_rate", 1e-6, 1e-3, sampling="log")
            hp.Choice("head_learning_rate", [1e-3, 3e-3])
            dropout = hp.Choice("dropout_rate", [0.0, 0.25, 0.5])
            keras.utils.set_random_seed(1337)
            model = tftransfer.build_classifier(args_.backbone, 10, image_size=SIZE,
                                                dropout_rate=dropout)
            model._blocks = blocks
            return model

        def fit(self, hp, model, *args, **kwargs):
            tftransfer.freeze(model)
            model.compile(keras.optimizers.Adam(hp.get("head_learning_rate")),
                          "sparse_categorical_crossentropy", metrics=["accuracy"])
            model.fit(data.train, validation_data=data.validation, epochs=args_.head_epochs,
                      verbose=0)
            if hp.get("unfreeze_blocks"):
                tftransfer.unfreeze(model, blocks=hp.get("unfreeze_blocks"))
            model.compile(keras.optimizers.Adam(hp.get("fine_tune_learning_rate")),
                          "sparse_categorical_crossentropy", metrics=["accuracy"])
            return model.fit(data.train, validation_data=data.validation,
                             epochs=args_.fine_tune_epochs, callbacks=kwargs.get("callbacks"),
                             verbose=0)

    args_ = args
    start = time.perf_counter()
    plain = kt.RandomSearch(PlainHyperModel(), objective="val_accuracy",
                            max_trials=args.trials, seed=1337, directory=scratch,
                            project_name="plain", overwrite=True)
    plain.search()
    plain_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = tftransfer.tune(args.backbone, data, max_trials=args.trials,
                             directory=scratch, project_name="tftransfer", overwrite=True,
                             head_epochs=args.head_epochs,
                             fine_tune_epochs=args.fine_tune_epochs, seed=1337, folds=None)
    tftransfer_seconds = time.perf_counter() - start
    speedup = plain_seconds / tftransfer_seconds

    in_process = [entry["rss_mb"] for entry in result.tuner.hypermodel.log]
    in_process_growth = (in_process[-1] - in_process[0]) / max(len(in_process) - 1, 1)

    # 20 trials with isolate_trials=True: each trial runs in its own process, so
    # the searching process must stay flat.
    before = rss_mb()
    memory = tftransfer.tune(args.backbone, data, max_trials=args.memory_trials,
                             directory=scratch, project_name="memory", overwrite=True,
                             head_epochs=1, fine_tune_epochs=1, seed=7, isolate_trials=True,
                             folds=None)
    after = rss_mb()
    finished = len([t for t in memory.trials if t["status"] == "COMPLETED"])
    steady = (after - before) / max(finished, 1)
    rss = [entry["rss_mb"] for entry in memory.tuner.hypermodel.log]
    shutil.rmtree(scratch, ignore_errors=True)
    figures = {
        "images": args.images, "image_size": SIZE, "trials": args.trials,
        "backbone": args.backbone, "weights": "pretrained", "chance_accuracy": 0.1,
        "head_epochs": args.head_epochs, "fine_tune_epochs": args.fine_tune_epochs,
        "plain_keras_tuner_seconds": round(plain_seconds, 1),
        "tftransfer_tune_seconds": round(tftransfer_seconds, 1),
        "speedup": round(speedup, 2), "goal_speedup": 2.0, "speedup_goal_met": speedup >= 2.0,
        "head_phases_run": result.head_phases_run,
        "plain_best_val_accuracy": round(float(plain.oracle.get_best_trials(1)[0].score), 4),
        "tftransfer_best_val_accuracy": round(float(max(
            t["score"] for t in result.trials if t["score"] is not None)), 4),
        "memory_trials": finished,
        "searching_process_rss_before_mb": round(before, 1),
        "searching_process_rss_after_mb": round(after, 1),
        "rss_growth_mb_per_trial_isolated": round(steady, 2),
        "trial_process_rss_mb": rss,
        "rss_growth_mb_per_trial_in_process": round(in_process_growth, 2),
        "memory_goal": "growth per trial <= 20 MB (isolate_trials=True)",
        "memory_goal_met": steady <= 20,
    }
    write_results("tuning", figures, [
        (f"plain keras-tuner, {args.trials} trials (s)", figures["plain_keras_tuner_seconds"]),
        (f"tftransfer.tune, {args.trials} trials (s)", figures["tftransfer_tune_seconds"]),
        ("speedup (goal >= 2)", figures["speedup"]),
        ("head phases trained by tftransfer.tune", figures["head_phases_run"]),
        ("best val_accuracy plain / tftransfer",
         f"{figures['plain_best_val_accuracy']} / {figures['tftransfer_best_val_accuracy']}"),
        (f"RSS growth per trial, {finished} isolated trials (MB, goal <= 20)",
         figures["rss_growth_mb_per_trial_isolated"]),
        (f"RSS growth per trial in one process, {args.trials} trials (MB, Keras keeps it)",
         figures["rss_growth_mb_per_trial_in_process"]),
    ], notes=f"{args.images} Fashion-MNIST images at {SIZE}x{SIZE} (10 classes, chance "
             f"0.1), {args.backbone} with its pretrained weights, RandomSearch seed 1337, head "
             f"{args.head_epochs} + fine-tune {args.fine_tune_epochs} epochs per trial.")


if __name__ == "__main__":
    main()
