"""Isolated trials: each trial in a fresh process, this one serving the oracle.

Keras and TensorFlow keep memory after a trial even when the session is
cleared. With `isolate_trials=True` this process serves keras-tuner's oracle
as its chief, the data is written once for the trial processes, and each
trial runs in `python -m tftransfer.tuning <spec>` (`trial_process.py`), one
after another.
"""

import os

from tftransfer import files
from tftransfer.tuning.trial_log import _ISOLATED_ENV


def _isolated_search(search, hypermodel, project_dir, settings, *, epochs):
    """Serves the oracle here and runs each trial in a fresh process, one after another."""
    import socket
    import subprocess
    import sys
    import threading

    if not isinstance(settings["backbone"], str):
        raise ValueError("isolate_trials: the backbone must be a name or a 'tfhub:' handle, so "
                         "that trial processes can build it.")
    data_dir = os.path.join(project_dir, "data")
    data = hypermodel.data
    if not os.path.exists(os.path.join(data_dir, "bundle.json")):
        for split in ("train", "validation"):
            dataset = getattr(data, split)
            if dataset is not None:
                dataset.save(os.path.join(data_dir, split))
        # Written last: a data folder without it (a killed run) is written again.
        files.write_json(os.path.join(data_dir, "bundle.json"), {
            "class_names": data.class_names, "counts": data.counts,
            "class_weights": {str(k): v for k, v in data.class_weights.items()},
            "image_size": list(data.image_size or [])})
    spec_path = os.path.join(project_dir, "isolated_trial.json")
    # JSON has no tuples: ranges (tuples) are tagged so they stay ranges, not choices.
    space = {name: ({"range": list(spec)} if isinstance(spec, tuple) else spec)
             for name, spec in (settings.get("search_space") or {}).items()}
    files.write_json(spec_path, {**settings, "search_space": space or None,
                                 "data_dir": data_dir})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    variables = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port}
    saved = {key: os.environ.get(key) for key in list(variables) + ["KERASTUNER_TUNER_ID"]}
    os.environ.update(variables, KERASTUNER_TUNER_ID="chief")
    failures = []
    try:
        chief = threading.Thread(target=search.search, daemon=True,
                                 kwargs={"epochs": epochs})
        chief.start()
        while chief.is_alive():
            # One tuner id for every trial process: keras-tuner forgets a tuner id
            # (and lets the chief exit) only once that id is told to stop, and a
            # process that died mid-trial hands its trial to the next one.
            env = {**os.environ, **variables, "KERASTUNER_TUNER_ID": "isolated",
                   _ISOLATED_ENV: "1"}
            result = subprocess.run([sys.executable, "-m", "tftransfer.tuning", spec_path],
                                    env=env, capture_output=True, text=True)
            if result.returncode != 0:
                failures.append(result.stderr[-2000:])
                if len(failures) >= 3:
                    raise RuntimeError("isolate_trials: trial processes keep failing:\n"
                                       + failures[-1])
            chief.join(timeout=0.5)
        chief.join()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
