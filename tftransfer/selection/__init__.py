"""Ranking backbones before training: transferability estimates on frozen features.

`rank_backbones(data, candidates)` computes each candidate's pooled features
once and scores them against the labels: LogME (`logme`), kNN accuracy
(`knn`) or a linear probe (`probe`), one module a method, each with its
reference. Nothing trains; the ranking costs one inference pass a candidate.
"""

from tftransfer.selection.knn import knn_score
from tftransfer.selection.logme import LogMEFit, logme_fit, logme_score
from tftransfer.selection.probe import linear_probe_score
from tftransfer.selection.ranking import (
    METHODS,
    CandidateScore,
    RankingResult,
    rank_backbones,
)

__all__ = [
    "CandidateScore",
    "LogMEFit",
    "METHODS",
    "RankingResult",
    "knn_score",
    "linear_probe_score",
    "logme_fit",
    "logme_score",
    "rank_backbones",
]
