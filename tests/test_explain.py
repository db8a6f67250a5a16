"""`explain()`: Grad-CAM finds the object that decides the class; ViT attention maps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from hub_modules import write_image_module
from tftransfer.evaluation import evaluate, explain, plot_explanations, write_report

SIZE, SIDE, STRIDE = 32, 8, 4  # image side, object side, feature-map cell (2 poolings)
KINDS = ("horizontal stripes", "vertical stripes", "checks")


def located_objects(count, seed):
    """Noise images with one striped or checked 8x8 object at a random place.

    The object's pattern is the class; background and object brightness are
    the same for every class, so only the object region tells them apart.
    Returns images, labels and the objects' (top, left) corners.
    """
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal(100, 30, (count, SIZE, SIZE, 3)), 0, 255)
    labels = rng.integers(0, len(KINDS), count)
    corners = rng.integers(0, SIZE - SIDE + 1, (count, 2))
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    patterns = [(yy // 2) % 2, (xx // 2) % 2, (yy // 2 + xx // 2) % 2]
    for image, label, (top, left) in zip(images, labels, corners):
        image[top:top + SIDE, left:left + SIDE] = np.where(
            patterns[label][..., None], 230.0, 30.0)
    return images.astype("float32"), labels, corners


def located_backbone():
    """Three convolutions, two poolings: an 8x8 feature map, one cell per 4 pixels."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    for index, filters in enumerate((16, 32, 32)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                name=f"conv{index + 1}")(x)
        if index < 2:
            x = keras.layers.MaxPooling2D(name=f"pool{index + 1}")(x)
    return keras.Model(inputs, x, name="located_cnn")


@pytest.fixture(scope="module")
def located():
    """A classifier built the tftransfer way and trained on the located-object task."""
    keras.utils.set_random_seed(1337)  # module fixtures start before the autouse seed
    x, y, _ = located_objects(600, seed=0)
    test_x, test_y, test_corners = located_objects(100, seed=1)
    model = tftransfer.build_classifier(located_backbone(), len(KINDS), dropout_rate=0.0)
    tftransfer.unfreeze(model)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=8, batch_size=32, validation_data=(test_x, test_y), verbose=0)
    return model, test_x, test_y, test_corners


def hit_rate(peaks, corners, margin=STRIDE):
    """Share of peaks inside their object, within `margin` pixels (one feature cell)."""
    top, left = corners[:, 0] - margin, corners[:, 1] - margin
    inside = ((peaks[:, 0] >= top) & (peaks[:, 0] < top + SIDE + 2 * margin)
              & (peaks[:, 1] >= left) & (peaks[:, 1] < left + SIDE + 2 * margin))
    return float(inside.mean())


def test_gradcam_peaks_inside_the_object(located):
    model, x, y, corners = located
    before = model.predict(x, verbose=0)
    result = explain(model, x)
    assert result.method == "gradcam" and result.layer == "located_cnn"
    assert result.heatmaps.shape == (len(x), SIZE, SIZE)
    assert result.heatmaps.min() >= 0.0 and result.heatmaps.max() == pytest.approx(1.0)
    assert np.mean(result.predicted == y) >= 0.9  # the model learned the task
    np.testing.assert_array_equal(result.class_index, result.predicted)
    np.testing.assert_allclose(result.probabilities, before, atol=1e-5)
    rate = hit_rate(result.peaks, corners)
    print(f"Grad-CAM peak inside the object (one-cell margin): {rate:.2f}")
    assert rate >= 0.9
    # Baselines the test must beat: a map that ignores the image hits far less often.
    assert hit_rate(np.random.default_rng(0).integers(0, SIZE, (len(x), 2)), corners) < 0.5
    # The model is left as it was: same outputs, no call or activation left patched.
    np.testing.assert_allclose(model.predict(x, verbose=0), before, atol=1e-6)
    assert all("call" not in vars(layer) for layer in model._flatten_layers())
    assert model.get_layer("predictions").activation is keras.activations.softmax


def test_gradcam_equals_the_class_activation_map(located):
    # Under GAP -> Dense, Grad-CAM of class c is CAM: ReLU(sum_k w[k, c] * A_k).
    model, x, _, _ = located
    backbone = model.get_layer("located_cnn")
    features = backbone(model.get_layer("preprocessing")(x[:8])).numpy()
    kernel = model.get_layer("predictions").kernel.numpy()
    classes = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    cam = np.maximum(np.einsum("bhwk,kb->bhw", features, kernel[:, classes]), 0)
    cam /= cam.reshape(len(cam), -1).max(axis=1)[:, None, None]
    expected = tf.image.resize(cam[..., None], (SIZE, SIZE))[..., 0].numpy()
    expected /= expected.reshape(len(cam), -1).max(axis=1)[:, None, None]
    result = explain(model, x[:8], class_index=classes)
    np.testing.assert_array_equal(result.class_index, classes)
    np.testing.assert_allclose(result.heatmaps, expected, atol=1e-4)
    # A class the image does not show draws another map than the predicted one.
    other = explain(model, x[:8], class_index=(result.predicted + 1) % len(KINDS))
    assert np.abs(other.heatmaps - explain(model, x[:8]).heatmaps).max() > 0.1


def test_maps_in_the_card_and_the_top_losses_grid(located, tmp_path):
    model, x, y, _ = located
    evaluation = evaluate(model, (x, y), class_names=list(KINDS), top_losses=4)
    card = open(write_report(tmp_path / "card", evaluation, model=model)).read()
    assert "## Where the model looks" in card and "Grad-CAM maps" in card
    assert (tmp_path / "card" / "top_losses.png").read_bytes().startswith(b"\x89PNG")
    plain = open(write_report(tmp_path / "plain", evaluation)).read()
    assert "pass `model=`" in plain
    result = explain(model, x[:6])
    path = plot_explanations(x[:6], result, tmp_path / "maps.png", class_names=KINDS)
    assert open(path, "rb").read(4) == b"\x89PNG"
    assert result.plot(tmp_path / "again.png").endswith("again.png")
    with pytest.raises(ValueError, match="images: .* maps"):
        plot_explanations(x[:5], result, tmp_path / "bad.png")


def _vit_classifier(num_classes=3):
    """A tiny random-init ViT inside two Functional models: explain() has to find it."""
    import keras_hub

    vit = keras_hub.models.ViTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=8, num_layers=2, num_heads=2,
        hidden_dim=16, mlp_dim=32, name="tiny_vit")
    inputs = keras.Input((SIZE, SIZE, 3))
    tokens = vit(keras.layers.Rescaling(1.0 / 255)(inputs))
    inner = keras.Model(inputs, tokens[:, 0], name="vit_features")  # the class token
    outer_inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(
        inner(outer_inputs))
    return keras.Model(outer_inputs, outputs, name="vit_classifier"), vit


def _reference_attention(vit, images):
    """Head-averaged attention of each block, by running the blocks one by one."""
    x = vit.get_layer("vit_patching_and_embedding")(images / 255.0)
    encoder = vit.get_layer("vit_encoder")
    attention = []
    for block in encoder.encoder_layers:
        normed = block.layer_norm_1(x)
        _, scores = block.mha(normed, normed, return_attention_scores=True)
        attention.append(np.mean(scores.numpy(), axis=1))
        x = block(x)
    return attention


def _as_heatmaps(relevance):
    grid = relevance.reshape(len(relevance), 4, 4)
    low = grid.min(axis=(1, 2), keepdims=True)
    grid = (grid - low) / (grid.max(axis=(1, 2), keepdims=True) - low)
    maps = tf.image.resize(grid[..., None], (SIZE, SIZE))[..., 0].numpy()
    return maps / maps.max(axis=(1, 2), keepdims=True)


def test_vit_attention_maps(images):
    model, vit = _vit_classifier()
    rollout = explain(model, images)
    assert rollout.method == "rollout" and rollout.layer == "tiny_vit"
    assert rollout.heatmaps.shape == (len(images), SIZE, SIZE)
    assert rollout.heatmaps.min() >= 0.0 and rollout.heatmaps.max() <= 1.0
    assert all(heatmap.std() > 0.01 for heatmap in rollout.heatmaps)  # not constant
    np.testing.assert_allclose(rollout.probabilities, model.predict(images, verbose=0),
                               atol=1e-5)
    # Against rollout computed here from attention scores read block by block.
    attention = _reference_attention(vit, images)
    joint = np.eye(17)
    for layer in attention:
        layer = layer + np.eye(17)
        joint = (layer / layer.sum(axis=-1, keepdims=True)) @ joint
    np.testing.assert_allclose(rollout.heatmaps, _as_heatmaps(joint[:, 0, 1:]), atol=1e-4)
    last = explain(model, images, method="attention")
    np.testing.assert_allclose(last.heatmaps, _as_heatmaps(attention[-1][:, 0, 1:]),
                               atol=1e-4)
    assert np.abs(last.heatmaps - rollout.heatmaps).max() > 0.05
    assert all("call" not in vars(layer) for layer in model._flatten_layers())


def test_models_that_cannot_be_explained_say_why(images, tmp_path, located):
    module = write_image_module(str(tmp_path / "module"))
    hub_model = tftransfer.build_classifier("tfhub:" + module, 2, image_size=SIZE)
    with pytest.raises(ValueError, match="TF-Hub module that pools.*method='saliency'"):
        explain(hub_model, images)
    saliency = explain(hub_model, images, method="saliency")
    assert saliency.heatmaps.shape == (len(images), SIZE, SIZE)
    assert saliency.heatmaps.min() >= 0 and saliency.heatmaps.max() == pytest.approx(1.0)
    labels = np.arange(len(images)) % 2
    card = open(write_report(tmp_path / "card", evaluate(hub_model, (images, labels)),
                             model=hub_model)).read()
    assert "Not available for this model" in card and "TF-Hub" in card

    model = located[0]
    with pytest.raises(ValueError, match="holds none; use method='gradcam'"):
        explain(model, images, method="rollout")
    with pytest.raises(ValueError, match="method: expected one of"):
        explain(model, images, method="cam")
    with pytest.raises(ValueError, match="takes images of shape"):
        explain(model, np.zeros((2, 16, 16, 3)))
    with pytest.raises(ValueError, match="3 classes"):
        explain(model, images, class_index=3)
    with pytest.raises(ValueError, match="class_index: expected"):
        explain(model, images, class_index=[0, 1])
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        explain(model, images, layer="nope")
    with pytest.raises(ValueError, match="returns tokens|feature map"):
        explain(model, images, layer="pooling")
    with pytest.raises(TypeError, match="keras.Model"):
        explain(object(), images)
    # A layer inside the backbone can be named instead: the first convolution's map.
    early = explain(model, images, layer="conv1")
    assert early.layer == "conv1" and early.heatmaps.shape == (len(images), SIZE, SIZE)


@pytest.mark.parametrize("backbone", ["MobileNetV2", "EfficientNetLite0"])
def test_gradcam_reads_registry_backbones(backbone, images):
    model = tftransfer.build_classifier(backbone, 3, image_size=SIZE, weights=None)
    result = explain(model, images)
    assert result.method == "gradcam" and result.layer == tftransfer.find_backbone(model).name
    assert result.heatmaps.shape == (len(images), SIZE, SIZE)
    assert result.heatmaps.min() >= 0.0 and result.heatmaps.max() <= 1.0
