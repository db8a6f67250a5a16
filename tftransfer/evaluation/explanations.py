"""`explain()`: maps of where an image classifier looks (Grad-CAM, attention rollout).

Grad-CAM (Selvaraju et al., 2017) weights the channels of the backbone's last
spatial feature map (the one the classifier pools) by the mean gradient of
the class score over each channel, sums them and keeps the positive part: the
regions whose features raise that class's score. Transformers have no
feature map to pool; for the ViT family of KerasHub backbones the map is
attention rollout (Abnar & Zuidema, 2020): the head-averaged attention of
every layer, with the residual path added, multiplied from the first layer to
the last, read from the class token's row. Rollout does not depend on the
class.

The model runs eagerly under a `tf.GradientTape`, with two temporary changes
that are undone when the call returns: the chosen layer's `call` records its
output (and, for attention layers, asks for the attention scores), and the
output layer's softmax or sigmoid is set aside so that the class score is the
logit, whose gradient does not vanish when the model is sure.
"""

import contextlib
import dataclasses

import keras
import numpy as np
import tensorflow as tf

METHODS = ("auto", "gradcam", "rollout", "attention", "saliency")

_SALIENCY_HINT = ("method='saliency' (gradients of the class score with respect to the "
                  "pixels) works for any differentiable model")


@dataclasses.dataclass
class Explanation:
    """What `explain()` returns: one map per image, and what the model predicted.

    Attributes:
        heatmaps: float32 array `[n, height, width]` in [0, 1], at the
            model's input resolution; 1 where the model looks most.
        predicted: int array `[n]`. The predicted classes.
        class_index: int array `[n]`. The class each map explains (the
            predicted one unless `class_index` was given; attention maps do
            not depend on it).
        probabilities: float array `[n, classes]`. The model's outputs.
        method: str. `"gradcam"`, `"rollout"`, `"attention"` or
            `"saliency"`.
        layer: str. The layer whose output the maps were read from.
        images: uint8 array `[n, height, width, channels]`. The images, for
            plotting.
    """

    heatmaps: np.ndarray
    predicted: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    method: str
    layer: str
    images: np.ndarray

    @property
    def peaks(self):
        """`[n, 2]` int array: the (row, column) of each map's maximum, in pixels."""
        flat = self.heatmaps.reshape(len(self.heatmaps), -1).argmax(axis=1)
        return np.stack(np.unravel_index(flat, self.heatmaps.shape[1:]), axis=1)

    def plot(self, path, *, class_names=None, columns=4, alpha=0.5):
        """Writes the maps over the images to a PNG; see `plot_explanations()`."""
        from tftransfer.evaluation.plots import plot_explanations

        return plot_explanations(self.images, self, path, class_names=class_names,
                                 columns=columns, alpha=alpha)


# --- finding what to explain ---------------------------------------------------------


def _sublayers(layer):
    return list(layer._flatten_layers(include_self=True, recursive=True))


def _attention_layers(layer):
    return [sub for sub in _sublayers(layer)
            if isinstance(sub, keras.layers.MultiHeadAttention)]


def find_attention_backbone(model):
    """The ViT-family KerasHub backbone inside `model`, or None.

    A ViT-family backbone is a KerasHub model with a `patch_size` and
    `keras.layers.MultiHeadAttention` layers (ViT, DeiT, DINOv2), found
    however deep it is nested.

    Args:
        model: `keras.Model`.

    Returns:
        The backbone layer, or None when there is none.

    Example:

    >>> import tftransfer
    >>> from tftransfer.evaluation.explanations import find_attention_backbone
    >>> model = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> find_attention_backbone(model) is None
    True
    """
    for layer in _sublayers(model):
        if (type(layer).__module__.startswith("keras_hub") and isinstance(layer, keras.Model)
                and hasattr(layer, "patch_size") and _attention_layers(layer)):
            return layer
    return None


def _named_layer(model, layer):
    if isinstance(layer, keras.layers.Layer):
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer: expected None, a layer name or a layer; received "
                        f"{type(layer).__name__}.")
    for sub in _sublayers(model):
        if sub.name == layer:
            return sub
    raise ValueError(f"layer: the model {model.name!r} holds no layer named {layer!r} (nested "
                     "models searched too); pass the name of a layer that outputs a feature "
                     "map [batch, height, width, channels].")


def _static_rank(layer):
    """The rank of a layer's output when it is known without running it, else None."""
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError, TypeError):
        return None


def _no_spatial_map(model, layer, rank):
    from tftransfer.backbones.tf_hub import HubBackbone

    if isinstance(layer, HubBackbone):
        return ValueError(
            f"model: Grad-CAM needs the backbone's spatial feature map, but {layer.name!r} is a "
            "TF-Hub module that pools inside its SavedModel and returns one vector per image: "
            "no feature map is reachable from Keras. Use " + _SALIENCY_HINT + ", or rebuild "
            "the classifier over a Keras backbone (a Keras Applications or EfficientNet-Lite "
            "name, 'FashionCNN', or your own keras.Model) to get Grad-CAM.")
    what = "tokens [batch, tokens, features]" if rank == 3 else f"rank-{rank} tensors"
    return ValueError(
        f"model: Grad-CAM needs a feature map [batch, height, width, channels]; the layer "
        f"{layer.name!r} of {model.name!r} returns {what}. Pass layer=<name of a layer that "
        "returns a feature map>, method='rollout' for a ViT-family backbone, or "
        + _SALIENCY_HINT + ".")


def resolve_method(model, method="auto", layer=None):
    """Which map `explain()` draws for `model`, and from which layer, without running it.

    Args:
        model: `keras.Model`. An image classifier.
        method: str. One of `"auto"`, `"gradcam"`, `"rollout"`,
            `"attention"`, `"saliency"`. Defaults to `"auto"`: attention
            rollout when a ViT-family KerasHub backbone is inside, else
            Grad-CAM.
        layer: None, str or layer. For Grad-CAM: the layer whose feature map
            to use. Defaults to the backbone (`tftransfer.find_backbone()`).

    Returns:
        `(method, layer)`: the method name and the layer maps are read from.

    Raises:
        ValueError: the model has nothing this method can read (for example
            a TF-Hub backbone, which returns pooled vectors), saying why and
            what to use instead.

    Example:

    >>> import tftransfer
    >>> from tftransfer.evaluation.explanations import resolve_method
    >>> model = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> method, layer = resolve_method(model)
    >>> method, layer.name
    ('gradcam', 'fashion_cnn')
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model (an image classifier); received "
                        f"{type(model).__name__}.")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}; received {method!r}.")
    if method == "saliency":
        return method, model
    vit = find_attention_backbone(model)
    if method == "auto":
        method = "rollout" if vit is not None and layer is None else "gradcam"
    if method in ("rollout", "attention"):
        if vit is None:
            raise ValueError(
                f"method: {method!r} reads the attention of a ViT-family KerasHub backbone, and "
                f"{model.name!r} holds none; use method='gradcam' for CNN backbones, or "
                + _SALIENCY_HINT + ".")
        return method, vit
    if layer is not None:
        target = _named_layer(model, layer)
    else:
        from tftransfer.training.freezing import find_backbone

        try:
            target = find_backbone(model)
        except ValueError as error:
            raise ValueError(f"{error} Grad-CAM reads the backbone's feature map: pass "
                             "layer=<name of a layer that returns one>.") from None
    rank = _static_rank(target)
    if rank is not None and rank != 4:
        raise _no_spatial_map(model, target, rank)
    return method, target


# --- running the model with a layer observed -------------------------------------------


@contextlib.contextmanager
def _observed(layer, wrapper):
    """Temporarily routes `layer.call` through `wrapper(original_call, *args, **kwargs)`."""
    original = layer.call
    own = vars(layer).get("call")  # a call already set on the instance, kept as it was

    def call(*args, **kwargs):
        return wrapper(original, *args, **kwargs)

    object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        if own is None:
            object.__delattr__(layer, "call")
        else:
            object.__setattr__(layer, "call", own)


@contextlib.contextmanager
def _logits(model):
    """Sets aside the output layer's softmax or sigmoid; yields its name (or None)."""
    outputs = model.outputs if hasattr(model, "outputs") and model.outputs else []
    history = getattr(outputs[0], "_keras_history", None) if len(outputs) == 1 else None
    layer = history[0] if history else None
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if name not in ("softmax", "sigmoid"):
        yield None
        return
    object.__setattr__(layer, "activation", keras.activations.linear)
    try:
        yield name
    finally:
        object.__setattr__(layer, "activation", activation)


def _probabilities(logits, squash):
    if squash == "softmax":
        return tf.nn.softmax(logits, axis=-1).numpy()
    if squash == "sigmoid":
        return tf.sigmoid(logits).numpy()
    return logits.numpy()


def _predicted(probabilities, squash):
    if probabilities.shape[1] == 1:  # one sigmoid unit: classes 0 and 1
        threshold = 0.5 if squash else 0.0
        return (probabilities[:, 0] > threshold).astype(np.int64)
    return probabilities.argmax(axis=1).astype(np.int64)


def _class_scores(logits, classes):
    logits = tf.cast(logits, tf.float32)
    if logits.shape[1] == 1:
        sign = tf.constant(np.where(classes == 1, 1.0, -1.0), tf.float32)
        return logits[:, 0] * sign
    return tf.gather(logits, tf.constant(classes), axis=1, batch_dims=1)


def _normalize(maps, subtract_minimum):
    maps = np.asarray(maps, np.float32)
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1) if subtract_minimum else np.zeros(len(maps), np.float32)
    span = flat.max(axis=1) - low
    span = np.where(span > 0, span, 1.0)
    return (maps - low[:, None, None]) / span[:, None, None]


def _resize(maps, size):
    resized = tf.image.resize(np.asarray(maps, np.float32)[..., None], size,
                              method="bilinear")[..., 0].numpy()
    return np.clip(resized, 0.0, None)


def _gradcam_batch(model, target, batch, choose):
    captured = {}
    with tf.GradientTape() as tape:
        def record(original, *args, **kwargs):
            output = original(*args, **kwargs)
            if isinstance(output, (list, tuple, dict)) or len(output.shape) != 4:
                raise _no_spatial_map(model, target, None if isinstance(
                    output, (list, tuple, dict)) else len(output.shape))
            tape.watch(output)
            captured["features"] = output
            return output

        with _observed(target, record), _logits(model) as squash:
            logits = model(batch, training=False)
        scores = _class_scores(logits, choose(logits, squash))
    if "features" not in captured:
        raise ValueError(f"layer: {target.name!r} did not run when {model.name!r} was called; "
                         "pass layer=<a layer on the path from the input to the output>.")
    features = tf.cast(captured["features"], tf.float32)
    gradients = tape.gradient(scores, captured["features"])
    if gradients is None:
        raise ValueError(f"model: the class score of {model.name!r} does not depend on the "
                         f"output of {target.name!r}; pass layer=<a layer that feeds the "
                         "head>.")
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", features, weights))
    return cam.numpy(), logits, squash


def _saliency_batch(model, batch, choose):
    inputs = tf.convert_to_tensor(batch)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        with _logits(model) as squash:
            logits = model(inputs, training=False)
        scores = _class_scores(logits, choose(logits, squash))
    gradients = tape.gradient(scores, inputs)
    if gradients is None:
        raise ValueError(f"model: the outputs of {model.name!r} are not differentiable with "
                         "respect to its input images, so no gradient map can be drawn.")
    return tf.reduce_max(tf.abs(gradients), axis=-1).numpy(), logits, squash


def _token_grid(backbone, tokens):
    patch = getattr(backbone, "patch_size", None)
    shape = getattr(backbone, "image_shape", None)
    patch = (patch, patch) if isinstance(patch, int) else patch
    if patch and shape and shape[0] and shape[1]:
        grid = (int(shape[0]) // int(patch[0]), int(shape[1]) // int(patch[1]))
    else:
        side = int(np.sqrt(tokens))
        while side > 1 and (tokens - side * side) > 8:  # class, distillation, register tokens
            side -= 1
        grid = (side, side)
    if grid[0] * grid[1] > tokens:
        raise ValueError(f"model: the backbone {backbone.name!r} attends over {tokens} tokens, "
                         f"fewer than its {grid[0]}x{grid[1]} patches; attention maps need one "
                         "token per patch.")
    return grid


def _attention_batch(model, backbone, batch, choose, method):
    attention_layers = _attention_layers(backbone)
    recorded = []

    def record(original, *args, **kwargs):
        wanted = kwargs.pop("return_attention_scores", False)
        output, scores = original(*args, return_attention_scores=True, **kwargs)
        recorded.append(tf.cast(scores, tf.float32))
        return (output, scores) if wanted else output

    with contextlib.ExitStack() as stack:
        for layer in attention_layers:
            stack.enter_context(_observed(layer, record))
        squash = stack.enter_context(_logits(model))
        logits = model(batch, training=False)
    choose(logits, squash)
    if not recorded:
        raise ValueError(f"model: the attention layers of {backbone.name!r} did not run when "
                         f"{model.name!r} was called.")
    tokens = int(recorded[-1].shape[-1])
    grid = _token_grid(backbone, tokens)
    prefix = tokens - grid[0] * grid[1]
    identity = tf.eye(tokens, dtype=tf.float32)
    if method == "attention":
        joint = tf.reduce_mean(recorded[-1], axis=1)
    else:
        joint = identity
        for scores in recorded:
            layer_attention = tf.reduce_mean(scores, axis=1) + identity  # the residual path
            layer_attention /= tf.reduce_sum(layer_attention, axis=-1, keepdims=True)
            joint = tf.matmul(layer_attention, joint)
    if prefix:
        relevance = joint[:, 0, prefix:]  # what the class token gathers from each patch
    else:
        relevance = tf.reduce_mean(joint, axis=1)  # no class token: attention each patch gets
    maps = tf.reshape(relevance, (-1, grid[0], grid[1])).numpy()
    return maps, logits, squash


# --- the public function ---------------------------------------------------------------


def _as_images(model, images):
    try:
        images = np.asarray(images, np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"images: expected an array of images [batch, height, width, "
                        f"channels]; received {type(images).__name__}.") from None
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or not len(images):
        raise ValueError(f"images: expected images [batch, height, width, channels] (or one "
                         f"image [height, width, channels]); received shape {images.shape}.")
    expected = tuple(model.input_shape[1:]) if isinstance(model.input_shape, tuple) else None
    if expected and len(expected) == 3 and any(
            want is not None and want != got for want, got in zip(expected, images.shape[1:])):
        raise ValueError(f"images: {model.name!r} takes images of shape {expected}; received "
                         f"{images.shape[1:]}. Resize them to the model's input size first.")
    return images


def explain(model, images, *, class_index=None, method="auto", layer=None, batch_size=32):
    """Maps of where an image classifier looks: Grad-CAM, or attention for ViTs.

    For CNN backbones (Keras Applications, EfficientNet-Lite, the embedded
    FashionCNN, your own `keras.Model`) the map is Grad-CAM over the
    backbone's output, the feature map the classifier pools. For ViT-family
    KerasHub backbones found anywhere inside `model` it is attention
    rollout (or the last layer's class-token attention). TF-Hub backbones
    pool inside the module, so Grad-CAM is not possible for them: the error
    says so; `method="saliency"` (pixel gradients) works for any model.

    Args:
        model: `keras.Model`. An image classifier taking raw images, such as
            `build_classifier()` returns (softmax, or one sigmoid unit).
        images: array `[n, height, width, channels]` (or one image) at the
            model's input size, as the model takes them (raw [0, 255] for
            tftransfer classifiers).
        class_index: None, int or array of `n` ints. The class to explain.
            Defaults to None: each image's predicted class.
        method: str. `"auto"` (rollout for ViT-family backbones, else
            Grad-CAM), `"gradcam"`, `"rollout"` (attention rollout),
            `"attention"` (last layer's class-token attention) or
            `"saliency"`. Defaults to `"auto"`.
        layer: None, str or layer. Grad-CAM only: the layer whose feature
            map to use, searched in nested models too. Defaults to the
            backbone.
        batch_size: int. Images per forward pass. Defaults to `32`.

    Returns:
        An `Explanation`: `heatmaps` `[n, height, width]` in [0, 1] at the
        input resolution, `predicted`, `class_index`, `probabilities`,
        `peaks`, and `plot(path)`.

    Example:

    >>> import numpy as np, tftransfer
    >>> model = tftransfer.build_classifier("FashionCNN", 3, weights=None)
    >>> images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
    >>> result = tftransfer.evaluation.explain(model, images)
    >>> result.method, result.heatmaps.shape
    ('gradcam', (2, 32, 32))
    >>> bool(result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1)
    True
    """
    method, target = resolve_method(model, method, layer)
    images = _as_images(model, images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int; received {batch_size!r}.")
    count = len(images)
    if class_index is not None:
        requested = np.asarray(class_index)
        if requested.dtype.kind not in "iu" or requested.ndim > 1 or (
                requested.ndim == 1 and len(requested) != count):
            raise ValueError(f"class_index: expected None, an int or {count} ints (one per "
                             f"image); received {class_index!r}.")
        requested = np.broadcast_to(requested, (count,)).astype(np.int64)
    maps, probabilities, predicted, explained = [], [], [], []
    for start in range(0, count, batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size])
        chosen = {}

        def choose(logits, squash, start=start, chosen=chosen):
            chosen["probabilities"] = _probabilities(logits, squash)
            chosen["predicted"] = _predicted(chosen["probabilities"], squash)
            classes = max(2, chosen["probabilities"].shape[1])
            picked = (chosen["predicted"] if class_index is None
                      else requested[start:start + len(chosen["predicted"])])
            if picked.min() < 0 or picked.max() >= classes:
                raise ValueError(f"class_index: {model.name!r} has {classes} classes (0 to "
                                 f"{classes - 1}); received {class_index!r}.")
            chosen["classes"] = picked
            return picked

        if method == "gradcam":
            batch_maps = _gradcam_batch(model, target, batch, choose)[0]
        elif method == "saliency":
            batch_maps = _saliency_batch(model, batch, choose)[0]
        else:
            batch_maps = _attention_batch(model, target, batch, choose, method)[0]
        maps.append(batch_maps)
        probabilities.append(chosen["probabilities"])
        predicted.append(chosen["predicted"])
        explained.append(chosen["classes"])
    maps = np.concatenate(maps)
    # Grad-CAM keeps zero as "no evidence"; attention and gradients are relative.
    maps = _normalize(maps, subtract_minimum=method != "gradcam")
    heatmaps = _normalize(_resize(maps, images.shape[1:3]), subtract_minimum=False)
    return Explanation(
        heatmaps=np.clip(heatmaps, 0.0, 1.0).astype(np.float32),
        predicted=np.concatenate(predicted), class_index=np.concatenate(explained),
        probabilities=np.concatenate(probabilities), method=method,
        layer=target.name, images=np.clip(images, 0, 255).astype(np.uint8))
