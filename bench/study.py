"""Transfer study on Fashion-MNIST: what transfer buys at 10, 50, 100 and all labels.

Source: the embedded FashionCNN, pretrained by tftransfer on Fashion-MNIST
classes 0-4. Target: classes 5-9 (sandal, shirt, sneaker, bag, ankle boot),
which the backbone never saw. For each number of labelled images per class,
over 3 seeds (3 draws of the labelled images), four methods train on the same
images (80%; the other 20% are the validation split) and are scored on the
5000 target images of Fashion-MNIST's test split:

- scratch: the same architecture at random initialization, every layer
  trained, Adam 3e-3;
- linear probe: the pretrained backbone frozen, only the head trained;
- head + fine-tune: the head phase, then all three blocks at 3e-3 (the demo's
  recipe);
- tuned: `tftransfer.tune` over unfreeze depth, fine-tuning learning rate and
  dropout, chosen on the validation split; the test split is only scored.

Each method gets the same number of epochs (30 up to 100 labels per class, 4
with all 6000; the two-phase methods spend 5 of 30, or 1 of 4, on the head). Writes bench/results/study.json, study.md and study.png.

Run: python bench/study.py [--quick] [--seeds 3] [--labels 10,50,100,all]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import RESULTS, plot_by_labels, write_results  # noqa: E402

METHODS = ("scratch", "linear probe", "head + fine-tune", "tuned")


def epochs_for(per_class):
    return 30 if per_class <= 100 else 4


def head_epochs_for(epochs):
    """The head phase's share of the epochs: 5 of 30, 1 of 4."""
    return 5 if epochs >= 10 else 1


def run_one(method, data, test, epochs, seed, trials, scratch_dir):
    import keras

    import tftransfer

    common = dict(early_stopping_patience=None, seed=seed, verbose=0)
    keras.utils.set_random_seed(seed)
    if method == "scratch":
        model = tftransfer.build_classifier("FashionCNN", 5, weights=None)
        result = tftransfer.fit(model, data, head_epochs=0, fine_tune_epochs=epochs,
                                unfreeze_fraction=1.0, fine_tune_learning_rate=3e-3, **common)
        model = result.model
    elif method == "linear probe":
        model = tftransfer.build_classifier("FashionCNN", 5)
        model = tftransfer.fit(model, data, head_epochs=epochs, fine_tune_epochs=0,
                               head_learning_rate=3e-3, **common).model
    elif method == "head + fine-tune":
        model = tftransfer.build_classifier("FashionCNN", 5)
        head = head_epochs_for(epochs)
        model = tftransfer.fit(model, data, head_epochs=head, fine_tune_epochs=epochs - head,
                               unfreeze_blocks=3, head_learning_rate=3e-3,
                               fine_tune_learning_rate=3e-3, **common).model
    else:
        head = head_epochs_for(epochs)
        result = tftransfer.tune(
            "FashionCNN", data, max_trials=trials, head_epochs=head,
            fine_tune_epochs=epochs - head,
            directory=tempfile.mkdtemp(dir=scratch_dir), project_name="study", overwrite=True,
            seed=seed,
            search_space={"unfreeze_blocks": (0, 3), "head_learning_rate": [3e-3],
                          "fine_tune_learning_rate": (1e-4, 3e-3, "log"),
                          "dropout_rate": [0.0, 0.2]})
        model = result.best_model
    return float(tftransfer.evaluate(model, test, top_losses=0).accuracy)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true",
                        help="1 seed, 10 and 50 labels per class, 2 tuning trials")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", default="10,50,100,all")
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.labels, args.trials = 1, "10,50", 2

    import keras

    import tftransfer

    start = time.time()
    (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist(
        classes=[5, 6, 7, 8, 9])
    names = ["sandal", "shirt", "sneaker", "bag", "ankle_boot"]
    test = tftransfer.data.from_arrays(x_test, y_test, image_size=32, validation_split=0.0,
                                       batch_size=256, class_names=names).train
    budgets = [6000 if v == "all" else int(v) for v in args.labels.split(",")]
    scratch_dir = tempfile.mkdtemp(prefix="tftransfer_study_")
    rows = {}
    for per_class in budgets:
        epochs = epochs_for(per_class)
        scores = {method: [] for method in METHODS}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            keep = np.concatenate([rng.permutation(np.flatnonzero(y_pool == c))[:per_class]
                                   for c in range(5)])
            data = tftransfer.data.from_arrays(
                x_pool[keep], y_pool[keep], image_size=32, validation_split=0.2, seed=seed,
                batch_size=32 if per_class <= 100 else 64, class_names=names)
            for method in METHODS:
                began = time.time()
                scores[method].append(run_one(method, data, test, epochs, seed, args.trials,
                                              scratch_dir))
                print(f"{per_class}/class seed {seed} {method}: {scores[method][-1]:.4f} "
                      f"({time.time() - began:.0f} s)", flush=True)
                keras.backend.clear_session()
        rows[str(per_class)] = {
            method: {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(np.min(v)),
                     "max": float(np.max(v)), "runs": [round(x, 4) for x in v]}
            for method, v in scores.items()}
        rows[str(per_class)]["epochs"] = epochs

    plot_path = os.path.join(RESULTS, "study.png")
    plot_by_labels(rows, budgets, METHODS, plot_path,
                   title="Fashion-MNIST 5-9 from a backbone pretrained on 0-4",
                   tick=lambda b: str(b) if b < 6000 else "all (6000)")
    figures = {"labels_per_class": budgets, "seeds": args.seeds, "tuning_trials": args.trials,
               "quick": args.quick, "results": rows, "plot": "study.png",
               "test_images": int(len(y_test)), "seconds": round(time.time() - start, 1)}
    table = []
    for per_class in budgets:
        row = rows[str(per_class)]
        for method in METHODS:
            table.append((f"{per_class if per_class < 6000 else 'all'} labels/class, {method}",
                          f"{row[method]['mean']:.4f} ± {row[method]['std']:.4f}"))
    write_results("study", figures, table, notes=(
        f"Test accuracy on the {len(y_test)} Fashion-MNIST test images of classes 5-9, mean ± "
        f"standard deviation over {args.seeds} draws of the labelled images. Backbone: the "
        "embedded FashionCNN (pretrained on classes 0-4). The tuned method chooses on the "
        "validation split (20% of the labelled images); the test split is only scored."))


if __name__ == "__main__":
    main()
