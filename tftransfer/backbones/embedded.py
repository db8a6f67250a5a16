"""The embedded backbone: a small CNN that tftransfer pretrained itself.

No pretrained weights can be downloaded offline, so the project ships one
backbone it pretrained by a reproducible script
(`scripts/pretrain_embedded_backbone.py`) on real data: Fashion-MNIST classes
0-4 (tops: T-shirt, trouser, pullover, dress, coat). It is stored in TF-Hub
SavedModel format under `saved_models/embedded/` (about 0.3 MB) and
registered as the backbone `"FashionCNN"`: `build_classifier("FashionCNN",
...)` loads those weights (what `weights="imagenet"`, the default, means for
every registry backbone: the weights it was pretrained with), and
`weights=None` builds the same architecture at random, for comparisons
from scratch. The same folder also loads as `"tfhub:saved_models/embedded"`.

The architecture is three blocks of two 3x3 convolutions (16, 32 and 64
filters, ReLU) and a 2x2 max pooling; it has no BatchNorm, so fine-tuning
it has no BatchNorm statistics to protect.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from tftransfer.backbones.registry import BackboneSpec, register_backbone

NAME = "FashionCNN"
FILTERS = (16, 32, 64)
SOURCE_CLASSES = ("t_shirt_top", "trouser", "pullover", "dress", "coat")
TARGET_CLASSES = ("sandal", "shirt", "sneaker", "bag", "ankle_boot")
PATH_VARIABLE = "TFTRANSFER_EMBEDDED_BACKBONE"
_DEFAULT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "saved_models", "embedded")


def embedded_backbone_path():
    """The folder of the embedded backbone's SavedModel.

    `$TFTRANSFER_EMBEDDED_BACKBONE` when set, else `saved_models/embedded`
    in the source tree.

    Example:

    >>> from tftransfer.backbones.embedded import embedded_backbone_path
    >>> embedded_backbone_path().endswith("embedded")
    True
    """
    return os.environ.get(PATH_VARIABLE) or _DEFAULT_DIR


def architecture(input_shape=(32, 32, 3), *, name="fashion_cnn"):
    """The embedded backbone's architecture, at random initialization.

    Args:
        input_shape: tuple. `(height, width, 3)`; height and width at least
            8 (or None). Defaults to `(32, 32, 3)`.
        name: str. Defaults to `"fashion_cnn"`.

    Returns:
        A Functional `keras.Model` from images in [0, 1] to a feature map
        with 64 channels; its blocks are `block1` ... `block3`.

    Example:

    >>> from tftransfer.backbones.embedded import architecture
    >>> architecture().output.shape
    (None, 4, 4, 64)
    """
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = inputs
    for block, filters in enumerate(FILTERS, start=1):
        for conv in (1, 2):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                    name=f"block{block}_conv{conv}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name=name)


def metadata(path=None):
    """What the pretraining script recorded: source accuracy, classes, settings.

    Example:

    >>> from tftransfer.backbones.embedded import metadata
    >>> metadata()["source_classes"][:2]
    ['t_shirt_top', 'trouser']
    """
    path = os.path.join(path or embedded_backbone_path(), "metadata.json")
    if not os.path.exists(path):
        raise ValueError(_missing(os.path.dirname(path)))
    with open(path) as handle:
        return json.load(handle)


def _missing(path):
    return (f"The embedded backbone is missing at {path!r}. Restore it from git "
            "(`git checkout -- saved_models/embedded`) or pretrain it again with "
            "`python scripts/pretrain_embedded_backbone.py`; set $"
            f"{PATH_VARIABLE} to use one stored elsewhere.")


def load_pretrained(model, path=None):
    """Loads the embedded SavedModel's weights into `architecture()`'s model.

    Args:
        model: `keras.Model` from `architecture()` (any input size).
        path: str or None. Defaults to `embedded_backbone_path()`.

    Returns:
        The model.
    """
    path = path or embedded_backbone_path()
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(_missing(path))
    loaded = tf.saved_model.load(path)
    stored = list(loaded.keras_weights)
    if len(stored) != len(model.weights) or any(
            tuple(s.shape) != tuple(w.shape) for s, w in zip(stored, model.weights)):
        raise ValueError(f"The SavedModel at {path!r} does not hold the weights of the embedded "
                         "architecture; pretrain it again with "
                         "`python scripts/pretrain_embedded_backbone.py`.")
    for weight, value in zip(model.weights, stored):
        weight.assign(value.numpy())
    return model


def _construct(input_shape, weights=None):
    model = architecture(input_shape)
    if weights is None:
        return model
    if weights in ("imagenet", "pretrained"):
        return load_pretrained(model)
    raise ValueError(f"weights: expected 'imagenet' (its pretrained weights), None or a "
                     f"weights file for {NAME}; received {weights!r}.")


class _HubModule(tf.Module):
    """The TF-Hub-format module: float32 images in [0, 1] -> pooled features."""

    variables = None  # tf.Module's read-only properties, replaced by saved lists
    trainable_variables = None

    def __init__(self, model):
        super().__init__(name="fashion_cnn")
        # Keras weight order, so that `load_pretrained()` assigns them back in order.
        self.keras_weights = [tf.Variable(w.numpy(), name=w.path.replace("/", "_"))
                              for w in model.weights]
        self.variables = list(self.keras_weights)
        self.trainable_variables = list(self.keras_weights)
        self.regularization_losses = []

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def __call__(self, images):
        x = images
        for block in range(len(FILTERS)):
            for conv in range(2):
                index = 2 * (2 * block + conv)
                x = tf.nn.relu(tf.nn.conv2d(x, self.keras_weights[index], 1, "SAME")
                               + self.keras_weights[index + 1])
            x = tf.nn.max_pool2d(x, 2, 2, "VALID")
        return tf.reduce_mean(x, axis=[1, 2])


def export_hub_module(model, path, *, info=None):
    """Writes `architecture()`'s weights as a TF-Hub image feature-vector SavedModel.

    The module maps float32 images in [0, 1] (any size of at least 8x8) to
    64 pooled features, like the feature-vector modules on tfhub.dev, and has
    `variables`, `trainable_variables` and `regularization_losses`. The
    folder is written under a temporary name and renamed, so a killed export
    leaves the previous one in place.

    Args:
        model: `keras.Model` from `architecture()`.
        path: str. The folder to write.
        info: dict or None. Written as `metadata.json` beside the SavedModel.

    Returns:
        The path.
    """
    import shutil
    import tempfile

    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".tftransfer-tmp-", dir=parent)
    os.chmod(temporary, 0o755)  # mkdtemp makes it private; a SavedModel is read by servers
    module = _HubModule(model)
    tf.saved_model.save(module, temporary, signatures={"serving_default": module.__call__})
    if info is not None:
        with open(os.path.join(temporary, "metadata.json"), "w") as handle:
            json.dump(info, handle, indent=2, sort_keys=True)
            handle.write("\n")
    if os.path.exists(path):
        previous = path + ".previous"
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(path, previous)
        os.replace(temporary, path)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(temporary, path)
    return path


def features(images, path=None):
    """Pooled features of images in [0, 255] from the embedded SavedModel (a check aid)."""

    loaded = tf.saved_model.load(path or embedded_backbone_path())
    return loaded(tf.constant(np.asarray(images, np.float32) / 255.0)).numpy()


SPEC = register_backbone(BackboneSpec(
    name=NAME,
    family="embedded",
    constructor=_construct,
    preprocessing="unit",
    default_size=32,
    min_size=8,
    feature_dim=FILTERS[-1],
    block_pattern=r"^(block\d+)_",
    source="embedded",
    description="Small CNN pretrained by tftransfer on Fashion-MNIST classes 0-4; works offline",
))
