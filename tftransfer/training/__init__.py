"""Training: freezing, the two phases, schedules, precision, the feature cache,
distillation, L2-SP anchoring and LoRA."""

from tftransfer.training.anchoring import L2SP, anchor_penalty, anchor_to_pretrained
from tftransfer.training.distillation import Distiller, distill
from tftransfer.training.freezing import backbone_blocks, find_backbone, freeze, unfreeze
from tftransfer.training.lora import (
    enable_lora,
    load_lora_weights,
    lora_parameter_count,
    merge_lora,
    save_lora_weights,
)
from tftransfer.training.lr_finder import LearningRateFinderResult, find_learning_rate
from tftransfer.training.precision import apply_policy, resolve_mixed_precision
from tftransfer.training.schedules import WarmupCosine
from tftransfer.training.trainer import Trainer, TrainingResult, fit

__all__ = [
    "Distiller",
    "L2SP",
    "LearningRateFinderResult",
    "Trainer",
    "TrainingResult",
    "WarmupCosine",
    "anchor_penalty",
    "anchor_to_pretrained",
    "apply_policy",
    "backbone_blocks",
    "distill",
    "enable_lora",
    "find_backbone",
    "find_learning_rate",
    "fit",
    "freeze",
    "load_lora_weights",
    "lora_parameter_count",
    "merge_lora",
    "resolve_mixed_precision",
    "save_lora_weights",
    "unfreeze",
]
