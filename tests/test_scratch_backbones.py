"""A backbone built at random initialization (weights=None) trains its BatchNorm in fit().

Pretrained backbones keep BatchNorm frozen while fine-tuning (its statistics
describe the data they learned from). A Keras Applications backbone built with
`weights=None` has nothing to keep: `fit()` must train its BatchNorm, with a
momentum short runs can use (Keras Applications' 0.99/0.999 leave the moving
statistics at their initial mean 0 and variance 1 after a few hundred steps,
and the model evaluates at chance).
"""

import keras
import numpy as np

import tftransfer


def _data(n=64, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    return x, y


def _batch_norms(model):
    return [layer for layer in tftransfer.find_backbone(model).layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def test_random_backbone_is_marked_and_round_trips(tmp_path):
    model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    backbone = tftransfer.find_backbone(model)
    assert backbone.pretrained is False
    assert backbone.inference_mode  # still starts frozen, for the head phase
    assert {layer.momentum for layer in _batch_norms(model)} == {0.9}
    path = tmp_path / "scratch.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert tftransfer.find_backbone(loaded).pretrained is False
    assert {layer.momentum for layer in _batch_norms(loaded)} == {0.9}
    # A backbone wrapped from a user's model is taken as pretrained, as before.
    user = keras.applications.MobileNetV2(include_top=False, weights=None,
                                          input_shape=(32, 32, 3))
    wrapped = tftransfer.find_backbone(tftransfer.build_classifier(user, 2))
    assert wrapped.pretrained is True
    assert "pretrained" not in wrapped.get_config()  # pretrained configs are unchanged


def test_fit_trains_batch_norm_of_a_random_backbone_and_evaluates_with_it():
    # MobileNetV3's BatchNorm momentum is 0.999: before the fix its moving
    # statistics stayed at mean 0 / variance 1 and the model predicted one class.
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    y = np.arange(32) % 2
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    x[y == 1, ::4] = 255.0  # class 1: white stripes
    model = tftransfer.build_classifier("MobileNetV3Small", 2, image_size=32, weights=None)
    # 100 fine-tuning steps: the least fit()'s default budget gives.
    tftransfer.fit(model, (x, y), head_epochs=1, fine_tune_epochs=25, batch_size=8,
                   verbose=0)
    batch_norms = _batch_norms(model)
    assert all(layer.trainable for layer in batch_norms)
    # The moving statistics followed the data, not their initial values ...
    assert all(not np.allclose(layer.moving_variance.numpy(), 1.0) for layer in batch_norms)
    # ... so the model predicts in inference mode (moving statistics) as it
    # learned to in training mode (the batches' statistics).
    assert (model.predict(x, verbose=0).argmax(-1) == y).mean() >= 0.9


def test_fit_keeps_batch_norm_of_a_pretrained_backbone_frozen():
    x, y = _data(32)
    model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    backbone = tftransfer.find_backbone(model)
    backbone.pretrained = True  # stands in for ImageNet weights (offline)
    batch_norms = _batch_norms(model)
    before = [[w.numpy().copy() for w in layer.weights] for layer in batch_norms]
    tftransfer.fit(model, (x, y), head_epochs=1, fine_tune_epochs=1, batch_size=32, verbose=0)
    assert backbone.inference_mode
    assert not any(layer.trainable for layer in batch_norms)
    for layer, values in zip(batch_norms, before):
        for weight, value in zip(layer.weights, values):
            np.testing.assert_array_equal(weight.numpy(), value, err_msg=weight.path)


def test_tune_trials_train_batch_norm_of_a_random_backbone_only(tmp_path, mobilenet_v2_weights):
    x, y = _data(48)
    data = tftransfer.data.from_arrays(x, y, validation_split=0.25)
    space = {"head_learning_rate": [1e-3], "dropout_rate": [0.2], "unfreeze_blocks": [2]}
    opened = {}
    for label, weights in (("random", None), ("pretrained", mobilenet_v2_weights)):
        result = tftransfer.tune("MobileNetV2", data, max_trials=1, weights=weights,
                                 directory=tmp_path, project_name=label, head_epochs=1,
                                 fine_tune_epochs=1, folds=None, search_space=space)
        opened[label] = result.tuner.hypermodel.log[0]["trainable_backbone_layers"]
    batch_norm = [name for name in opened["random"] if name.lower().endswith("_bn")]
    assert batch_norm and set(opened["random"]) - set(batch_norm) == set(opened["pretrained"])
    assert not any(name.lower().endswith("_bn") for name in opened["pretrained"])
