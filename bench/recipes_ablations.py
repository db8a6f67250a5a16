"""Ablations of fit's defaults: one default changed at a time, on the recipes study's draws.

Same protocol as `bench/recipes.py` (ImageNet EfficientNet-Lite0 -> all ten
Fashion-MNIST classes, 96 px, the same draws of 10 labelled images per class,
the 10,000 test images), `fit` with every default and with each variant of
`ABLATIONS`. Writes bench/results/recipes_ablations.json and .md.

Run: python bench/recipes_ablations.py [--seeds 3]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402
from recipes import BACKBONE, SIZE, draw, run_fit, test_dataset  # noqa: E402

# One default changed at a time; "budget x2" doubles the fine-tuning epochs of the default.
ABLATIONS = {
    "fit defaults": {},
    "fine-tune lr 1e-4": {"fine_tune_learning_rate": 1e-4},
    "fine-tune lr 1e-3": {"fine_tune_learning_rate": 1e-3},
    "top 3 blocks only": {"unfreeze_blocks": 3},
    "head only": {"fine_tune_epochs": 0},
    "fine-tuning steps x2": {"fine_tune_epochs": "x2"},
    "layer-wise decay 0.85": {"discriminative_lr": 0.85},
    "head lr 1e-3": {"head_learning_rate": 1e-3},
    "previous defaults (5 + 5 epochs, top block, 1e-3 / 1e-5)": {
        "head_epochs": 5, "fine_tune_epochs": 5, "unfreeze_blocks": 1,
        "head_learning_rate": 1e-3, "fine_tune_learning_rate": 1e-5,
        "early_stopping_patience": 3},
}


def ablations(x_pool, y_pool, test, y_test, seeds, start, per_class=10):
    import keras

    scores = {name: [] for name in ABLATIONS}
    for seed in range(seeds):
        x, y = draw(x_pool, y_pool, per_class, seed)
        for name, changes in ABLATIONS.items():
            keras.utils.set_random_seed(seed)
            scores[name].append(run_fit(x, y, test, seed, **dict(changes))[0])
            keras.backend.clear_session()
            print(f"{per_class}/class seed {seed} {name}: {scores[name][-1]:.4f}", flush=True)
    rows = {name: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                   "runs": [round(s, 4) for s in v], "changes": ABLATIONS[name]}
            for name, v in scores.items()}
    base = rows["fit defaults"]["mean"]
    table = [(f"{name}", f"{row['mean']:.4f} ± {row['std']:.4f} ({row['mean'] - base:+.4f})")
             for name, row in rows.items()]
    write_results("recipes_ablations", {
        "backbone": BACKBONE, "image_size": SIZE, "labels_per_class": per_class,
        "seeds": seeds, "results": rows, "test_images": int(len(y_test)),
        "seconds": round(time.time() - start, 1)}, table, notes=(
        f"`fit` on {BACKBONE} (ImageNet, {SIZE} px), {per_class} labels per class of all ten "
        f"Fashion-MNIST classes, one default changed at a time; test accuracy on "
        f"{len(y_test)} test images, mean ± standard deviation over {seeds} draws (the same "
        "draws as bench/recipes.py), and the difference to the defaults."))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    import tftransfer

    start = time.time()
    (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist()
    ablations(x_pool, y_pool, test_dataset(x_test, y_test), y_test, args.seeds, start)


if __name__ == "__main__":
    main()
