"""keras-tuner search over freeze depth and learning rates, sharing the head phase.

A plain keras-tuner loop trains the head from scratch in every trial. Here the
backbone's features are computed once per search (the head phase trains on
them), the head phase runs once per distinct head setting (head learning
rate, dropout) and its weights are kept on disk, and every trial that
fine-tunes from that head setting starts from those weights. What is searched
(`TransferHyperModel`), how the next trial is chosen (keras-tuner's oracles)
and who runs the trials (keras-tuner's tuners) stay separate: the hypermodel
works with any keras-tuner Tuner.

One concept a module, each importing only the ones listed before it:

- `trial_log`: what a trial records (`rss_mb`) and the isolated trials' log.
- `folds`: k-fold cross-validation for small data, and how folds decide.
- `space`: the search space and the first trial's values (`fit`'s defaults).
- `caches`: the features and head weights shared between trials, on disk.
- `activations`: fine-tuning on the frozen part's cached activations.
- `hypermodel`: `TransferHyperModel`, build and fit.
- `tuners`: keras-tuner oracles and tuners, and atomic state files.
- `isolated`: the searching side of `isolate_trials=True`.
- `results`: `TuningResult`, the trial table, plot and best model.
- `search`: `tune()`.
- `trial_process`: one isolated trial's process (`python -m tftransfer.tuning`).
"""

from tftransfer.tuning.activations import _ActivationCache
from tftransfer.tuning.caches import HEAD_LAYERS, WARMUP_FRACTION, _data_digest, _SharedCaches
from tftransfer.tuning.folds import (AUTO_FOLDS, FOLDS_BELOW, _fold_bundles, _fold_scores,
                                     _keep_defaults_unless_beaten, _labelled_arrays,
                                     _labelled_examples, _resolve_folds)
from tftransfer.tuning.hypermodel import TransferHyperModel, _all_layers, _is_text
from tftransfer.tuning.isolated import _isolated_search
from tftransfer.tuning.results import TuningResult, _plot_trials, _refit, _trial_table
from tftransfer.tuning.search import OBJECTIVES, TUNERS, tune
from tftransfer.tuning.space import SEARCHABLE, _define
from tftransfer.tuning.trial_log import _ISOLATED_ENV, _read_isolated_log, rss_mb
from tftransfer.tuning.trial_process import _run_one_isolated_trial
from tftransfer.tuning.tuners import _defaults_first, _TransferTuner, atomic_search_files

__all__ = ["AUTO_FOLDS", "FOLDS_BELOW", "HEAD_LAYERS", "OBJECTIVES", "SEARCHABLE", "TUNERS",
           "WARMUP_FRACTION", "TransferHyperModel", "TuningResult", "atomic_search_files",
           "rss_mb", "tune"]
