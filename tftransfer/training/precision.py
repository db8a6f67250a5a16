"""Mixed precision: when it pays, and how to apply it to a built model."""

import keras
import tensorflow as tf

MODES = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


def resolve_mixed_precision(mode="auto"):
    """The dtype policy name `mode` stands for on this machine.

    `"auto"`: `"mixed_bfloat16"` on GPUs of compute capability 8.0 and newer
    (Ampere, Hopper), `"mixed_float16"` on 7.x (Volta, Turing), `"float32"`
    elsewhere: on CPUs mixed precision is often many times slower
    (tensorflow/tensorflow#45441).

    Example:

    >>> import tftransfer
    >>> tftransfer.training.resolve_mixed_precision("float32")
    'float32'
    """
    if mode is None or mode is False:
        return "float32"
    if mode is True:
        mode = "auto"
    if mode not in MODES:
        raise ValueError(f"mixed_precision (mode): expected one of {MODES}; received "
                         f"{mode!r}.")
    if mode != "auto":
        return mode
    best = None
    for device in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(device).get("compute_capability")
        if capability and capability >= (8, 0):
            best = best or "mixed_bfloat16"
        elif capability and capability >= (7, 0):
            best = "mixed_float16"
    return best or "float32"


def apply_policy(model, policy):
    """Sets `policy` on every layer of `model` but its float32 output layers.

    Variables stay float32 under every mixed policy, so this works on a built
    model: only the computation dtype changes. The `predictions` layer (and
    any layer built with an explicit float32 dtype for the output) keeps
    computing in float32.
    """
    if policy not in ("float32", "mixed_float16", "mixed_bfloat16", "float16", "bfloat16") \
            and not isinstance(policy, keras.DTypePolicy):
        raise ValueError("policy: expected 'float32', 'mixed_float16' or 'mixed_bfloat16'; "
                         f"received {policy!r}.")
    policy = keras.DTypePolicy(policy)
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.name == "predictions" or isinstance(layer, keras.layers.InputLayer):
            continue
        layer.dtype_policy = policy
    return model


def model_policy(model):
    """The compute dtype policy name of the model's backbone side."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.weights and layer.name != "predictions":
            return layer.dtype_policy.name
    return model.dtype_policy.name
