import os
import urllib.error

import keras
import numpy as np
import pytest

import tftransfer


def _mobilenet(**kwargs):
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("weights", None)
    return tftransfer.build_classifier("MobileNetV2", 3, **kwargs)


def test_classifier_is_functional_with_the_documented_layers():
    model = _mobilenet(head_units=(16,))
    names = [layer.name for layer in model.layers]
    assert names[0] == "image"
    assert names[1] == "preprocessing"
    assert model.get_layer("preprocessing").mode == "tf"
    assert isinstance(tftransfer.find_backbone(model), keras.Model)
    assert names[-4:] == ["pooling", "dropout", "head_dense_0", "predictions"]
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 3)
    # The backbone starts frozen: only the head trains.
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {
        "head_dense_0", "predictions"}


def test_backbone_is_a_functional_model_in_inference_mode():
    model = _mobilenet()
    backbone = tftransfer.find_backbone(model)
    assert isinstance(backbone, tftransfer.backbones.Backbone)
    assert backbone.inference_mode
    assert backbone.name.startswith("mobilenetv2")
    assert backbone.get_layer("block_16_project") is not None


def test_output_is_float32_under_mixed_precision(images):
    keras.config.set_dtype_policy("mixed_float16")
    model = _mobilenet()
    assert tftransfer.find_backbone(model).compute_dtype == "float16"
    output = model(images)
    assert output.dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"


@pytest.mark.parametrize(
    "task,num_classes,activation",
    [("multiclass", 4, "softmax"), ("multilabel", 4, "sigmoid"), ("binary", 1, "sigmoid"),
     ("regression", 2, "linear")],
)
def test_tasks_choose_the_output_activation(task, num_classes, activation, images):
    model = tftransfer.build_classifier(
        "MobileNetV2", num_classes, image_size=32, weights=None, task=task)
    assert model.get_layer("predictions").get_config()["activation"] == activation
    output = np.asarray(model(images))
    assert output.shape == (4, num_classes)
    if task == "multiclass":
        np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "task,num_classes,pattern",
    [("multiclass", 1, "at least 2 classes"), ("binary", 2, "num_classes=1"),
     ("multilabel", 0, "num_classes >= 1"), ("regression", -1, "num_classes >= 1")],
)
def test_num_classes_that_does_not_fit_the_task(task, num_classes, pattern):
    with pytest.raises(ValueError, match=f"num_classes.*{pattern}"):
        tftransfer.build_classifier("MobileNetV2", num_classes, task=task, weights=None)


def test_unknown_task_and_wrong_types():
    with pytest.raises(ValueError, match="task"):
        _mobilenet(task="detection")
    with pytest.raises(TypeError, match="num_classes"):
        tftransfer.build_classifier("MobileNetV2", 2.0, weights=None)
    with pytest.raises(TypeError, match="backbone"):
        tftransfer.build_classifier(42, 2, weights=None)
    with pytest.raises(ValueError, match="dropout_rate"):
        _mobilenet(dropout_rate=1.5)


def test_keras_round_trip_predicts_the_same(tmp_path, images):
    model = _mobilenet(augmentation="light", head_units=(8,))
    tftransfer.unfreeze(model, blocks=2)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(images, verbose=0),
                                  reloaded.predict(images, verbose=0))
    assert reloaded.get_layer("preprocessing").mode == "tf"
    assert type(reloaded.get_layer("preprocessing")) is tftransfer.layers.ImagePreprocessing
    assert type(tftransfer.find_backbone(reloaded)) is tftransfer.backbones.Backbone
    assert [w.path for w in reloaded.trainable_weights] == [
        w.path for w in model.trainable_weights]


def test_round_trip_in_a_fresh_process_with_only_import_tftransfer(tmp_path, images):
    import subprocess
    import sys

    model = _mobilenet()
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", model.predict(images, verbose=0))
    code = (
        "import numpy as np, keras, tftransfer\n"
        f"m = keras.models.load_model(r'{tmp_path / 'model.keras'}', safe_mode=True)\n"
        f"x = np.load(r'{tmp_path / 'x.npy'}'); y = np.load(r'{tmp_path / 'y.npy'}')\n"
        "assert np.array_equal(m.predict(x, verbose=0), y)\n"
        "print('same')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "same" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "InceptionV3",
     "InceptionResNetV2", "MobileNet", "MobileNetV3Small", "NASNetMobile", "ResNet50",
     "ResNet50V2", "VGG16", "Xception"],
)
def test_every_family_round_trips_through_a_keras_file(name, tmp_path):
    spec = tftransfer.backbones.get_backbone_spec(name)
    size = max(spec.min_size, 32)
    model = tftransfer.build_classifier(name, 2, image_size=size, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), reloaded.predict(x, verbose=0),
                               atol=1e-6)


def test_weights_from_a_local_file(tmp_path, images):
    source = keras.applications.MobileNetV2(include_top=False, weights=None,
                                            input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet_v2.weights.h5"
    source.save_weights(path)
    model = _mobilenet(weights=str(path))
    backbone = tftransfer.find_backbone(model)
    for loaded, saved in zip(backbone.weights, source.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())


def test_missing_weights_file_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="weights: no weights file at"):
        _mobilenet(weights=str(tmp_path / "nope.weights.h5"))


def test_weights_file_of_another_architecture(tmp_path):
    other = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenet_v1.weights.h5"
    other.save_weights(path)
    with pytest.raises(ValueError, match="does not fit MobileNetV2.*another architecture"):
        _mobilenet(weights=str(path))


def test_offline_imagenet_download_says_which_file_and_where(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    cache = os.path.join(os.path.expanduser(file_utils.config.keras_home()), "models")
    expected_file = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5"
    if os.path.exists(os.path.join(cache, expected_file)):
        pytest.skip("the ImageNet weights are cached on this machine")
    with pytest.raises(ValueError) as info:
        tftransfer.build_classifier("MobileNetV2", 2, image_size=96, weights="imagenet")
    message = str(info.value)
    assert "weights='imagenet'" in message
    assert expected_file in message
    assert cache in message
    assert "weights=None" in message


def test_any_keras_model_is_a_backbone(images):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    custom = keras.Model(inputs, x, name="my_backbone")
    model = tftransfer.build_classifier(custom, 2)
    assert model.input_shape == (None, 32, 32, 3)
    assert model.get_layer("preprocessing").mode == "none"
    assert model(images).shape == (4, 2)


def test_augmentation_runs_only_in_training(images):
    model = _mobilenet(augmentation="heavy")
    assert model.get_layer("augmentation") is not None
    np.testing.assert_array_equal(model(images, training=False), model(images, training=False))
    with pytest.raises(ValueError, match="augmentation: unknown preset"):
        _mobilenet(augmentation="extreme")
