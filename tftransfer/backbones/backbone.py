"""`Backbone`: a Functional model that runs in inference mode while frozen.

Keras 3.15 passes the outer `training` value down to every nested layer of a
Functional model, overriding a `training=False` written at the call site
(`keras.src.models.functional.operation_fn`). The keras.io recipe,
`base_model(x, training=False)`, therefore does not keep BatchNorm and
Dropout in inference mode during `fit`. `Backbone` does: while
`inference_mode` is True it calls its layers with `training=False`, whatever
its caller says. `tftransfer.unfreeze(..., freeze_batch_norm=False)` turns
that off for backbones trained from scratch; `tftransfer.fit()` does so itself
for a backbone marked `pretrained=False` (what `build_classifier(...,
weights=None)` builds).
"""

import keras
from keras.src.models.functional import Functional, functional_from_config


@keras.saving.register_keras_serializable(package="tftransfer")
class Backbone(keras.Model):
    """A Functional backbone that keeps BatchNorm and Dropout in inference mode.

    It is a plain Functional `keras.Model` (same layers, same weights, same
    `summary()`), with one difference: while `inference_mode` is True, its
    layers always run as in inference, also inside `fit`.

    Args:
        inputs: The Functional inputs, as for `keras.Model`.
        outputs: The Functional outputs, as for `keras.Model`.
        inference_mode: bool. Run BatchNorm and Dropout in inference mode
            always. Defaults to `True`.
        pretrained: bool. Whether the weights were pretrained. `False` (a
            backbone at random initialization) makes `tftransfer.fit()` train
            its BatchNorm layers, statistics included, when it fine-tunes.
            Defaults to `True`.
        **kwargs: Other `keras.Model` arguments, such as `name`.

    Example:

    >>> import keras, tftransfer
    >>> base = keras.applications.MobileNetV2(
    ...     include_top=False, weights=None, input_shape=(32, 32, 3))
    >>> backbone = tftransfer.backbones.Backbone.from_model(base)
    >>> backbone.inference_mode, len(backbone.layers) == len(base.layers)
    (True, True)
    """

    def __init__(self, *args, inference_mode=True, pretrained=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.inference_mode = bool(inference_mode)
        self.pretrained = bool(pretrained)

    @classmethod
    def from_model(cls, model, *, inference_mode=True, pretrained=True):
        """Wraps a Functional model's graph (sharing its layers and weights)."""
        if not isinstance(model, Functional):
            raise TypeError(
                f"Backbone.from_model() expects a Functional keras.Model; received "
                f"{type(model).__name__}."
            )
        return cls(inputs=model.input, outputs=model.output, name=model.name,
                   inference_mode=inference_mode, pretrained=pretrained)

    def call(self, inputs, training=None, mask=None, **kwargs):
        if self.inference_mode:
            training = False
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["inference_mode"] = self.inference_mode
        if not self.pretrained:  # pretrained backbones keep the config they had
            config["pretrained"] = False
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inference_mode = config.pop("inference_mode", True)
        pretrained = config.pop("pretrained", True)
        model = functional_from_config(cls, config, custom_objects=custom_objects)
        model.inference_mode = bool(inference_mode)
        model.pretrained = bool(pretrained)
        return model


def as_backbone(model):
    """Wraps a Functional model in `Backbone`; other layers are returned as they are."""
    if not isinstance(model, keras.layers.Layer):
        raise TypeError(f"model: expected a Keras model or layer; received "
                        f"{type(model).__name__}.")
    if isinstance(model, Backbone) or not isinstance(model, Functional):
        return model
    return Backbone.from_model(model)
