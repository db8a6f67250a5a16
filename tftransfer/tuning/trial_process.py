"""The entry point of one isolated trial's process (`python -m tftransfer.tuning`).

The process loads the data the searching process wrote, joins its oracle as a
worker, runs one trial and exits, so the next trial starts with fresh memory.
"""

import json
import os

import keras_tuner as kt

from tftransfer.data.bundle import DatasetBundle
from tftransfer.tuning.search import tune


def _run_one_isolated_trial(spec_path):
    """Entry point of a trial process: load the data, run one trial, exit."""
    import tensorflow as tf

    with open(spec_path) as handle:
        spec = json.load(handle)
    with open(os.path.join(spec["data_dir"], "bundle.json")) as handle:
        meta = json.load(handle)

    def load(split):
        path = os.path.join(spec["data_dir"], split)
        return tf.data.Dataset.load(path) if os.path.exists(path) else None

    data = DatasetBundle(train=load("train"), validation=load("validation"), test=None,
                         class_names=meta["class_names"], counts=meta["counts"],
                         class_weights={int(k): v for k, v in meta["class_weights"].items()},
                         image_size=tuple(meta["image_size"]) or None)
    base = kt.engine.base_tuner.BaseTuner
    original = base.on_trial_end

    def on_trial_end(self, trial):
        original(self, trial)
        os._exit(0)  # one trial per process: the next one starts with fresh memory

    base.on_trial_end = on_trial_end
    settings = {k: v for k, v in spec.items() if k != "data_dir"}
    settings["search_space"] = {
        name: (tuple(value["range"]) if isinstance(value, dict) and "range" in value else value)
        for name, value in (settings.get("search_space") or {}).items()} or None
    tune(settings.pop("backbone"), data, **settings)
