"""Training budgets that fit the data: how long each phase runs by default.

Counting a default in epochs gives a small dataset almost no updates (100
images in batches of 32 are 4 optimizer steps an epoch: 5 head epochs are 20
updates) and a large one needlessly many passes. `fit()`'s defaults are
counted in optimizer steps instead and turned into epochs here:

- the head phase gets at least `HEAD_STEPS` updates (LP-FT, Kumar et al.,
  ICLR 2022: fit the head to convergence on frozen features before
  fine-tuning), and at least `MIN_HEAD_EPOCHS` epochs;
- fine-tuning gets at least `FINE_TUNE_STEPS` updates, and at least
  `MIN_FINE_TUNE_EPOCHS` epochs;
- neither phase runs more than `MAX_EPOCHS` epochs.

So 100 images (4 steps an epoch) get 75 head epochs and 25 fine-tuning
epochs, 1,000 images (32 steps) 10 and 4, and a million images 2 and 2.
The head phase is cheap however long it is when its features are cached
(one pass of the backbone, then a linear layer). The constants come from
`bench/recipes.py`; the README says why.
"""

import dataclasses
import math

HEAD_STEPS = 300
FINE_TUNE_STEPS = 100
MIN_HEAD_EPOCHS = 2
MIN_FINE_TUNE_EPOCHS = 2
MAX_EPOCHS = 100
# When the number of steps an epoch is unknown (a dataset of unknown cardinality).
UNKNOWN_SIZE_EPOCHS = (5, 5)


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long each phase runs, and why.

    Attributes:
        head_epochs: int.
        fine_tune_epochs: int.
        steps_per_epoch: int or None. Optimizer steps an epoch (None: unknown).
        rule: str. How the numbers were chosen, for `TrainingResult.budget`.
    """

    head_epochs: int
    fine_tune_epochs: int
    steps_per_epoch: object
    rule: str

    def as_dict(self):
        return dataclasses.asdict(self)


def _epochs_for(steps, steps_per_epoch, minimum):
    return int(min(MAX_EPOCHS, max(minimum, math.ceil(steps / steps_per_epoch))))


def default_budget(steps_per_epoch, *, head_epochs="auto", fine_tune_epochs="auto"):
    """The epochs of each phase: the ones given, or the data-sized default.

    Args:
        steps_per_epoch: int or None. Optimizer steps an epoch.
        head_epochs: int or `"auto"`. Defaults to `"auto"`.
        fine_tune_epochs: int or `"auto"`. Defaults to `"auto"`.

    Returns:
        A `Budget`.

    Example:

    >>> from tftransfer.training.budgets import default_budget
    >>> budget = default_budget(4)  # 100 images in batches of 32
    >>> budget.head_epochs, budget.fine_tune_epochs
    (75, 25)
    >>> default_budget(31250).head_epochs  # a million images
    2
    """
    known = steps_per_epoch is not None and steps_per_epoch > 0
    parts = []
    if head_epochs == "auto":
        head_epochs = (_epochs_for(HEAD_STEPS, steps_per_epoch, MIN_HEAD_EPOCHS) if known
                       else UNKNOWN_SIZE_EPOCHS[0])
        parts.append(f"head: >= {HEAD_STEPS} steps and >= {MIN_HEAD_EPOCHS} epochs"
                     if known else "head: 5 epochs (steps an epoch unknown)")
    else:
        parts.append("head: as given")
    if fine_tune_epochs == "auto":
        fine_tune_epochs = (_epochs_for(FINE_TUNE_STEPS, steps_per_epoch, MIN_FINE_TUNE_EPOCHS)
                            if known else UNKNOWN_SIZE_EPOCHS[1])
        parts.append(f"fine-tuning: >= {FINE_TUNE_STEPS} steps and >= {MIN_FINE_TUNE_EPOCHS} "
                     "epochs" if known else "fine-tuning: 5 epochs (steps an epoch unknown)")
    else:
        parts.append("fine-tuning: as given")
    if known and "as given" not in " ".join(parts):
        parts.append(f"at most {MAX_EPOCHS} epochs a phase; {steps_per_epoch} steps an epoch")
    elif known:
        parts.append(f"{steps_per_epoch} steps an epoch")
    return Budget(head_epochs=int(head_epochs), fine_tune_epochs=int(fine_tune_epochs),
                  steps_per_epoch=steps_per_epoch if known else None, rule="; ".join(parts))
