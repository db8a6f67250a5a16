"""Text throughput: tftransfer's MiniLM classifier against a hand-written KerasHub loop.

Same checkpoint (all-MiniLM-L6-v2), same quotes, same batch size (32), same
process, alternating runs (the best of `--repeats` for each):

- feature extraction (examples/s): tftransfer's feature cache pass (the
  model's own graph: strings -> tokenizer layer -> encoder -> masked mean)
  against KerasHub as its docs write it: the preprocessor mapped over a
  `tf.data` pipeline (`num_parallel_calls=AUTOTUNE`, prefetch), the backbone
  and a masked mean in a `tf.function`. tftransfer without its padding trim is
  measured too (it shows what trimming to the batch's longest text buys).
- fine-tuning (examples/s, the second epoch): `tftransfer.fit`'s
  fine-tuning phase over the whole encoder against
  `keras_hub.models.BertTextClassifier(...).fit()` on the raw strings (its
  preprocessor in the `tf.data` pipeline), both Adam at 5e-5.

Writes bench/results/text_throughput.json and .md.

Run: python bench/text_throughput.py [--quick] [--repeats 2] [--texts 512]
Full run on 2 CPU cores: about 15 minutes; --quick: about 5 minutes.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import EpochTimer, write_results  # noqa: E402

CHECKPOINT = "all-MiniLM-L6-v2"
BATCH_SIZE = 32
SEQUENCE_LENGTH = 128


def quotes(count):
    import tftransfer
    from tftransfer.text_demo import demo_quotes

    try:
        texts, names = tftransfer.data.read_fortunes(
            ["computers", "food", "law", "love", "politics", "science"])
        topics = sorted(set(names))
        labels = [topics.index(name) for name in names]
    except ValueError:  # no `fortunes` package: the 300 shipped quotes
        texts, labels, _ = demo_quotes()
    order = np.random.default_rng(0).permutation(len(texts))
    order = np.resize(order, count)  # repeats when asked for more than there are
    return [texts[i] for i in order], np.asarray(labels)[order]


def tftransfer_features(texts, trim_padding=True):
    import tensorflow as tf

    import tftransfer
    from tftransfer.training import feature_cache

    model = tftransfer.build_text_classifier(CHECKPOINT, 6, sequence_length=SEQUENCE_LENGTH)
    model.get_layer("text_preprocessing").trim_padding = trim_padding
    feature_model, _ = feature_cache.split_model(model)
    predict = feature_cache.predictor(feature_model)
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(texts), np.zeros(len(texts))))
    dataset = dataset.batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)

    def run():
        start = time.perf_counter()
        features, _ = feature_cache.compute_features(feature_model, dataset, predict=predict)
        assert features.shape == (len(texts), 384)
        return len(texts) / (time.perf_counter() - start)

    return run


def keras_hub_features(texts):
    import keras_hub
    import tensorflow as tf
    from keras import ops

    import tftransfer

    path = tftransfer.backbones.text_checkpoint_path(CHECKPOINT)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        path, sequence_length=SEQUENCE_LENGTH)
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    dataset = (tf.data.Dataset.from_tensor_slices(tf.constant(texts)).batch(BATCH_SIZE)
               .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))

    @tf.function
    def embed(inputs):
        tokens = backbone(inputs, training=False)["sequence_output"]
        mask = ops.cast(ops.expand_dims(inputs["padding_mask"], -1), tokens.dtype)
        return ops.sum(tokens * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)

    def run():
        start = time.perf_counter()
        count = sum(int(embed(batch).shape[0]) for batch in dataset)
        assert count == len(texts)
        return len(texts) / (time.perf_counter() - start)

    return run


def tftransfer_fine_tuning(texts, labels):
    import keras
    import tensorflow as tf

    import tftransfer

    def run():
        keras.utils.set_random_seed(0)
        model = tftransfer.build_text_classifier(CHECKPOINT, 6, sequence_length=SEQUENCE_LENGTH)
        timer = EpochTimer()
        tftransfer.fit(model, (tf.constant(texts), labels), head_epochs=0, fine_tune_epochs=2,
                       unfreeze_blocks="all", fine_tune_learning_rate=5e-5,
                       batch_size=BATCH_SIZE, callbacks=[timer], verbose=0)
        return len(texts) / timer.times[-1]

    return run


def keras_hub_fine_tuning(texts, labels):
    import keras
    import keras_hub

    import tftransfer

    path = tftransfer.backbones.text_checkpoint_path(CHECKPOINT)

    def run():
        keras.utils.set_random_seed(0)
        classifier = keras_hub.models.BertTextClassifier(
            backbone=keras_hub.models.BertBackbone.from_preset(path), num_classes=6,
            preprocessor=keras_hub.models.BertTextClassifierPreprocessor.from_preset(
                path, sequence_length=SEQUENCE_LENGTH))
        classifier.compile(optimizer=keras.optimizers.Adam(5e-5),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                           metrics=["accuracy"])
        timer = EpochTimer()
        classifier.fit(x=list(texts), y=labels, batch_size=BATCH_SIZE, epochs=2,
                       callbacks=[timer], verbose=0)
        return len(texts) / timer.times[-1]

    return run


def best_of(runs, repeats):
    """Alternates the runs `repeats` times; the best examples/s of each."""
    best = {name: 0.0 for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            best[name] = max(best[name], run())
            print(f"  {name}: {best[name]:.1f} examples/s (best so far)", flush=True)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 texts, one repeat")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--texts", type=int, default=512)
    args = parser.parse_args(argv)
    count = 256 if args.quick else args.texts
    repeats = 1 if args.quick else args.repeats
    texts, labels = quotes(count)

    print("feature extraction (a warm-up pass each, then timed passes)")
    extraction = {"tftransfer": tftransfer_features(texts),
                  "tftransfer, padded to 128": tftransfer_features(texts, trim_padding=False),
                  "keras-hub, hand-written": keras_hub_features(texts)}
    for run in extraction.values():
        run()  # traces
    features = best_of(extraction, repeats)
    print("fine-tuning the whole encoder (examples/s of the second epoch)")
    fine_tuning = best_of({"tftransfer.fit": tftransfer_fine_tuning(texts, labels),
                           "keras-hub BertTextClassifier.fit":
                               keras_hub_fine_tuning(texts, labels)}, repeats)

    lengths = [len(t) for t in texts]
    figures = {
        "texts": count, "batch_size": BATCH_SIZE, "sequence_length": SEQUENCE_LENGTH,
        "median_characters": float(np.median(lengths)), "repeats": repeats,
        "feature_extraction": features, "fine_tuning": fine_tuning,
        "feature_extraction_ratio": features["tftransfer"] / features["keras-hub, hand-written"],
        "fine_tuning_ratio": (fine_tuning["tftransfer.fit"]
                              / fine_tuning["keras-hub BertTextClassifier.fit"]),
        "padding_trim_speedup": features["tftransfer"] / features["tftransfer, padded to 128"],
        # Both padded to 128: tokenizing inside the model against a parallel tf.data map.
        "feature_extraction_ratio_same_padding": (features["tftransfer, padded to 128"]
                                                  / features["keras-hub, hand-written"]),
    }
    figures["ratio_min"] = min(figures["feature_extraction_ratio"], figures["fine_tuning_ratio"])
    table = [(f"feature extraction, {name}", f"{value:.1f} examples/s")
             for name, value in features.items()]
    table += [(f"fine-tuning, {name}", f"{value:.1f} examples/s")
              for name, value in fine_tuning.items()]
    table += [("feature extraction, tftransfer / keras-hub",
               f"{figures['feature_extraction_ratio']:.3f}"),
              ("feature extraction, both padded to 128, tftransfer / keras-hub",
               f"{figures['feature_extraction_ratio_same_padding']:.3f}"),
              ("fine-tuning, tftransfer / keras-hub", f"{figures['fine_tuning_ratio']:.3f}"),
              ("padding trimmed to the batch's longest / padded to 128",
               f"{figures['padding_trim_speedup']:.2f}x")]
    notes = (f"{count} fortune quotes (median {np.median(lengths):.0f} characters), batch "
             f"{BATCH_SIZE}, sequence length {SEQUENCE_LENGTH}, best of {repeats} alternating "
             "run(s) in one process. KerasHub pads every batch to the sequence length; "
             "tftransfer trims to the batch's longest text. In fine-tuning, KerasHub's "
             "classifier runs the encoder's dropout (0.1); tftransfer keeps the encoder in "
             "inference mode (dropout off), its default for pretrained backbones.")
    write_results("text_throughput", figures, table, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
