"""KerasHub image backbones: every family of the pinned keras-hub builds offline from a tiny
random preset folder, saves, reloads under safe_mode and exports; pooling and preprocessing
match KerasHub's own layers; blocks, freezing and LoRA on a ViT."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.training import (
    enable_lora,
    load_lora_weights,
    lora_parameter_count,
    merge_lora,
    save_lora_weights,
)

keras_hub = pytest.importorskip("keras_hub")
M = keras_hub.models
SIZE = 32
SCALE = [1 / 100.0, 1 / 120.0, 1 / 140.0]
OFFSET = [-1.0, -0.5, 0.25]

#: One tiny configuration per KerasHub image backbone family (random weights, 32 px).
FAMILIES = {
    "vit": lambda: M.ViTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2,
                                 num_heads=2, hidden_dim=16, mlp_dim=32),
    "vit_gap": lambda: M.ViTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2,
                                     num_heads=2, hidden_dim=16, mlp_dim=32,
                                     use_class_token=False),
    "deit": lambda: M.DeiTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2,
                                   num_heads=2, hidden_dim=16, intermediate_dim=32),
    "dinov2": lambda: M.DINOV2Backbone(patch_size=8, num_layers=2, hidden_dim=16, num_heads=2,
                                       intermediate_dim=32, image_shape=(SIZE, SIZE, 3),
                                       position_embedding_shape=(SIZE, SIZE, 3)),
    "dinov3": lambda: M.DINOV3Backbone(patch_size=8, num_layers=2, hidden_dim=16, num_heads=2,
                                       intermediate_dim=32, image_shape=(SIZE, SIZE, 3),
                                       num_register_tokens=2),
    "swin": lambda: M.SwinTransformerBackbone(image_shape=(SIZE, SIZE, 3), embed_dim=8,
                                              depths=[1, 1], num_heads=[1, 2], window_size=2,
                                              patch_size=4),
    "mit": lambda: M.MiTBackbone(layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2],
                                 layerwise_sr_ratios=[2, 1], max_drop_path_rate=0.0,
                                 layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2],
                                 hidden_dims=[8, 16], image_shape=(SIZE, SIZE, 3)),
    "resnet": lambda: M.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                       stackwise_num_filters=[64, 16], stackwise_num_blocks=[1, 1],
                                       stackwise_num_strides=[1, 2], block_type="basic_block"),
    # num_features=1280: KerasHub 0.32 reloads no other value from its own preset.
    "efficientnet": lambda: M.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0], stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3], stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8], stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 2], stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_strides=[1, 2], stackwise_block_types=["v1", "v1"],
        stackwise_force_input_filters=[0, 0], stackwise_nores_option=[False, False],
        num_features=1280),
    "cspnet": lambda: M.CSPNetBackbone(stem_filters=16, stem_kernel_size=3, stem_strides=2,
                                       stackwise_depth=[1, 1], stackwise_strides=2,
                                       stackwise_num_filters=[16, 32], block_type="dark_block",
                                       stage_type="dark"),
    "vgg": lambda: M.VGGBackbone(stackwise_num_repeats=[1, 1], stackwise_num_filters=[8, 16]),
    "mobilenet": lambda: M.MobileNetBackbone(
        stackwise_expansion=[[1], [2]], stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]], stackwise_kernel_size=[[3], [3]],
        stackwise_num_strides=[[2], [2]], stackwise_se_ratio=[[None], [0.25]],
        stackwise_activation=[["relu"], ["hard_swish"]], stackwise_padding=[[1], [1]],
        output_num_filters=32, depthwise_filters=8, depthwise_stride=2,
        depthwise_residual=False, last_layer_filter=32, squeeze_and_excite=0.25,
        input_num_filters=8),
    "mobilenetv5": lambda: M.MobileNetV5Backbone(
        stackwise_block_types=[["er"], ["uir"]], stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]], stackwise_strides=[[2], [2]],
        stackwise_act_layers=[["relu"], ["relu"]], stackwise_exp_ratios=[[2.0], [2.0]],
        stackwise_se_ratios=[[0.0], [0.0]], stackwise_dw_kernel_sizes=[[0], [3]],
        stackwise_dw_start_kernel_sizes=[[0], [0]], stackwise_dw_end_kernel_sizes=[[0], [0]],
        stackwise_exp_kernel_sizes=[[3], [0]], stackwise_pw_kernel_sizes=[[1], [0]],
        stackwise_num_heads=[[0], [0]], stackwise_key_dims=[[0], [0]],
        stackwise_value_dims=[[0], [0]], stackwise_kv_strides=[[0], [0]],
        stackwise_use_cpe=[[False], [False]], use_msfa=False, stem_size=8, num_features=32),
    "densenet": lambda: M.DenseNetBackbone(stackwise_num_repeats=[1, 1], growth_rate=4),
    "hgnetv2": lambda: M.HGNetV2Backbone(
        depths=[1, 1], embedding_size=8, hidden_sizes=[16, 32], stem_channels=[3, 8, 8],
        hidden_act="relu", use_learnable_affine_block=False,
        stackwise_stage_filters=[[8, 8, 16, 1, 1, 3], [16, 8, 32, 1, 1, 3]],
        apply_downsample=[False, True], use_lightweight_conv_block=[False, False]),
    "xception": lambda: M.XceptionBackbone(stackwise_conv_filters=[[8, 8], [16, 16]],
                                           stackwise_pooling=[False, True]),
    # Big enough for a LoRA share to mean something (hidden 64, 2 layers).
    "vit_lora": lambda: M.ViTBackbone(image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2,
                                      num_heads=4, hidden_dim=64, mlp_dim=128),
}
#: Every KerasHub image backbone class that has an ImageClassifier or ImageConverter in the
#: pinned keras-hub, and that tftransfer supports.
FAMILY_NAMES = [name for name in FAMILIES if name not in ("vit_gap", "vit_lora")]
#: Pooling per family: the class token, the mean of patch tokens, or global average pooling.
POOLING = {"vit": ("cls", 0), "vit_gap": ("mean", 0), "deit": ("cls", 0),
           "dinov2": ("cls", 0), "dinov3": ("cls", 0), "swin": ("mean", 0)}


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    """`{family: folder}`: tiny random presets with a converter (VGG's folder has none)."""
    root = tmp_path_factory.mktemp("kerashub_vision")
    folders = {}
    for name, make in FAMILIES.items():
        keras.utils.set_random_seed(7)
        folder = str(root / name)
        backbone = make()
        backbone.save_to_preset(folder)
        if name != "vgg":
            keras_hub.layers.ImageConverter(image_size=(SIZE, SIZE), scale=SCALE,
                                            offset=OFFSET).save_to_preset(folder)
        folders[name] = folder
    return folders


def _build(folder, **kwargs):
    kwargs.setdefault("image_size", SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tftransfer.build_classifier("kerashub:" + folder, 3, dropout_rate=0.0, **kwargs)


def _images(count=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE, 3)).astype("float32")


# --- every family ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_family_builds_saves_reloads_and_exports(presets, family, tmp_path):
    model = _build(presets[family])
    x = _images()
    expected = model.predict(x, verbose=0)
    assert expected.shape == (3, 3) and model.output.dtype == "float32"
    assert model.input_shape == (None, SIZE, SIZE, 3)
    assert isinstance(tftransfer.find_backbone(model), tftransfer.backbones.KerasHubImageBackbone)
    assert len(tftransfer.backbone_blocks(model)) >= 3  # the stem and two blocks
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    # (Block count, not names: MobileNetV5's auto-numbered layer names move on reload.)
    assert len(tftransfer.backbone_blocks(loaded)) == len(tftransfer.backbone_blocks(model))
    result = tftransfer.export(model, str(tmp_path / "export"), parity=False)
    served = tf.saved_model.load(result.path).signatures["serving_default"]
    (name,) = served.structured_input_signature[1]
    outputs = served(**{name: tf.constant(x)})["probabilities"].numpy()
    assert float(np.abs(outputs - expected).max()) < 1e-5


@pytest.mark.parametrize("family", ["vit", "vit_gap", "deit", "dinov3", "swin", "resnet", "mit"])
def test_features_are_the_converters_preprocessing_then_the_familys_pooling(presets, family):
    model = _build(presets[family])
    x = _images()
    features = keras.Model(model.inputs, model.get_layer("dropout").input)(x)
    reference = keras_hub.models.Backbone.from_preset(presets[family])
    tokens = reference(x * np.array(SCALE, "float32") + np.array(OFFSET, "float32"))
    tokens = np.asarray(list(tokens.values())[-1] if isinstance(tokens, dict) else tokens)
    if family in POOLING:
        mode, _ = POOLING[family]
        prefix = {"dinov3": 3}.get(family, 0)  # (only used for "mean")
        expected = tokens[:, 0] if mode == "cls" else tokens[:, prefix:].mean(axis=1)
        assert model.get_layer("token_pooling").mode == mode
    else:
        expected = tokens.mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(features), expected, atol=1e-4)


def test_a_folder_without_converter_warns_and_assumes_imagenet_statistics(presets):
    with pytest.warns(UserWarning, match="no image_converter.json"):
        model = tftransfer.build_classifier("kerashub:" + presets["vgg"], 2, image_size=SIZE)
    layer = model.get_layer("preprocessing")
    np.testing.assert_allclose(np.asarray(layer(np.full((1, 1, 1, 3), 255.0))).ravel(),
                               [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406),
                                                            (0.229, 0.224, 0.225))], rtol=1e-5)


def test_fixed_size_backbones_resize_inside_the_model(presets):
    model = _build(presets["vit"], image_size=48)
    assert model.input_shape == (None, 48, 48, 3)
    assert model.get_layer("preprocessing").image_size == (SIZE, SIZE)
    assert model.predict(np.zeros((1, 48, 48, 3)), verbose=0).shape == (1, 3)


def test_listing_offline_errors_and_text_presets():
    listed = tftransfer.list_backbones(source="kerashub")
    assert "kerashub:dinov2_small" in listed and "kerashub:vit_base_patch16_224_imagenet" in listed
    assert "ResNet50" not in listed and "kerashub:dinov2_small" in tftransfer.list_backbones()
    with pytest.raises(ValueError, match="build_text_classifier"):
        tftransfer.build_classifier("kerashub:bert_tiny_en_uncased", 2, weights=None)
    with pytest.raises(ValueError, match="weights"):
        tftransfer.build_classifier("kerashub:dinov2_small", 2, weights="x.h5")


def test_offline_preset_says_what_to_download_and_where(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", offline)
    with pytest.raises(ValueError) as caught:
        tftransfer.build_classifier("kerashub:dinov2_small", 2)
    message = str(caught.value)
    assert "kaggle://keras/dinov2/keras/dinov2_small" in message
    assert "KAGGLEHUB_CACHE" in message and "save_to_preset" in message


# --- blocks and freezing --------------------------------------------------------------------


def _trainable_ids(model):
    return {id(w) for w in model.trainable_weights}


@pytest.mark.parametrize("family,blocks", [
    ("vit", ["stem", "transformer_block_1", "transformer_block_2"]),
    ("dinov2", ["stem", "layers_0", "layers_1"]),
    ("swin", ["stem", "stage_0", "stage_1"]),
    ("resnet", ["stem", "stack0_block0", "stack1_block0"]),
])
def test_encoder_layers_are_the_blocks_and_unfreeze_opens_the_top_one(presets, family, blocks):
    model = _build(presets[family])
    assert [name for name, _ in tftransfer.backbone_blocks(model)] == blocks
    backbone = tftransfer.find_backbone(model)
    head = {id(w) for w in model.get_layer("predictions").weights}
    assert _trainable_ids(model) == head  # frozen on arrival
    tftransfer.unfreeze(model, blocks=1)
    top = backbone.block_layers()[-1][1]
    top_weights = {id(w) for layer in top for w in layer.weights
                   if not isinstance(layer, keras.layers.BatchNormalization)}
    assert top_weights and _trainable_ids(model) == top_weights | head
    assert backbone.inference_mode  # dropout off, BatchNorm frozen
    tftransfer.unfreeze(model, blocks=len(blocks))
    every_block = _trainable_ids(model)
    tftransfer.unfreeze(model)
    assert every_block == _trainable_ids(model)
    tftransfer.freeze(model)
    assert _trainable_ids(model) == head


# --- LoRA -----------------------------------------------------------------------------------


@pytest.fixture
def lora_model(presets):
    model = _build(presets["vit_lora"])
    enable_lora(model, rank=2, verbose=False)
    for weight in model.weights:  # a trained adapter (B starts at zero)
        if "lora_kernel_b" in weight.path:
            weight.assign(np.random.default_rng(1).normal(0, 0.2, weight.shape))
    return model


def test_lora_trains_under_five_percent_of_a_vit(presets, capsys):
    model = _build(presets["vit_lora"])
    before = model.predict(_images(), verbose=0)
    enable_lora(model, rank=2)
    assert "LoRA rank 2 on 4 projections" in capsys.readouterr().out
    lora, total = lora_parameter_count(model)
    assert 0 < lora < 0.05 * total
    trainable = [w for w in model.trainable_weights if not w.path.startswith("predictions")]
    assert trainable and all("lora_kernel" in w.path for w in trainable)
    np.testing.assert_allclose(model.predict(_images(), verbose=0), before, atol=1e-6)
    tftransfer.freeze(model)
    tftransfer.unfreeze(model, blocks=1)
    top = tftransfer.find_backbone(model).block_layers()[-1][1]
    top_lora = {id(w) for layer in top for w in layer.weights if "lora_kernel" in w.path}
    opened = {id(w) for w in model.trainable_weights if not w.path.startswith("predictions")}
    assert top_lora and opened == top_lora


def test_merged_lora_export_equals_the_adapted_model(lora_model, tmp_path):
    x = _images(4)
    adapted = lora_model.predict(x, verbose=0)
    plain = merge_lora(lora_model)
    assert not any("lora" in w.path for w in plain.weights)
    np.testing.assert_allclose(plain.predict(x, verbose=0), adapted, atol=1e-5)
    # The export merges, and its parity check runs in a fresh TensorFlow process against
    # the adapted model.
    result = tftransfer.export(lora_model, str(tmp_path / "lora_export"), sample_inputs=x)
    assert result.parity_max_abs_diff < 1e-5
    stored = tf.train.list_variables(os.path.join(result.path, "variables", "variables"))
    assert stored and not any("lora" in name for name, _ in stored)
    path = str(tmp_path / "lora.keras")
    lora_model.save(path)
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), adapted,
                               atol=1e-5)


def test_adapter_weights_alone_round_trip(lora_model, presets, tmp_path):
    x = _images()
    path = save_lora_weights(lora_model, str(tmp_path / "adapter.npz"))
    assert os.path.getsize(path) < 0.2 * sum(w.numpy().nbytes for w in lora_model.weights)
    fresh = load_lora_weights(_build(presets["vit_lora"]), path)
    np.testing.assert_allclose(fresh.predict(x, verbose=0), lora_model.predict(x, verbose=0),
                               atol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        load_lora_weights(_build(presets["vit"]), path)


def test_fit_with_lora_rank_changes_only_lora_of_the_open_block_and_the_head(presets, capsys):
    model = _build(presets["vit_lora"])
    x, y = _images(16), np.arange(16) % 3
    start = None
    result = tftransfer.fit(model, (x, y), head_epochs=1, fine_tune_epochs=1, unfreeze_blocks=1,
                            lora_rank=2, fine_tune_learning_rate=1e-2, verbose=1,
                            revert_diverged=False, batch_size=8)
    assert "LoRA rank 2" in capsys.readouterr().out
    assert result.history["phase"] == ["head", "fine_tune"]
    start = {w.path: w for w in _build(presets["vit_lora"]).weights}
    changed = [w.path for w in model.weights if "lora_kernel" not in w.path
               and not w.path.startswith("predictions")
               and not np.array_equal(w.numpy(), start[w.path].numpy())]
    assert changed == []
    moved = [w.path for w in model.weights if "lora_kernel_b" in w.path
             and np.abs(w.numpy()).max() > 0]
    assert moved and all("transformer_block_2" in p for p in moved), moved
