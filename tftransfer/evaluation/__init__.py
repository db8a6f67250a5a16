"""Evaluation: figures (`evaluate`), PNG plots and a markdown model card."""

from tftransfer.evaluation.metrics import EvaluationResult, evaluate
from tftransfer.evaluation.plots import (
    plot_confusion_matrix,
    plot_history,
    plot_learning_rate_finder,
    plot_reliability,
    plot_top_losses,
)
from tftransfer.evaluation.report import serving_command, write_report

__all__ = [
    "EvaluationResult",
    "evaluate",
    "plot_confusion_matrix",
    "plot_history",
    "plot_learning_rate_finder",
    "plot_reliability",
    "plot_top_losses",
    "serving_command",
    "write_report",
]
