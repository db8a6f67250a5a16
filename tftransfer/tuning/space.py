"""The search space: what `TransferHyperModel` searches and where the search starts.

A spec is compact: `(low, high)` ints or floats (`(low, high, "log")` for
log sampling), a list (a choice) or a single value (fixed). The first trial
is `fit()`'s defaults, so the search starts from the fixed recipe.
"""

from tftransfer.training.trainer import (FINE_TUNE_LEARNING_RATE, HEAD_LEARNING_RATE,
                                         TEXT_FINE_TUNE_LEARNING_RATE)

SEARCHABLE = ("unfreeze_blocks", "fine_tune_learning_rate", "head_learning_rate", "dropout_rate",
              "layer_decay")


def _define(hp, name, spec, start=None):
    """Declares one hyperparameter from a compact spec; `start` is its default
    (the first trial's value) when the spec holds it."""
    if isinstance(spec, (list, tuple)) and len(spec) in (2, 3) and not isinstance(spec, list):
        low, high = spec[0], spec[1]
        sampling = spec[2] if len(spec) == 3 else "linear"
        inside = start is not None and low <= start <= high
        if isinstance(low, int) and isinstance(high, int) and not isinstance(low, bool):
            return hp.Int(name, low, high, default=int(start) if inside else None)
        return hp.Float(name, float(low), float(high), sampling=sampling,
                        default=float(start) if inside else None)
    if isinstance(spec, list):
        return hp.Choice(name, spec, default=start if start in spec else None)
    return hp.Fixed(name, spec)


def _search_space(given, num_blocks, text):
    """The defaults updated by `given` (name -> spec), checked against the backbone."""
    if not isinstance(given, dict):
        raise TypeError("search_space: expected a dict of name -> spec; received "
                        f"{type(given).__name__}.")
    unknown = sorted(set(given) - set(SEARCHABLE))
    if unknown:
        raise ValueError(f"search_space: unknown hyperparameter(s) {unknown}; the "
                         f"searchable ones are {list(SEARCHABLE)}.")
    space = {
        "unfreeze_blocks": (0, num_blocks),
        # Transformers fine-tune around 5e-5 (BERT's 2e-5..5e-5), convolutions ~1e-3.
        "fine_tune_learning_rate": (1e-5, 3e-4, "log") if text else (3e-5, 3e-3, "log"),
        "head_learning_rate": [1e-3, 3e-3],
        "dropout_rate": [0.0, 0.2, 0.5],
        "layer_decay": [1.0, 0.8],
    }
    space.update(given)
    blocks = space["unfreeze_blocks"]
    highest = max(blocks) if isinstance(blocks, (list, tuple)) else blocks
    if highest > num_blocks:
        raise ValueError(f"search_space: unfreeze_blocks up to {highest}, but the "
                         f"backbone has {num_blocks} blocks.")
    return space


def _start_values(num_blocks, text):
    """`fit`'s defaults in the space's terms: the first trial's values."""
    return {"unfreeze_blocks": num_blocks,
            "fine_tune_learning_rate": (TEXT_FINE_TUNE_LEARNING_RATE if text
                                        else FINE_TUNE_LEARNING_RATE),
            "head_learning_rate": HEAD_LEARNING_RATE, "dropout_rate": 0.2,
            "layer_decay": 1.0}
