"""What a search returns: `TuningResult`, its trial table, plot and best model.

The best model is the best trial's, or (`refit`) the chosen configuration
trained again by `fit()` on train + validation; with cross-validation the
choice is `fit`'s defaults unless another trial beats them on every fold.
"""

import dataclasses
import json
import os
import warnings
from typing import Dict, List, Optional

import keras

from tftransfer.training.trainer import HEAD_LEARNING_RATE
from tftransfer.tuning.folds import _keep_defaults_unless_beaten, _labelled_examples
from tftransfer.tuning.trial_log import _read_isolated_log


@dataclasses.dataclass
class TuningResult:
    """What `tftransfer.tune()` returns.

    Attributes:
        best_model: `keras.Model` or None (None on a worker process): the
            best trial's model, or with `refit`, the best configuration
            trained by `fit()` on train + validation.
        best_hyperparameters: dict.
        trials: list of dicts, one per finished trial: id, hyperparameters,
            score, and (for trials this process ran) seconds, RSS and
            whether the head was reused.
        plot_path: str or None. Objective against unfreeze depth and
            fine-tuning learning rate.
        head_phases_run: int. Head phases this process trained.
        tuner: the keras-tuner Tuner.
        selection: str. How trials were scored: `"validation split"` or
            `"<k>-fold cross-validation"`.
        folds: int or None. The folds, when cross-validated.
        refit: bool. Whether `best_model` was refit on all labelled data.
        budget: dict. The epochs of each trial's phases and the rule behind
            them (`tftransfer.training.budgets`).
        refit_training: `TrainingResult` or None. The refit's history and
            budget, when refit.
        kept_defaults: bool. The choice is `fit`'s defaults (the first
            trial): with cross-validation, the best other trial did not score
            at least as well on every fold and better on average.
        backbone: the chosen candidate's name, when `tune()` was given
            several backbones (else None).
        ranking: `tftransfer.selection.RankingResult` or None. How the
            candidates ranked before the search (several backbones).
        searches: dict or None. `{candidate: TuningResult}` of every
            candidate searched (several backbones).
    """

    best_model: Optional[keras.Model]
    best_hyperparameters: Dict[str, object]
    trials: List[dict]
    plot_path: Optional[str]
    head_phases_run: int
    tuner: object
    selection: str = "validation split"
    folds: Optional[int] = None
    refit: bool = False
    budget: Optional[dict] = None
    refit_training: Optional[object] = None
    kept_defaults: bool = False
    backbone: Optional[object] = None
    ranking: Optional[object] = None
    searches: Optional[Dict[str, object]] = None


def _refit(hypermodel, data, values, arrays, *, head_epochs, fine_tune_epochs, seed, verbose):
    """The chosen configuration trained by `fit()` on train + validation."""
    from tftransfer.training.trainer import fit

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = hypermodel.build_classifier(float(values.get("dropout_rate", 0.2)),
                                        weights=hypermodel.weights)
    blocks = int(values.get("unfreeze_blocks", hypermodel.num_blocks))
    decay = float(values.get("layer_decay", 1.0))
    if arrays is not None:
        labelled = arrays
    else:
        batch = hypermodel._batch_size()
        merged = data.train.unbatch()
        if data.validation is not None:
            merged = merged.concatenate(data.validation.unbatch())
        labelled = merged.shuffle(min(_labelled_examples(data), 2048), seed=seed,
                                  reshuffle_each_iteration=True).batch(batch)
    return fit(model, labelled, head_epochs=head_epochs,
               fine_tune_epochs=fine_tune_epochs if blocks else 0,
               unfreeze_blocks="all" if blocks >= hypermodel.num_blocks else max(blocks, 1),
               head_learning_rate=float(values.get("head_learning_rate", HEAD_LEARNING_RATE)),
               fine_tune_learning_rate=float(values.get(
                   "fine_tune_learning_rate",
                   hypermodel.start_values()["fine_tune_learning_rate"])),
               discriminative_lr=decay if blocks and decay < 1.0 else None,
               batch_size=hypermodel._batch_size(), seed=seed, verbose=verbose)


def _is_worker():
    """Whether this process is a keras-tuner worker (not the chief, which serves the oracle)."""
    return os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief" and \
        "KERASTUNER_ORACLE_IP" in os.environ


def _best(search, hypermodel, fold_models, data, arrays, *, objective, refit, head_epochs,
          fine_tune_epochs, seed, verbose):
    """`(values, model, refit_training, kept_defaults)` of a finished search."""
    best = search.get_best_hyperparameters(1)
    best_hp = dict(best[0].values) if best else {}
    kept_defaults = False
    if fold_models and best:
        best_hp, kept_defaults = _keep_defaults_unless_beaten(
            # The space's defaults: the first trial's values (fit's defaults).
            best_hp, dict(search.oracle.hyperparameters.values), fold_models,
            objective)
    if refit and best:
        refit_training = _refit(hypermodel, data, best_hp, arrays,
                                head_epochs=head_epochs,
                                fine_tune_epochs=fine_tune_epochs, seed=seed,
                                verbose=verbose)
        return best_hp, refit_training.model, refit_training, kept_defaults
    with warnings.catch_warnings():
        # keras-tuner restores the trial checkpoint's optimizer state into a
        # model built without one; the weights are what count here.
        warnings.filterwarnings("ignore",
                                message="Skipping variable loading for optimizer")
        models = search.get_best_models(1) if best else []
    return best_hp, (models[0] if models else None), None, kept_defaults


def _tuning_result(search, hypermodel, fold_models, data, arrays, *, objective, folds, refit,
                   isolate_trials, project_dir, head_epochs, fine_tune_epochs, seed, verbose):
    """The `TuningResult` of a finished search (a worker knows only its own trials)."""
    if isolate_trials:
        hypermodel.log = _read_isolated_log(hypermodel.cache_dir)
    ran = fold_models or [hypermodel]
    if fold_models:
        hypermodel.log = [entry for model in fold_models for entry in model.log]
    is_worker = _is_worker()
    # A worker's oracle is a client of the chief's: it knows only its own trials.
    trials = _trial_table(search, hypermodel) if not is_worker else [
        {"trial_id": None, "status": "COMPLETED", "score": None,
         "hyperparameters": entry["hyperparameters"],
         **{k: entry[k] for k in ("seconds", "rss_mb", "rss_growth_mb", "head_reused")}}
        for entry in hypermodel.log]
    best_hp, best_model, refit_training, kept_defaults = {}, None, None, False
    if not is_worker:
        best_hp, best_model, refit_training, kept_defaults = _best(
            search, hypermodel, fold_models, data, arrays, objective=objective, refit=refit,
            head_epochs=head_epochs, fine_tune_epochs=fine_tune_epochs, seed=seed,
            verbose=verbose)
    plot_path = None if is_worker else _plot_trials(trials, objective,
                                                    os.path.join(project_dir, "trials.png"))
    return TuningResult(best_model=best_model, best_hyperparameters=best_hp, trials=trials,
                        plot_path=plot_path,
                        head_phases_run=sum(model.head_runs for model in ran),
                        tuner=search,
                        selection=(f"{folds}-fold cross-validation" if folds
                                   else "validation split"),
                        folds=folds, refit=bool(refit), budget=hypermodel.budget.as_dict(),
                        refit_training=refit_training, kept_defaults=kept_defaults)


def _trial_table(search, hypermodel):
    """One row per trial of the oracle, with what this process measured of it."""
    ran = {json.dumps(entry["hyperparameters"], sort_keys=True): entry
           for entry in hypermodel.log}
    rows = []
    for trial in search.oracle.trials.values():
        values = dict(trial.hyperparameters.values)
        entry = ran.get(json.dumps(values, sort_keys=True), {})
        rows.append({"trial_id": trial.trial_id, "status": str(trial.status),
                     "score": trial.score, "hyperparameters": values,
                     **{k: entry[k] for k in ("seconds", "rss_mb", "rss_growth_mb", "head_reused")
                        if k in entry}})
    return sorted(rows, key=lambda row: row["trial_id"])


def _plot_trials(trials, objective, path):
    """The objective against unfreeze depth and fine-tuning learning rate, or None."""
    scored = [t for t in trials if t["score"] is not None]
    if not scored:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    depth = [t["hyperparameters"].get("unfreeze_blocks", 0) for t in scored]
    rates = [t["hyperparameters"].get("fine_tune_learning_rate", 0) for t in scored]
    scores = [t["score"] for t in scored]
    axes[0].scatter(depth, scores)
    axes[0].set_xlabel("unfreeze_blocks")
    axes[1].scatter(rates, scores)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("fine_tune_learning_rate")
    for axis in axes:
        axis.set_ylabel(objective)
    figure.suptitle("Trials")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
