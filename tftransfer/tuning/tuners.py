"""The keras-tuner side of a search: who runs trials and how the next one is chosen.

`_defaults_first` makes an oracle's first trial the hyperparameters'
defaults (`fit`'s recipe), `_TransferTuner` scores a trial by k-fold
cross-validation when given one hypermodel per fold, and
`atomic_search_files` keeps keras-tuner's state files whole across a kill.
"""

import contextlib
import json

import keras
import keras_tuner as kt

from tftransfer import files


def _defaults_first(oracle_class):
    """`oracle_class` whose first trial is the hyperparameters' defaults (fit's recipe)."""

    class DefaultsFirst(oracle_class):
        def populate_space(self, trial_id):
            values = dict(self.hyperparameters.values)
            if values and not self._duplicate(values):
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": values}
            return super().populate_space(trial_id)

    DefaultsFirst.__name__ = oracle_class.__name__
    return DefaultsFirst


class _TransferTuner(kt.Tuner):
    """A keras-tuner Tuner that scores a trial by k-fold cross-validation when
    given one hypermodel per fold (else as keras-tuner does)."""

    def __init__(self, *args, fold_models=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fold_models = list(fold_models or [])

    def run_trial(self, trial, *args, **kwargs):
        if not self.fold_models:
            return super().run_trial(trial, *args, **kwargs)
        histories = []
        for hypermodel in self.fold_models:
            keras.backend.clear_session()
            model = hypermodel.build(trial.hyperparameters)
            histories.append(hypermodel.fit(trial.hyperparameters, model,
                                            epochs=kwargs.get("epochs")))
        # keras-tuner averages the folds' best-epoch objectives.
        return histories


@contextlib.contextmanager
def atomic_search_files():
    """keras-tuner's JSON state and trial checkpoints, written atomically.

    keras-tuner writes `oracle.json`, `trial.json` and each trial's best
    weights in place: a kill mid-write leaves a torn file that the next
    `reload()` cannot read. Inside this block they are written to a temporary
    name and renamed.
    """
    from keras_tuner.src import utils as kt_utils
    from keras_tuner.src.engine import tuner_utils

    original_json, original_save = kt_utils.save_json, tuner_utils.SaveBestEpoch._save_model

    def save_json(path, obj):
        text = json.dumps(obj)
        with files.replacing(path) as temporary:
            with open(temporary, "w") as handle:
                handle.write(text)
        return text

    def save_model(self):
        with files.replacing(self.filepath) as temporary:
            self.model.save_weights(temporary)

    kt_utils.save_json, tuner_utils.SaveBestEpoch._save_model = save_json, save_model
    try:
        yield
    finally:
        kt_utils.save_json, tuner_utils.SaveBestEpoch._save_model = original_json, original_save


def _make_tuner(hypermodel, fold_models, *, tuner, objective, max_trials,
                executions_per_trial, seed, directory, project_name, overwrite):
    """The keras-tuner Tuner named by `tuner`, over `hypermodel` (and its folds)."""
    direction = "min" if objective.endswith("loss") else "max"
    target = kt.Objective(objective, direction)
    common = dict(directory=directory, project_name=project_name, overwrite=overwrite)
    if tuner == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=max(hypermodel.fine_tune_epochs, 2),
                            executions_per_trial=executions_per_trial, objective=target,
                            seed=seed, **common)
    oracle_class = (kt.oracles.RandomSearchOracle if tuner == "random"
                    else kt.oracles.BayesianOptimizationOracle)
    return _TransferTuner(
        oracle=_defaults_first(oracle_class)(objective=target, max_trials=max_trials,
                                             seed=seed),
        hypermodel=hypermodel, executions_per_trial=executions_per_trial,
        fold_models=fold_models, **common)
