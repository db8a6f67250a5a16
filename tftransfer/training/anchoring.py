"""L2-SP: fine-tuning that keeps the backbone close to its pretrained weights.

Li, Grandvalet and Davoine, "Explicit Inductive Bias for Transfer Learning
with Convolutional Networks" (ICML 2018): minimize the target loss plus
`lambda * ||w - w_pretrained||^2` over the backbone's weights (instead of
plain weight decay, which pulls them towards zero and away from what was
learned), and plain `lambda * ||w||^2` over the new head's kernels. Both are
Keras weight regularizers, so the penalty is part of `model.losses`, enters
the loss Keras minimizes (and so the logged `loss`), and runs inside each
replica under `tf.distribute`.
"""

import keras
import numpy as np
from keras import ops

from tftransfer import checks
from tftransfer.training.freezing import find_backbone

HEAD_PREFIXES = ("head_dense_", "predictions")


@keras.saving.register_keras_serializable(package="tftransfer")
class L2SP(keras.regularizers.Regularizer):
    """`strength * sum((w - anchor)^2)`: a pull towards the starting weights.

    Args:
        anchor: array. The weight's value to stay close to.
        strength: float. The lambda of L2-SP.

    Example:

    >>> import numpy as np
    >>> from tftransfer.training.anchoring import L2SP
    >>> float(L2SP(np.zeros(3), 0.5)(np.array([1.0, 2.0, 0.0])))
    2.5
    """

    def __init__(self, anchor, strength):
        self.anchor = np.asarray(anchor, dtype="float32")
        self.strength = checks.check_number(strength, "strength", low=0.0)

    def __call__(self, x):
        difference = ops.cast(x, "float32") - self.anchor
        return self.strength * ops.sum(ops.square(difference))

    def get_config(self):
        return {"anchor": self.anchor.tolist(), "strength": self.strength}


def _head_kernels(model):
    return [layer.kernel for layer in model.layers
            if layer.name.startswith(HEAD_PREFIXES) and hasattr(layer, "kernel")]


def anchor_to_pretrained(model, strength):
    """Puts L2-SP on the backbone's trainable weights and plain L2 on the head's kernels.

    Call it after `unfreeze()` and before compiling for fine-tuning: the
    anchor is each backbone weight's current value, so the penalty is zero
    at that moment. `release_anchor()` takes the regularizers off again.

    Args:
        model: `keras.Model` from `build_classifier()`.
        strength: float. Lambda, at least 0.

    Returns:
        The model.

    Example:

    >>> import numpy as np, tftransfer
    >>> from tftransfer.training.anchoring import anchor_to_pretrained, anchor_penalty
    >>> model = tftransfer.build_classifier("FashionCNN", 2, weights=None)
    >>> model = anchor_to_pretrained(tftransfer.unfreeze(model, blocks=1), 0.01)
    >>> anchor_penalty(model)["l2_sp"]
    0.0
    """
    checks.check_number(strength, "strength", low=0.0)
    backbone = find_backbone(model)
    for weight in backbone.trainable_weights:
        weight.regularizer = L2SP(weight.numpy(), strength)
    for kernel in _head_kernels(model):
        kernel.regularizer = keras.regularizers.L2(strength)
    model._tftransfer_anchor = float(strength)
    return model


def release_anchor(model):
    """Takes the regularizers of `anchor_to_pretrained()` off again."""
    for weight in model.weights:
        if isinstance(weight.regularizer, L2SP) or (
                getattr(model, "_tftransfer_anchor", None) is not None
                and any(weight is kernel for kernel in _head_kernels(model))):
            weight.regularizer = None
    model._tftransfer_anchor = None
    return model


def anchor_penalty(model):
    """The current penalty: `{"l2_sp": backbone part, "head_l2": head part}` as floats."""
    backbone_ids = {id(w) for w in find_backbone(model).weights}
    parts = {"l2_sp": 0.0, "head_l2": 0.0}
    for weight in model.weights:
        if weight.regularizer is None:
            continue
        key = "l2_sp" if id(weight) in backbone_ids else "head_l2"
        parts[key] += float(weight.regularizer(weight))
    return parts


class AnchorPenaltyLogger(keras.callbacks.Callback):
    """Adds the L2-SP and head L2 penalties to each epoch's logs."""

    def __init__(self, model):
        super().__init__()
        self.target = model

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            parts = anchor_penalty(self.target)
            logs["l2_sp_penalty"] = parts["l2_sp"]
            logs["head_l2_penalty"] = parts["head_l2"]
