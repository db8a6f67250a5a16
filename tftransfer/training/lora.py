"""LoRA: fine-tune a transformer backbone through low-rank updates of its attention.

LoRA (Hu et al., ICLR 2022) freezes every pretrained weight and learns, for
the query and value projections of each attention layer, a rank-`r` update
`A @ B` added to the frozen kernel. Keras' `Dense` and `EinsumDense` have it
built in (`layer.enable_lora(rank)`) and KerasHub backbones apply it to the
same projections. Keras factorises an `EinsumDense` kernel per head, so rank
4 on all-MiniLM-L6-v2's 12 projections is 222,720 weights (1 % of 22.7 M).
Saving folds the update into the kernels (Keras saves `kernel + A @ B`): a
`.keras` file or an export of a LoRA model is a plain model with the adapted
weights, and serves at the same cost as the original.
"""

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


def enable_lora(model, rank=8, *, target_names=LORA_TARGET_NAMES, verbose=True):
    """Adds LoRA to a text classifier's transformer backbone; only LoRA then trains.

    Every backbone weight is frozen, and each attention projection named in
    `target_names` gets a trainable rank-`rank` update (initialised at zero,
    so the model computes what it computed before). The LoRA weights are
    trainable when this returns (with the head); `tftransfer.fit()` trains
    the head first on cached features, then, in its fine-tuning phase,
    `unfreeze()` opens the LoRA weights again (of the top `blocks` only, if
    given) and never the pretrained kernels.

    Args:
        model: `keras.Model`. A classifier from `build_text_classifier()`
            over a KerasHub backbone (or any backbone with attention
            projections named as in `target_names`).
        rank: int. The rank of the update. Defaults to `8`.
        target_names: tuple of str. Names of the `Dense` / `EinsumDense`
            layers to adapt. Defaults to KerasHub's query and value
            projections.
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
