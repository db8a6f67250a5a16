import keras
import numpy as np
import pytest

import tftransfer

# The trainable layers (those with weights) that `unfreeze(model, blocks=1)`
# gives, as documented in README.md ("Freezing and blocks").
DOCUMENTED_TOP_BLOCK = {
    "MobileNetV2": ["block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"],
    "EfficientNetB0": ["block7a_expand_conv", "block7a_dwconv", "block7a_se_reduce",
                       "block7a_se_expand", "block7a_project_conv", "top_conv"],
    "ResNet50": ["conv5_block3_1_conv", "conv5_block3_2_conv", "conv5_block3_3_conv"],
    "ConvNeXtTiny": ["convnext_tiny_stage_3_block_2_depthwise_conv",
                     "convnext_tiny_stage_3_block_2_layernorm",
                     "convnext_tiny_stage_3_block_2_pointwise_conv_1",
                     "convnext_tiny_stage_3_block_2_pointwise_conv_2",
                     "convnext_tiny_stage_3_block_2_layer_scale",
                     "layer_normalization"],
}


def _trainable_weighted_layers(model):
    backbone = tftransfer.find_backbone(model)
    return [layer.name for layer in backbone.layers if layer.trainable and layer.weights]


@pytest.mark.parametrize("name", sorted(DOCUMENTED_TOP_BLOCK))
def test_top_block_unfreezing_gives_the_documented_layers(name):
    model = tftransfer.build_classifier(name, 2, image_size=32, weights=None)
    tftransfer.unfreeze(model, blocks=1)
    assert _trainable_weighted_layers(model) == DOCUMENTED_TOP_BLOCK[name]


def test_two_blocks_add_the_block_below():
    model = tftransfer.build_classifier("ResNet50", 2, image_size=32, weights=None)
    tftransfer.unfreeze(model, blocks=2)
    assert _trainable_weighted_layers(model) == [
        f"conv5_block{b}_{i}_conv" for b in (2, 3) for i in (1, 2, 3)]


def test_layers_and_fraction_count_from_the_top():
    model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    backbone = tftransfer.find_backbone(model)
    tftransfer.unfreeze(model, layers=10)
    trainable = [layer.name for layer in backbone.layers if layer.trainable]
    expected = [layer.name for layer in backbone.layers[-10:]
                if not isinstance(layer, keras.layers.BatchNormalization)]
    assert trainable == expected
    tftransfer.unfreeze(model, fraction=0.0)
    assert not backbone.trainable and not backbone.trainable_weights
    tftransfer.unfreeze(model)
    assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization)
               for layer in backbone.layers if layer.weights)
    tftransfer.freeze(model)
    assert not backbone.trainable_weights


def _snapshot(layers):
    return {(layer.name, index): weight.numpy().copy()
            for layer in layers for index, weight in enumerate(layer.weights)}


@pytest.mark.slow
def test_fine_tuning_keeps_batchnorm_and_lower_layers_bit_identical():
    model = tftransfer.build_classifier("MobileNetV2", 3, image_size=32, weights=None,
                                        dropout_rate=0.0)
    tftransfer.unfreeze(model, blocks=2)
    backbone = tftransfer.find_backbone(model)
    batch_norms = [layer for layer in backbone.layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    unfrozen = [layer for layer in backbone.layers if layer.trainable and layer.weights]
    frozen = [layer for layer in backbone.layers if not layer.trainable and layer.weights]
    assert batch_norms and unfrozen and frozen
    before_bn = _snapshot(batch_norms)
    before_frozen = _snapshot(frozen)
    before_unfrozen = _snapshot(unfrozen)

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, 64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)

    for key, value in _snapshot(batch_norms).items():
        np.testing.assert_array_equal(value, before_bn[key], err_msg=str(key))
    for key, value in _snapshot(frozen).items():
        np.testing.assert_array_equal(value, before_frozen[key], err_msg=str(key))
    changed = {key[0] for key, value in _snapshot(unfrozen).items()
               if not np.array_equal(value, before_unfrozen[key])}
    # Both unfrozen blocks and the final convolution learned.
    assert any(name.startswith("block_15_") for name in changed)
    assert any(name.startswith("block_16_") for name in changed)
    assert "Conv_1" in changed
    # And the optimizer saw exactly the unfrozen layers and the head.
    trained = {weight.path.split("/")[-2] for weight in model.trainable_weights}
    assert trained == {layer.name for layer in unfrozen} | {"predictions"}


def test_keras_overrides_training_false_in_nested_functional_calls():
    # Why tftransfer wraps backbones in `Backbone` and freezes BatchNorm itself:
    # in Keras 3.15, `base(x, training=False)` inside a Functional model still
    # runs `base` in training mode during fit, so its BatchNorm statistics move.
    base = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    x = base(inputs, training=False)
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    bn = base.get_layer("block_16_project_BN")
    before = bn.moving_mean.numpy().copy()
    rng = np.random.default_rng(0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(rng.uniform(0, 255, (32, 32, 32, 3)), rng.integers(0, 3, 32), epochs=1, verbose=0)
    assert not np.array_equal(before, bn.moving_mean.numpy()), (
        "Keras now honours training=False here; the notes in freezing.py and backbone.py "
        "are stale")


def test_frozen_backbone_runs_dropout_in_inference_mode_during_training(images):
    # EfficientNet has Dropout inside its blocks; a frozen backbone must be a
    # fixed function even in a training-mode call (as during fit).
    model = tftransfer.build_classifier("EfficientNetB0", 3, image_size=32, weights=None,
                                        dropout_rate=0.0)
    first = np.asarray(model(images, training=True))
    np.testing.assert_array_equal(first, np.asarray(model(images, training=True)))
    tftransfer.unfreeze(model, blocks=3)
    np.testing.assert_array_equal(first, np.asarray(model(images, training=True)))
    # A backbone trained from scratch follows `training` again.
    tftransfer.unfreeze(model, freeze_batch_norm=False)
    assert not tftransfer.find_backbone(model).inference_mode
    assert not np.array_equal(np.asarray(model(images, training=True)),
                              np.asarray(model(images, training=True)))
    tftransfer.freeze(model)
    assert tftransfer.find_backbone(model).inference_mode


def test_unfreeze_errors_name_the_argument():
    model = tftransfer.build_classifier("ResNet50", 2, image_size=32, weights=None)
    with pytest.raises(ValueError, match="blocks: 99 is more than the 17 blocks"):
        tftransfer.unfreeze(model, blocks=99)
    with pytest.raises(ValueError, match="at most one of"):
        tftransfer.unfreeze(model, blocks=1, layers=3)
    with pytest.raises(ValueError, match="fraction"):
        tftransfer.unfreeze(model, fraction=1.5)
    with pytest.raises(ValueError, match="layers"):
        tftransfer.unfreeze(model, layers=10_000)
    with pytest.raises(ValueError, match="blocks"):
        tftransfer.unfreeze(model, blocks=-1)


def test_blocks_need_a_registered_architecture():
    inputs = keras.Input((32, 32, 3))
    custom = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs), name="custom")
    model = tftransfer.build_classifier(custom, 2)
    with pytest.raises(ValueError, match="not a registered architecture.*layers="):
        tftransfer.unfreeze(model, blocks=1)
    tftransfer.unfreeze(model, layers=1)
    assert tftransfer.find_backbone(model).trainable_weights
