import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.backbones import all_specs, assign_blocks, get_backbone_spec, parse_backbone_name
from tftransfer.layers import ImagePreprocessing

ALL_NAMES = [spec.name for spec in all_specs()]
FAMILIES = sorted({spec.family: spec.name for spec in all_specs() if spec.source == "keras"}.items())


def test_registry_holds_every_keras_application():
    constructors = {
        name for name in dir(keras.applications)
        if name[0].isupper() and callable(getattr(keras.applications, name))
    }
    assert constructors == set(tftransfer.list_backbones(source="keras"))
    assert len(constructors) == 40


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_backbone_builds_and_has_declared_feature_dim(name):
    spec = get_backbone_spec(name)
    size = spec.min_size
    model = tftransfer.build_classifier(name, 3, image_size=size, weights=None)
    backbone = tftransfer.find_backbone(model)
    features = backbone(np.zeros((1, size, size, 3), "float32"), training=False)
    assert features.shape[-1] == spec.feature_dim
    assert model(np.zeros((1, size, size, 3), "float32")).shape == (1, 3)


@pytest.mark.parametrize("family,name", FAMILIES)
def test_in_model_preprocessing_equals_keras_preprocess_input(family, name):
    spec = get_backbone_spec(name)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = getattr(keras.applications, family).preprocess_input(pixels.copy())
    actual = ImagePreprocessing(spec.preprocessing)(pixels)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5, atol=1e-4)


def test_preprocessing_modes_differ_where_weights_expect_it():
    # A guard that the test above compares something real: the families do not
    # all share one mode.
    modes = {spec.preprocessing for spec in all_specs() if spec.source == "keras"}
    assert modes == {"caffe", "tf", "torch", "none"}


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="Did you mean: .*ResNet50") as info:
        tftransfer.build_classifier("resnet05", 2, weights=None)
    assert "list_backbones" in str(info.value)


def test_names_are_case_and_punctuation_insensitive():
    assert get_backbone_spec("efficientnet_b0").name == "EfficientNetB0"
    assert get_backbone_spec("keras:mobilenet-v2").name == "MobileNetV2"


def test_unknown_source_prefix_lists_valid_ones():
    with pytest.raises(ValueError, match="keras:, tfhub:"):
        parse_backbone_name("torchvision:resnet50")
    assert parse_backbone_name("tfhub:https://tfhub.dev/x/1") == ("tfhub", "https://tfhub.dev/x/1")


def test_backbone_info_reports_blocks_read_from_the_architecture():
    info = tftransfer.backbone_info("ResNet50")
    assert info.blocks[0] == "stem"
    assert info.blocks[-1] == "conv5_block3"
    assert info.num_blocks == 1 + 3 + 4 + 6 + 3
    assert tftransfer.backbone_info("InceptionV3").blocks == tuple(f"mixed{i}" for i in range(11))
    assert len(tftransfer.backbone_info("EfficientNetB0").blocks) == 1 + 16


def test_assign_blocks_start_and_end_boundaries():
    names = ["input", "conv1", "a_1_x", "relu", "a_2_x", "top"]
    blocks, per_layer = assign_blocks(names, r"^(a_\d)_", "start")
    assert blocks == ["stem", "a_1", "a_2"]
    assert per_layer == ["stem", "stem", "a_1", "a_1", "a_2", "a_2"]
    names = ["input", "c1", "m0", "c2", "m1", "extra"]
    blocks, per_layer = assign_blocks(names, r"^(m\d)$", "end")
    assert blocks == ["m0", "m1"]
    assert per_layer == ["m0", "m0", "m0", "m1", "m1", "m1"]


def test_image_size_too_small_for_family():
    with pytest.raises(ValueError, match="image_size.*smallest input is 75x75"):
        tftransfer.build_classifier("InceptionV3", 2, image_size=64, weights=None)


@pytest.mark.parametrize("bad", [0, -3, (32,), (32, 0), "big", (32.5, 32)])
def test_image_size_must_be_a_positive_pair(bad):
    with pytest.raises(ValueError, match="image_size"):
        tftransfer.build_classifier("MobileNetV2", 2, image_size=bad, weights=None)
