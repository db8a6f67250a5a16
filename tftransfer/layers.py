"""Custom Keras layers of tftransfer, each registered for `.keras` files.

Every layer here keeps its `__init__` arguments as attributes, returns them
from `get_config()`, and loads with `safe_mode=True` after `import tftransfer`.
"""

import keras
from keras import ops

from tftransfer.backbones.registry import PREPROCESSING_MODES

_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="tftransfer")
class ImagePreprocessing(keras.layers.Layer):
    """Turns raw RGB pixels in [0, 255] into what a backbone's weights expect.

    The same arithmetic as `keras.applications.<family>.preprocess_input`,
    as a layer, so that a saved or exported model takes raw images.

    Args:
        mode: str. `"caffe"`: RGB to BGR, then the ImageNet mean is subtracted
            (VGG, ResNet v1). `"tf"`: scaled to [-1, 1] (MobileNet v1/v2,
            Inception, Xception, ResNet v2, NASNet). `"torch"`: scaled to
            [0, 1], then normalized with the ImageNet mean and standard
            deviation (DenseNet). `"unit"`: scaled to [0, 1] (TF-Hub image
            modules). `"none"`: passed through (EfficientNet, ConvNeXt and
            MobileNetV3 preprocess inside themselves). Defaults to `"none"`.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Example:

    >>> import numpy as np, tftransfer
    >>> layer = tftransfer.layers.ImagePreprocessing("tf")
    >>> layer(np.array([[[[0.0, 127.5, 255.0]]]])).numpy().round(3).tolist()
    [[[[-1.0, 0.0, 1.0]]]]
    """

    def __init__(self, mode="none", **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"mode: expected one of {PREPROCESSING_MODES}; received {mode!r}."
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
            return ops.flip(x, axis=-1) - mean
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
