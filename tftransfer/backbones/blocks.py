"""Block boundaries: which named block each layer of a backbone belongs to.

A block is the repeated unit that an architecture's own layer names mark: a
residual unit of ResNet (`conv5_block3`), an MBConv block of EfficientNet
(`block7a`), an inverted residual of MobileNetV2 (`block_16`), an Inception
module (`mixed10`), a ConvNeXt block (`stage_3_block_2`). "The top 2 blocks"
therefore means the last two such units in every family. Layers that carry no
block name (activations, adds, the final convolution) follow the nearest
named layer, so nothing is left out.
"""

import re

STEM = "stem"


def block_key(layer_name, pattern):
    match = re.search(pattern, layer_name)
    if match is None:
        return None
    groups = [group for group in match.groups() if group is not None]
    return "".join(groups) if groups else match.group(0)


def assign_blocks(layer_names, pattern, boundary="start"):
    """Assigns a block name to every layer name.

    Args:
        layer_names: list of str. The backbone's layers, in the order of
            `model.layers` (topological).
        pattern: str. The regular expression whose captured groups name a
            block.
        boundary: str. `"start"`: a matched layer opens or belongs to its
            block and unmatched layers follow the one before them (layers
            before the first match form the `"stem"` block). `"end"`: a
            matched layer closes its block and unmatched layers belong to the
            next matched one (layers after the last match join the last block).

    Returns:
        A pair `(block_names, layer_blocks)`: the distinct block names from
        bottom to top, and the block name of each layer.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern: expected a regular expression string; received "
                        f"{type(pattern).__name__}.")
    if isinstance(layer_names, str) or not all(isinstance(n, str) for n in layer_names):
        raise TypeError("layer_names: expected a list of layer names (str).")
    if boundary not in ("start", "end"):
        raise ValueError(f"boundary: expected 'start' or 'end'; received {boundary!r}.")
    keys = [block_key(name, pattern) for name in layer_names]
    layer_blocks = [None] * len(keys)
    if boundary == "start":
        current = STEM
        for index, key in enumerate(keys):
            if key is not None:
                current = key
            layer_blocks[index] = current
    elif boundary == "end":
        current = None
        for index in range(len(keys) - 1, -1, -1):
            if keys[index] is not None:
                current = keys[index]
            layer_blocks[index] = current
        last = next((key for key in reversed(keys) if key is not None), STEM)
        layer_blocks = [last if block is None else block for block in layer_blocks]
    else:
        raise ValueError(f"boundary must be 'start' or 'end'; received {boundary!r}.")
    block_names = []
    seen = set()
    for block in layer_blocks:
        if block not in seen:
            seen.add(block)
            block_names.append(block)
    return block_names, layer_blocks
