"""Ablations of fit's defaults: one default changed at a time, on the recipes study's draws.

The protocols of `bench/recipes.py` (ImageNet EfficientNet-Lite0 -> all ten
Fashion-MNIST classes at 96 px; FashionCNN pretrained on classes 0-4 -> 5-9
and on 5-9 -> 0-4 at 32 px), the same draws of 10 labelled images per class,
every test image of the target classes: `fit` with every default and with
each variant of `ABLATIONS`. Results accumulate by protocol in
bench/results/recipes_ablations.json and .md.

Run: python bench/recipes_ablations.py [--seeds 3] [--protocols lite0,cnn-a,cnn-b]
         [--labels 10]
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import RESULTS, write_results  # noqa: E402
from recipes import PROTOCOLS, draw, protocol_backbone, run_fit, test_dataset  # noqa: E402

# One default changed at a time; "x2" doubles the fine-tuning epochs of the default.
ABLATIONS = {
    "fit defaults": {},
    "fine-tune lr 3e-4": {"fine_tune_learning_rate": 3e-4},
    "fine-tune lr 3e-3": {"fine_tune_learning_rate": 3e-3},
    "top 2 blocks only": {"unfreeze_blocks": 2},
    "head only": {"fine_tune_epochs": 0},
    "fine-tuning steps x2": {"fine_tune_epochs": "x2"},
    "layer-wise decay 0.8": {"discriminative_lr": 0.8},
    "head lr 1e-3": {"head_learning_rate": 1e-3},
    "previous defaults (5 + 5 epochs, top block, 1e-3 / 1e-5)": {
        "head_epochs": 5, "fine_tune_epochs": 5, "unfreeze_blocks": 1,
        "head_learning_rate": 1e-3, "fine_tune_learning_rate": 1e-5,
        "early_stopping_patience": 3},
}


def ablations(key, per_class, seeds, scratch):
    import keras

    import tftransfer

    protocol = PROTOCOLS[key]
    began = time.time()
    scores = {name: [] for name in ABLATIONS}
    with protocol_backbone(protocol, scratch):
        (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist(
            classes=protocol["classes"])
        test = test_dataset(x_test, y_test, protocol["size"])
        for seed in range(seeds):
            x, y = draw(x_pool, y_pool, per_class, seed, protocol["size"])
            for name, changes in ABLATIONS.items():
                keras.backend.clear_session()
                keras.utils.set_random_seed(seed)
                scores[name].append(run_fit(x, y, test, seed, protocol, **dict(changes))[0])
                print(f"{key} {per_class}/class seed {seed} {name}: {scores[name][-1]:.4f}",
                      flush=True)
    rows = {name: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                   "runs": [round(s, 4) for s in v], "changes": ABLATIONS[name]}
            for name, v in scores.items()}
    return {"title": protocol["title"], "labels_per_class": per_class, "seeds": seeds,
            "test_images": int(len(y_test)), "date": datetime.date.today().isoformat(),
            "seconds": round(time.time() - began, 1), "results": rows}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    args = parser.parse_args()

    path = os.path.join(RESULTS, "recipes_ablations.json")
    protocols = {}
    if os.path.exists(path):
        with open(path) as handle:
            protocols = json.load(handle).get("figures", {}).get("protocols", {})
    scratch = tempfile.mkdtemp(prefix="tftransfer_ablations_")
    for key in [k for k in args.protocols.split(",") if k]:
        protocols[key] = ablations(key, args.labels, args.seeds, scratch)
    protocols = {k: protocols[k] for k in PROTOCOLS if k in protocols}
    table = []
    for key, stored in protocols.items():
        base = stored["results"]["fit defaults"]["mean"]
        for name, row in stored["results"].items():
            table.append((f"{key}, {name}", f"{row['mean']:.4f} ± {row['std']:.4f} "
                                            f"({row['mean'] - base:+.4f})"))
    write_results("recipes_ablations", {"protocols": protocols}, table, notes=(
        "`fit` with one default changed at a time, on the draws of bench/recipes.py "
        "(labelled images per class, draws and date per protocol in "
        "recipes_ablations.json); test accuracy on every test image of the target classes, "
        "mean ± standard deviation over the draws, and the difference to the defaults."))


if __name__ == "__main__":
    main()
