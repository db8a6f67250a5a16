"""Placing weights made elsewhere (PyTorch naming and layouts) into Keras layers.

A mapping is data: for each Keras layer name, the prefix of its tensors in
the checkpoint (`{"stem_conv": "_conv_stem", ...}`). The layouts differ by
layer type and are converted here, in one place:

| Keras layer | Keras weight | PyTorch tensor | conversion |
|---|---|---|---|
| Conv2D | kernel | `weight` (out, in, kh, kw) | to (kh, kw, in, out) |
| DepthwiseConv2D | depthwise kernel | `weight` (channels, 1, kh, kw) | to (kh, kw, channels, 1) |
| Dense | kernel | `weight` (out, in) | transposed |
| BatchNormalization | gamma, beta, moving mean, moving variance | `weight`, `bias`, `running_mean`, `running_var` | none |
| all | bias | `bias` | none |
"""

import keras
import numpy as np


def _conv_kernel(value):
    return np.transpose(value, (2, 3, 1, 0))


def _depthwise_kernel(value):
    return np.transpose(value, (2, 3, 0, 1))


def _layer_tensors(layer, prefix):
    """The (keras variable, checkpoint key, conversion) triples of one layer."""
    identity = np.asarray
    if isinstance(layer, keras.layers.BatchNormalization):
        pairs = [(layer.gamma, "weight", identity), (layer.beta, "bias", identity),
                 (layer.moving_mean, "running_mean", identity),
                 (layer.moving_variance, "running_var", identity)]
        return [(v, f"{prefix}.{k}", f) for v, k, f in pairs if v is not None]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kernel = (layer.kernel, "weight", _depthwise_kernel)
    elif isinstance(layer, keras.layers.Conv2D):
        kernel = (layer.kernel, "weight", _conv_kernel)
    elif isinstance(layer, keras.layers.Dense):
        kernel = (layer.kernel, "weight", np.transpose)
    else:
        raise TypeError(f"load_pytorch_weights: no conversion for {type(layer).__name__} "
                        f"layer {layer.name!r}; map Conv2D, DepthwiseConv2D, Dense or "
                        "BatchNormalization layers.")
    triples = [(kernel[0], f"{prefix}.{kernel[1]}", kernel[2])]
    if getattr(layer, "use_bias", False):
        triples.append((layer.bias, f"{prefix}.bias", identity))
    return triples


def load_pytorch_weights(model, state_dict, layer_prefixes, *, allow_unused=()):
    """Assigns a PyTorch state dict to a Keras model's layers, converting layouts.

    Every mapped layer must find all its tensors with the right shapes, and
    every tensor of the state dict must be used (except keys starting with
    a prefix in `allow_unused`, and PyTorch's `num_batches_tracked`
    counters); otherwise nothing is assigned and a `ValueError` lists what
    did not fit.

    Args:
        model: `keras.Model`. The model whose layers receive the weights.
        state_dict: dict from str to numpy array, e.g. from
            `load_pytorch_checkpoint()`.
        layer_prefixes: dict from Keras layer name to the prefix of that
            layer's tensors in `state_dict` (`"conv1"` for `conv1.weight`).
        allow_unused: tuple of str. Prefixes of tensors that may stay unused
            (a classifier the model does not have, say). Defaults to `()`.

    Returns:
        The number of arrays assigned.

    Example:

    >>> import keras, numpy as np, tftransfer
    >>> dense = keras.layers.Dense(2, name="fc")
    >>> model = keras.Sequential([keras.Input((3,)), dense])
    >>> state = {"head.weight": np.ones((2, 3), "float32"), "head.bias": np.zeros(2, "float32")}
    >>> tftransfer.checkpoints.load_pytorch_weights(model, state, {"fc": "head"})
    2
    """
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict: expected a dict of arrays; received "
                        f"{type(state_dict).__name__}.")
    assignments, problems, used = [], [], set()
    for layer_name, prefix in layer_prefixes.items():
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            problems.append(f"the model has no layer {layer_name!r}")
            continue
        for variable, key, convert in _layer_tensors(layer, prefix):
            if key not in state_dict:
                problems.append(f"{key!r} (for {variable.path}) is not in the checkpoint")
                continue
            value = convert(np.asarray(state_dict[key]))
            if tuple(value.shape) != tuple(variable.shape):
                problems.append(f"{key!r} has shape {tuple(value.shape)} after conversion, "
                                f"{variable.path} needs {tuple(variable.shape)}")
                continue
            used.add(key)
            assignments.append((variable, value))
    unused = sorted(k for k in state_dict if k not in used
                    and not k.endswith("num_batches_tracked")
                    and not any(k.startswith(p) for p in allow_unused))
    if unused:
        problems.append(f"{len(unused)} tensors of the checkpoint fit no layer: "
                        f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    if problems:
        raise ValueError("The checkpoint does not fit the model: " + "; ".join(problems[:8])
                         + ("; ..." if len(problems) > 8 else "")
                         + ". Check that it was made for this architecture and variant.")
    for variable, value in assignments:
        variable.assign(value.astype(variable.dtype))
    return len(assignments)
