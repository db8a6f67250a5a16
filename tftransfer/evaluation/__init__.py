"""Evaluation: figures (`evaluate`), maps (`explain`), PNG plots and a model card."""

from tftransfer.evaluation.explanations import Explanation, explain
from tftransfer.evaluation.metrics import EvaluationResult, evaluate
from tftransfer.evaluation.plots import (
    plot_confusion_matrix,
    plot_explanations,
    plot_history,
    plot_learning_rate_finder,
    plot_reliability,
    plot_top_losses,
)
from tftransfer.evaluation.report import serving_command, write_report

__all__ = [
    "EvaluationResult",
    "Explanation",
    "evaluate",
    "explain",
    "plot_confusion_matrix",
    "plot_explanations",
    "plot_history",
    "plot_learning_rate_finder",
    "plot_reliability",
    "plot_top_losses",
    "serving_command",
    "write_report",
]
