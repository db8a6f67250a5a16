"""Training: freezing, the two phases, schedules, precision, the feature cache."""

from tftransfer.training.freezing import backbone_blocks, find_backbone, freeze, unfreeze
from tftransfer.training.lr_finder import LearningRateFinderResult, find_learning_rate
from tftransfer.training.precision import apply_policy, resolve_mixed_precision
from tftransfer.training.schedules import WarmupCosine
from tftransfer.training.trainer import Trainer, TrainingResult, fit

__all__ = [
    "LearningRateFinderResult",
    "Trainer",
    "TrainingResult",
    "WarmupCosine",
    "apply_policy",
    "backbone_blocks",
    "find_backbone",
    "find_learning_rate",
    "fit",
    "freeze",
    "resolve_mixed_precision",
    "unfreeze",
]
