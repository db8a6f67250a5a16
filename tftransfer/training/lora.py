"""LoRA: fine-tune a transformer backbone through low-rank updates of its attention.

Text encoders (`build_text_classifier()`) and KerasHub image transformers
(`build_classifier("kerashub:...")`: ViT, DeiT, DINOv2/v3, Swin) alike.

LoRA (Hu et al., ICLR 2022) freezes every pretrained weight and learns, for
the query and value projections of each attention layer, a rank-`r` update
`A @ B` added to the frozen kernel. Keras' `Dense` and `EinsumDense` have it
built in (`layer.enable_lora(rank)`) and KerasHub backbones apply it to the
same projections. Keras factorises an `EinsumDense` kernel per head, so rank
4 on all-MiniLM-L6-v2's 12 projections is 222,720 weights (1 % of 22.7 M).
Saving folds the update into the kernels (Keras saves `kernel + A @ B`): a
`.keras` file or an export of a LoRA model is a plain model with the adapted
weights, and serves at the same cost as the original. Reloaded, it still has
LoRA enabled (the factors start at zero again); `merge_lora()` gives the
plain model, and `tftransfer.export()` merges before writing, so the
SavedModel and TFLite hold no LoRA factors. `save_lora_weights()` stores only
the adapter (the LoRA factors and the head).
"""

import json
import os
import tempfile
import warnings

import keras
import numpy as np

from tftransfer.backbones.kerashub import LORA_TARGET_NAMES
from tftransfer.training.freezing import (
    _all_sublayers,
    find_backbone,
    has_lora,
    is_lora_variable,
    unfreeze,
)


def lora_parameter_count(model):
    """`(lora, backbone)`: LoRA weights and all backbone weights, in scalars.

    Args:
        model: `keras.Model`. A classifier with LoRA enabled.

    Returns:
        A pair of ints.
    """
    backbone = find_backbone(model)
    lora = sum(int(np.prod(v.shape)) for v in backbone.weights if is_lora_variable(v))
    total = sum(int(np.prod(v.shape)) for v in backbone.weights if not is_lora_variable(v))
    return lora, total


def enable_lora(model, rank=8, *, target_names=None, verbose=True):
    """Adds LoRA to a classifier's transformer backbone; only LoRA then trains.

    Every backbone weight is frozen, and each attention projection named in
    `target_names` gets a trainable rank-`rank` update (initialised at zero,
    so the model computes what it computed before). The LoRA weights are
    trainable when this returns (with the head); `tftransfer.fit()` trains
    the head first on cached features, then, in its fine-tuning phase,
    `unfreeze()` opens the LoRA weights again (of the top `blocks` only, if
    given) and never the pretrained kernels.

    Args:
        model: `keras.Model`. A classifier from `build_text_classifier()`
            over a KerasHub backbone, from `build_classifier("kerashub:...")`
            over a KerasHub image transformer, or any backbone with attention
            projections named as in `target_names`.
        rank: int. The rank of the update. Defaults to `8`.
        target_names: tuple of str or None. Names of the `Dense` /
            `EinsumDense` layers to adapt. Defaults to None: the backbone's
            own query and value projections (`lora_target_names` of a
            `KerasHubImageBackbone`, else KerasHub's names `query_dense`,
            `value_dense`, `query`, `value`).
        verbose: bool. Print the trainable parameter count. Defaults to
            `True`.

    Returns:
        The same model.

    Example:

    >>> import tftransfer
    >>> from tftransfer.training import enable_lora, lora_parameter_count
    >>> model = tftransfer.build_text_classifier("all-MiniLM-L6-v2", 2)
    >>> model = enable_lora(model, rank=4, verbose=False)
    >>> lora_parameter_count(model)
    (222720, 22565376)
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected a positive int; received {rank!r}.")
    backbone = find_backbone(model)
    if target_names is None:
        target_names = tuple(getattr(backbone, "lora_target_names", ()) or LORA_TARGET_NAMES)
    elif isinstance(target_names, str) or not all(isinstance(n, str) for n in target_names):
        raise ValueError(f"target_names: expected None or a tuple of layer names; received "
                         f"{target_names!r}.")
    if has_lora(backbone):
        raise ValueError(f"model: LoRA is enabled on {backbone.name!r} already (rank "
                         "fixed when it was enabled); rebuild the model to change it.")
    targets = [layer for layer in _all_sublayers(backbone)
               if layer.name in target_names and hasattr(layer, "enable_lora")]
    if not targets:
        raise ValueError(
            f"model: the backbone {backbone.name!r} has no layers named {list(target_names)} "
            "to adapt; pass target_names= the names of its attention projections.")
    for layer in targets:
        layer.enable_lora(rank)
    unfreeze(model)
    if verbose:
        lora, total = lora_parameter_count(model)
        print(f"tftransfer: LoRA rank {rank} on {len(targets)} projections: {lora:,} trainable "
              f"backbone weights of {total:,} ({100.0 * lora / total:.2f}%).")
    return model


def merge_lora(model):
    """A plain copy of a LoRA model: each kernel holds `kernel + A @ B`, no LoRA factors.

    The copy computes what the adapted model computes (to float rounding)
    and has the original's architecture, so it exports, converts to TFLite
    and serves as the model did before LoRA. `tftransfer.export()` calls
    this itself.

    Args:
        model: `keras.Model`. A classifier with LoRA enabled.

    Returns:
        A new `keras.Model` (the given one is unchanged).

    Example:

    >>> import tftransfer
    >>> from tftransfer.training import enable_lora, merge_lora, lora_parameter_count
    >>> model = enable_lora(tftransfer.build_text_classifier("all-MiniLM-L6-v2", 2),
    ...                     rank=2, verbose=False)
    >>> plain = merge_lora(model)
    >>> any("lora" in w.path for w in plain.weights)
    False
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model; received {type(model).__name__}.")
    if not has_lora(model):
        raise ValueError(f"model: {model.name!r} has no LoRA layers to merge; enable_lora() "
                         "adds them.")
    config = _without_lora(keras.saving.serialize_keras_object(model))
    config.pop("compile_config", None)  # the copy is for export: no optimizer to restore
    plain = keras.saving.deserialize_keras_object(config)
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # The file also holds the training optimizer's state, which the copy has no use for.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        # Keras saves a LoRA layer's kernel as `kernel + A @ B` (no factors).
        path = os.path.join(scratch, "merged.weights.h5")
        model.save_weights(path)
        plain.load_weights(path)
    return plain


def _without_lora(config):
    if isinstance(config, dict):
        return {key: _without_lora(value) for key, value in config.items()
                if key not in ("lora_rank", "lora_alpha")}
    if isinstance(config, list):
        return [_without_lora(value) for value in config]
    return config


def _adapter_variables(model):
    """The LoRA factors and every weight outside the backbone (the head), by path."""
    backbone = find_backbone(model)
    inside = {id(variable) for variable in backbone.weights}
    chosen = [v for v in model.weights if id(v) not in inside or is_lora_variable(v)]
    return {variable.path: variable for variable in chosen}


def save_lora_weights(model, path):
    """Saves only the adapter of a LoRA model: its LoRA factors and its head.

    A few hundred kilobytes where the backbone is hundreds of megabytes; put
    it back on the same classifier (same preset, same head) with
    `load_lora_weights()`.

    Args:
        model: `keras.Model`. A classifier with LoRA enabled.
        path: str. A `.npz` file to write.

    Returns:
        The path written.

    Example:

    >>> import os, tempfile, tftransfer
    >>> from tftransfer.training import enable_lora, save_lora_weights
    >>> model = enable_lora(tftransfer.build_text_classifier("all-MiniLM-L6-v2", 2),
    ...                     rank=2, verbose=False)
    >>> path = save_lora_weights(model, os.path.join(tempfile.mkdtemp(), "adapter.npz"))
    >>> os.path.getsize(path) < 1_000_000
    True
    """
    if not has_lora(find_backbone(model)):
        raise ValueError(f"model: {model.name!r} has no LoRA layers; call enable_lora() (or "
                         "fit(..., lora_rank=r)) first.")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"path: expected a file name ending in .npz; received {path!r}.")
    variables = _adapter_variables(model)
    ranks = sorted({int(layer.lora_rank) for layer in _all_sublayers(find_backbone(model))
                    if getattr(layer, "lora_enabled", False)})
    targets = sorted({layer.name for layer in _all_sublayers(find_backbone(model))
                      if getattr(layer, "lora_enabled", False)})
    meta = json.dumps({"rank": ranks[0], "target_names": targets, "model": model.name})
    arrays = {f"w{index}": np.asarray(v.numpy()) for index, v in enumerate(variables.values())}
    np.savez(path, __meta__=np.array(meta), __paths__=np.array(list(variables)), **arrays)
    return path


def load_lora_weights(model, path):
    """Loads an adapter written by `save_lora_weights()` into a classifier.

    LoRA is enabled first (at the saved rank, on the saved projections) when
    the model does not have it yet.

    Args:
        model: `keras.Model`. The same classifier the adapter was trained on
            (same backbone preset, same head), with or without LoRA.
        path: str. The `.npz` file.

    Returns:
        The same model, adapted.

    Example:

    >>> import os, tempfile, tftransfer
    >>> from tftransfer.training import enable_lora, load_lora_weights, save_lora_weights
    >>> build = lambda: tftransfer.build_text_classifier("all-MiniLM-L6-v2", 2)
    >>> path = save_lora_weights(enable_lora(build(), rank=2, verbose=False),
    ...                          os.path.join(tempfile.mkdtemp(), "adapter.npz"))
    >>> model = load_lora_weights(build(), path)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"path: no adapter file at {path!r}; write one with "
                         "save_lora_weights(model, path).")
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["__meta__"]))
        paths = [str(p) for p in stored["__paths__"]]
        values = [stored[f"w{index}"] for index in range(len(paths))]
    if not has_lora(find_backbone(model)):
        enable_lora(model, meta["rank"], target_names=tuple(meta["target_names"]),
                    verbose=False)
    variables = _adapter_variables(model)
    missing = [p for p in paths if p not in variables]
    if missing or len(variables) != len(paths):
        raise ValueError(
            f"path: the adapter {path!r} does not fit {model.name!r} (its weights "
            f"{missing[:3] or sorted(set(variables) - set(paths))[:3]} do not match). Load it "
            "into a classifier built the same way (same preset, head and LoRA rank).")
    for name, value in zip(paths, values):
        variable = variables[name]
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"path: the adapter {path!r} does not fit {model.name!r}: "
                             f"{name} has shape {value.shape} there but "
                             f"{tuple(variable.shape)} in the model (another LoRA rank, "
                             "backbone size or head).")
        variable.assign(value)
    return model
