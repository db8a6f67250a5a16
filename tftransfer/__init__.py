"""tftransfer: transfer learning on Keras 3 and TensorFlow.

Example:

>>> import numpy as np, tftransfer
>>> model = tftransfer.build_classifier("MobileNetV2", num_classes=3,
...                                     image_size=96, weights=None)
>>> model = tftransfer.unfreeze(model, blocks=2)
>>> model(np.zeros((1, 96, 96, 3))).shape
TensorShape([1, 3])
"""

# The `tftransfer` command hides TensorFlow's start-up lines; it must act before the
# first `import tensorflow` below (tftransfer/_startup.py says how and why).
from tftransfer._startup import quiet_start as _quiet_start

_quiet_start()

from tftransfer import backbones, checkpoints, data, datasets, evaluation, heads, layers, training

# `tftransfer.export` is the export function; the export package's helpers are
# re-exported here by name.
from tftransfer.export import ExportResult, export, load_model, rest_request_body, tflite_predict
from tftransfer.evaluation import EvaluationResult, evaluate, explain
from tftransfer.backbones import BackboneInfo, BackboneSpec, backbone_info, list_backbones
from tftransfer.models import build_classifier, build_text_classifier
from tftransfer.training import (
    Distiller,
    Trainer,
    TrainingResult,
    backbone_blocks,
    distill,
    find_backbone,
    find_learning_rate,
    fit,
    freeze,
    unfreeze,
)

__version__ = "0.1.0"

_LAZY = {"tune": "tftransfer.tuning", "TransferHyperModel": "tftransfer.tuning",
         "TuningResult": "tftransfer.tuning", "rank_backbones": "tftransfer.selection"}


def __getattr__(name):
    # keras-tuner (and tensorboard under it) load only when a search is asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tftransfer' has no attribute {name!r}")

__all__ = [
    "BackboneInfo",
    "Distiller",
    "Trainer",
    "TrainingResult",
    "TransferHyperModel",
    "TuningResult",
    "BackboneSpec",
    "EvaluationResult",
    "ExportResult",
    "backbone_blocks",
    "backbone_info",
    "backbones",
    "build_classifier",
    "build_text_classifier",
    "checkpoints",
    "data",
    "datasets",
    "distill",
    "evaluate",
    "evaluation",
    "explain",
    "export",
    "find_backbone",
    "find_learning_rate",
    "fit",
    "freeze",
    "heads",
    "layers",
    "list_backbones",
    "load_model",
    "rank_backbones",
    "rest_request_body",
    "tflite_predict",
    "training",
    "tune",
    "unfreeze",
    "__version__",
]
