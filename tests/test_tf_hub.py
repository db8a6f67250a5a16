import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import urllib.error

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.backbones import HubBackbone, tf_hub

sys.path.insert(0, os.path.dirname(__file__))
import hub_modules  # noqa: E402

TEXTS = ["good great", "bad awful", "fine good", "poor bad", "great", "awful poor"]
TEXT_LABELS = [1, 0, 1, 0, 1, 0]


@pytest.fixture(scope="module")
def image_module(tmp_path_factory):
    return hub_modules.write_image_module(tmp_path_factory.mktemp("hub") / "image_features")


@pytest.fixture(scope="module")
def text_module(tmp_path_factory):
    return hub_modules.write_text_module(tmp_path_factory.mktemp("hub") / "text_embedding")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, 16, 16, 3)).astype("float32")
    # Labels that depend on the image, so that there is something to learn.
    y = (x[:, :, :, 0].mean(axis=(1, 2)) > x[:, :, :, 1].mean(axis=(1, 2))).astype("int64")
    return x, y


def _module_values(model):
    return [w.numpy().copy() for w in tftransfer.find_backbone(model).weights]


def test_image_classifier_on_a_local_hub_module_fits_and_loss_falls(image_module, data):
    x, y = data
    model = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16)
    assert model.get_layer("preprocessing").mode == "unit"  # hub convention: [0, 1]
    assert isinstance(tftransfer.find_backbone(model), HubBackbone)
    tftransfer.unfreeze(model)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=6, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_text_classifier_on_a_hub_module_with_a_vocabulary_table(text_module):
    model = tftransfer.build_text_classifier("tfhub:" + text_module, 2, trainable=True)
    assert model.input.dtype == "string" and model.input_shape == (None,)
    texts, labels = tf.constant(TEXTS * 4), np.array(TEXT_LABELS * 4)
    model.compile(keras.optimizers.Adam(5e-2), "sparse_categorical_crossentropy")
    history = model.fit(texts, labels, epochs=5, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    probabilities = model.predict(tf.constant(["great good", "awful bad"]), verbose=0)
    assert probabilities[0, 1] > 0.5 > probabilities[1, 1]


def test_module_variables_train_when_unfrozen_and_stay_when_frozen(image_module, data):
    x, y = data
    model = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16)
    backbone = tftransfer.find_backbone(model)
    # The layer's weights are the module's own variables, not copies.
    assert backbone.weights[0].value is backbone._module.kernel
    before = _module_values(model)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    for value, old in zip(_module_values(model), before):
        np.testing.assert_array_equal(value, old)

    tftransfer.unfreeze(model)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    after = _module_values(model)
    names = [w.name for w in backbone.weights]
    for name, value, old in zip(names, after, before):
        if "moving_mean" in name:
            # BatchNorm state stays frozen while fine-tuning (inference_mode).
            np.testing.assert_array_equal(value, old)
        else:
            assert not np.array_equal(value, old), name


def test_module_batchnorm_state_follows_training(image_module):
    layer = HubBackbone(image_module, trainable=True, inference_mode=False)
    images = tf.random.uniform([4, 8, 8, 3])
    moving_mean = layer._module.moving_mean
    before = moving_mean.numpy().copy()
    layer(images, training=False)
    np.testing.assert_array_equal(moving_mean.numpy(), before)
    layer(images, training=True)
    assert not np.array_equal(moving_mean.numpy(), before)
    # Frozen, or in inference mode, training calls leave the state alone.
    for frozen in (HubBackbone(image_module, trainable=False, inference_mode=False),
                   HubBackbone(image_module, trainable=True, inference_mode=True)):
        state = frozen._module.moving_mean.numpy().copy()
        frozen(images, training=True)
        np.testing.assert_array_equal(frozen._module.moving_mean.numpy(), state)


def _fine_tuned(image_module, data):
    x, y = data
    model = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16)
    tftransfer.unfreeze(model)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    return model


def _run_python(code, env=None):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env={**os.environ, **(env or {})})
    return result


def test_keras_round_trip_keeps_fine_tuned_values(image_module, data, tmp_path):
    x, _ = data
    model = _fine_tuned(image_module, data)
    expected = model.predict(x, verbose=0)
    # A fresh module load gives different (pretrained) predictions...
    fresh = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16)
    fresh.set_weights([w.numpy() for w in fresh.weights])
    path = tmp_path / "hub.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)
    # ...and the file reloads in a fresh process once the handle is trusted.
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", expected)
    code = (
        "import numpy as np, keras, tftransfer\n"
        f"m = keras.models.load_model(r'{path}', safe_mode=True)\n"
        f"x = np.load(r'{tmp_path / 'x.npy'}'); y = np.load(r'{tmp_path / 'y.npy'}')\n"
        "print('maxdiff', float(np.abs(m.predict(x, verbose=0) - y).max()))\n"
    )
    untrusted = _run_python(code)
    assert untrusted.returncode != 0
    assert "trust_hub_handles" in untrusted.stderr
    trusted = _run_python(code, {tf_hub.TRUST_ENV: os.path.dirname(image_module)})
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert float(trusted.stdout.split("maxdiff")[1]) <= 1e-6


def test_savedmodel_export_reloads_in_plain_tensorflow(image_module, data, tmp_path):
    x, _ = data
    model = _fine_tuned(image_module, data)
    expected = model.predict(x, verbose=0)
    model.export(str(tmp_path / "export"), verbose=False)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", expected)
    code = (
        "import numpy as np, tensorflow as tf, sys\n"
        f"loaded = tf.saved_model.load(r'{tmp_path / 'export'}')\n"
        f"x = np.load(r'{tmp_path / 'x.npy'}'); y = np.load(r'{tmp_path / 'y.npy'}')\n"
        "assert 'tftransfer' not in sys.modules\n"
        "print('maxdiff', float(np.abs(loaded.serve(x).numpy() - y).max()))\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split("maxdiff")[1]) <= 1e-5


def test_text_model_exports_with_its_vocabulary(text_module, tmp_path):
    model = tftransfer.build_text_classifier("tfhub:" + text_module, 2)
    expected = model.predict(tf.constant(TEXTS), verbose=0)
    model.export(str(tmp_path / "text_export"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "text_export"))
    np.testing.assert_allclose(loaded.serve(tf.constant(TEXTS)).numpy(), expected, atol=1e-6)


def test_untrusted_url_in_a_keras_file_is_refused(image_module, tmp_path, monkeypatch):
    url = "https://models.example.com/features/1"
    cache = tmp_path / "cache"
    shutil.copytree(image_module, cache / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    model = tftransfer.build_classifier("tfhub:" + url, 2, image_size=16)
    model.save(tmp_path / "url.keras")
    monkeypatch.setattr(tf_hub, "_trusted_prefixes", set())  # as in a fresh process
    with pytest.raises(ValueError, match="refusing to load the TF-Hub handle.*trust_hub_handles"):
        keras.models.load_model(tmp_path / "url.keras", safe_mode=True)
    tftransfer.backbones.trust_hub_handles("https://models.example.com/")
    assert keras.models.load_model(tmp_path / "url.keras", safe_mode=True) is not None


def test_stock_hosts_are_trusted_and_others_are_not(monkeypatch):
    monkeypatch.setattr(tf_hub, "_trusted_prefixes", set())
    monkeypatch.delenv(tf_hub.TRUST_ENV, raising=False)
    assert tftransfer.backbones.is_trusted_hub_handle("https://tfhub.dev/google/x/1")
    assert tftransfer.backbones.is_trusted_hub_handle("https://www.kaggle.com/models/g/x")
    assert not tftransfer.backbones.is_trusted_hub_handle("https://tfhub.dev.evil.com/x")
    assert not tftransfer.backbones.is_trusted_hub_handle("/tmp/somewhere")
    tftransfer.backbones.trust_hub_handles("/tmp/somewhere")
    assert tftransfer.backbones.is_trusted_hub_handle("/tmp/somewhere/model")
    assert not tftransfer.backbones.is_trusted_hub_handle("/tmp/somewhereelse")


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_url_resolves_from_a_prefilled_cache_without_network(image_module, tmp_path,
                                                             monkeypatch):
    url = "https://tfhub.dev/tftransfer/test-features/1"
    cache = tmp_path / "tfhub_cache"
    shutil.copytree(image_module, cache / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
    monkeypatch.setattr("urllib.request.urlopen", _offline)
    model = tftransfer.build_classifier("tfhub:" + url, 2, image_size=16)
    assert model(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 2)


def test_url_without_cache_says_what_to_download_and_where(tmp_path, monkeypatch):
    url = "https://tfhub.dev/tftransfer/not-cached/1"
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "empty_cache"))
    monkeypatch.setattr("urllib.request.urlopen", _offline)
    with pytest.raises(ValueError) as info:
        tftransfer.build_classifier("tfhub:" + url, 2, image_size=16)
    message = str(info.value)
    assert url in message and "tf-hub-format=compressed" in message
    assert os.path.join(str(tmp_path / "empty_cache"), hashlib.sha1(url.encode()).hexdigest()) \
        in message


def test_mixed_precision_casts_at_the_boundary(image_module):
    keras.config.set_dtype_policy("mixed_float16")
    model = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16)
    backbone = tftransfer.find_backbone(model)
    assert backbone._module.kernel.dtype == tf.float32  # the module keeps its own dtype
    assert backbone.compute_dtype == "float16"
    assert model(np.zeros((2, 16, 16, 3), "float32")).dtype == "float32"


def test_block_freezing_on_a_hub_backbone_is_refused(image_module):
    model = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16)
    with pytest.raises(ValueError, match="freezes as a whole"):
        tftransfer.unfreeze(model, blocks=1)
    tftransfer.unfreeze(model)
    assert tftransfer.find_backbone(model).trainable_weights
    tftransfer.freeze(model)
    assert not tftransfer.find_backbone(model).trainable_weights


def test_signature_only_module_with_output_key(tmp_path):
    path = hub_modules.write_signature_only_module(tmp_path / "signature_only")
    with pytest.raises(ValueError, match=r"no __call__.*serving_default"):
        HubBackbone(path)
    layer = HubBackbone(path, signature="serving_default", output_key="feature_vector")
    assert layer(tf.zeros([2, 4, 4, 3])).shape == (2, 5)
    with pytest.raises(ValueError, match="output_key"):
        HubBackbone(path, signature="serving_default")(tf.zeros([1, 4, 4, 3]))
    with pytest.raises(ValueError, match="signature: the module .* has no signature 'nope'"):
        HubBackbone(path, signature="nope")


def test_bad_handles_name_the_handle(tmp_path, image_module, text_module):
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=f"handle '{missing}': no such directory"):
        tftransfer.build_classifier("tfhub:" + missing, 2, image_size=16)
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a SavedModel"):
        tftransfer.build_classifier("tfhub:" + str(tmp_path / "not_a_model"), 2, image_size=16)
    feature_map = hub_modules.write_feature_map_module(tmp_path / "feature_map")
    with pytest.raises(ValueError, match=r"feature_map.*not a feature vector"):
        tftransfer.build_classifier("tfhub:" + feature_map, 2, image_size=16)
    with pytest.raises(ValueError, match=r"image_features.*does not take a batch of strings"):
        tftransfer.build_text_classifier("tfhub:" + image_module, 2)
    with pytest.raises(ValueError, match=r"text_embedding.*does not take float images"):
        tftransfer.build_classifier("tfhub:" + text_module, 2, image_size=16)


def test_setuptools_pin_keeps_pkg_resources_for_tensorflow_hub():
    version = importlib.metadata.version("setuptools")
    assert int(version.split(".")[0]) < 82, version
    import pkg_resources  # noqa: F401  (tensorflow_hub 0.16.1 imports it)
    import tensorflow_hub

    assert tensorflow_hub.__version__ == "0.16.1"


def test_hub_input_scaling_can_be_overridden(image_module):
    model = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16,
                                        preprocessing="tf")
    assert model.get_layer("preprocessing").mode == "tf"
    with pytest.raises(ValueError, match="preprocessing"):
        tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16,
                                    preprocessing="scale")
