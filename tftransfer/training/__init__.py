"""Training: freezing, phases, schedules, precision and callbacks."""

from tftransfer.training.freezing import backbone_blocks, find_backbone, freeze, unfreeze

__all__ = ["backbone_blocks", "find_backbone", "freeze", "unfreeze"]
