"""The embedded backbone: pretrained by tftransfer on Fashion-MNIST classes 0-4."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tftransfer
from tftransfer.backbones import embedded

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registered_with_blocks_and_recorded_source_accuracy():
    assert "FashionCNN" in tftransfer.list_backbones()
    info = tftransfer.backbone_info("fashion_cnn")
    assert info.blocks[-3:] == ("block1", "block2", "block3") and info.feature_dim == 64
    recorded = embedded.metadata()
    assert recorded["source_classes"] == list(embedded.SOURCE_CLASSES)
    assert 0.85 < recorded["source_test_accuracy"] <= 1.0
    size = sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(embedded.embedded_backbone_path())
               for name in names)
    assert size < 3 * 2 ** 20  # a few MB at most


def test_keras_backbone_and_tf_hub_module_compute_the_same_features():
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model = tftransfer.build_classifier("FashionCNN", 5)
    keras_features = model.get_layer("pooling")(
        tftransfer.find_backbone(model)(images / 255.0)).numpy()
    hub_features = embedded.features(images)
    np.testing.assert_allclose(keras_features, hub_features, rtol=1e-5, atol=1e-5)
    # The same folder works as a TF-Hub handle, through tftransfer's Keras 3 hub layer.
    path = embedded.embedded_backbone_path()
    tftransfer.backbones.trust_hub_handles(path)
    hub_model = tftransfer.build_classifier(f"tfhub:{path}", 5, image_size=32)
    hub_layer = tftransfer.find_backbone(hub_model)
    np.testing.assert_allclose(hub_layer(images / 255.0).numpy(), hub_features, atol=1e-5)
    # Random weights are a different network.
    scratch = tftransfer.build_classifier("FashionCNN", 5, weights=None)
    assert not np.allclose(scratch.get_layer("pooling")(
        tftransfer.find_backbone(scratch)(images / 255.0)).numpy(), keras_features)


def test_missing_artifact_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(embedded.PATH_VARIABLE, str(tmp_path))
    with pytest.raises(ValueError, match="pretrain_embedded_backbone.py"):
        tftransfer.build_classifier("FashionCNN", 5)
    with pytest.raises(ValueError, match="pretrain_embedded_backbone.py"):
        embedded.metadata()
    (tmp_path / "saved_model.pb").write_bytes(b"")
    import tensorflow as tf

    model = embedded.architecture((32, 32, 3))
    other = tf.Module()
    other.keras_weights = [tf.Variable(tf.zeros((3, 3, 3, 8)))]
    tf.saved_model.save(other, str(tmp_path / "other"))
    with pytest.raises(ValueError, match="does not hold the weights"):
        embedded.load_pretrained(model, str(tmp_path / "other"))


@pytest.mark.slow
def test_pretraining_again_reproduces_the_recorded_source_accuracy(tmp_path):
    recorded = embedded.metadata()
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "pretrain_embedded_backbone.py"),
         "--output", str(tmp_path / "embedded"), "--epochs", str(recorded["epochs"]),
         "--per-class", str(recorded["train_images"] // 5), "--seed", str(recorded["seed"])],
        capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    again = json.loads((tmp_path / "embedded" / "metadata.json").read_text())
    assert abs(again["source_test_accuracy"] - recorded["source_test_accuracy"]) <= 0.01
    assert again["parameters"] == recorded["parameters"]
