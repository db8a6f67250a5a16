"""Discriminative (layer-wise) learning rates, which Keras lacks (keras-team/keras#21741).

Keras 3 optimizers apply one learning rate to every variable. Scaling the
gradients is no substitute: Adam's step does not depend on the gradient's
scale. `layerwise_optimizer()` returns an optimizer of the same class whose
update step multiplies the learning rate per variable.
"""

import functools

import keras

from tftransfer.training.freezing import block_layer_objects, find_backbone


@functools.lru_cache(maxsize=None)
def _layerwise_class(base):
    class LayerwiseLearningRates(base):
        """`base` with a learning-rate multiplier per variable."""

        def update_step(self, gradient, variable, learning_rate):
            factor = getattr(self, "_tftransfer_multipliers", {}).get(self._var_key(variable))
            if factor is not None and factor != 1.0:
                learning_rate = learning_rate * factor
            return super().update_step(gradient, variable, learning_rate)

    # Saved models record the optimizer as its base class (the multipliers are a
    # training-time setting), so a .keras file reloads with a stock optimizer.
    LayerwiseLearningRates.__name__ = base.__name__
    LayerwiseLearningRates.__qualname__ = base.__qualname__
    LayerwiseLearningRates.__module__ = base.__module__
    return LayerwiseLearningRates


def layerwise_optimizer(optimizer, multipliers):
    """An optimizer like `optimizer` that scales the learning rate per variable.

    Args:
        optimizer: a Keras optimizer instance (its config is copied).
        multipliers: list of `(variable, factor)` pairs; other variables get 1.

    Returns:
        A new optimizer of a subclass of `type(optimizer)`.
    """
    cls = _layerwise_class(type(optimizer))
    new = cls.from_config(optimizer.get_config())
    new._tftransfer_multipliers = {new._var_key(variable): float(factor)
                                   for variable, factor in multipliers}
    return new


def discriminative_multipliers(model, decay):
    """`(variable, decay ** depth)` for the backbone's trainable variables.

    The top named block has depth 1 (the head has depth 0 and keeps the full
    learning rate), the block below depth 2, and so on; a TF-Hub backbone is
    one block.
    """
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay <= 1:
        raise ValueError(f"discriminative_lr: expected a decay factor in (0, 1]; received "
                         f"{decay!r}.")
    backbone = find_backbone(model)
    if not isinstance(backbone, keras.Model):
        return [(variable, decay) for variable in backbone.trainable_weights]
    pairs = []
    named = block_layer_objects(model)
    for depth, (_, layers) in enumerate(reversed(named), start=1):
        for layer in layers:
            for variable in layer.trainable_weights:
                pairs.append((variable, decay ** depth))
    return pairs
