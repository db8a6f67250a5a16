"""Learning-rate schedules."""

import math

import keras
from keras import ops

from tftransfer import checks

SCHEDULES = ("cosine", "constant")


@keras.saving.register_keras_serializable(package="tftransfer")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `learning_rate`, then cosine decay to `final_fraction` of it.

    Args:
        learning_rate: float. The peak learning rate.
        total_steps: int. Steps of the whole phase, warmup included.
        warmup_steps: int. Steps of linear warmup from 0. Defaults to `0`.
        final_fraction: float. Where the decay ends, as a fraction of the
            peak. Defaults to `0.0`.

    Example:

    >>> import tftransfer
    >>> schedule = tftransfer.training.WarmupCosine(1e-3, total_steps=100, warmup_steps=10)
    >>> float(schedule(10)), float(schedule(100))
    (0.001, 0.0)
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, final_fraction=0.0):
        super().__init__()
        self.learning_rate = checks.check_number(learning_rate, "learning_rate", low=0.0,
                                                 low_open=True)
        self.total_steps = checks.check_int(total_steps, "total_steps", minimum=1)
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - 1))
        self.final_fraction = float(final_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = ops.cast(self.learning_rate, "float32")
        warmup = ops.cast(max(self.warmup_steps, 1), "float32")
        decay_steps = ops.cast(max(self.total_steps - self.warmup_steps, 1), "float32")
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = peak * (self.final_fraction + (1.0 - self.final_fraction) * cosine)
        warming = peak * step / warmup
        return ops.where(step < self.warmup_steps, warming, decayed)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "final_fraction": self.final_fraction}


def make_schedule(schedule, learning_rate, *, steps_per_epoch, epochs, warmup_fraction=0.05):
    """A schedule object (or the constant float) for one phase."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}; received {schedule!r}.")
    if schedule == "constant" or not steps_per_epoch:
        return float(learning_rate)
    total = int(steps_per_epoch * epochs)
    return WarmupCosine(learning_rate, total_steps=total,
                        warmup_steps=int(round(total * warmup_fraction)))
