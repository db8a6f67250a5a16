import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tftransfer
from tftransfer.training.freezing import backbone_blocks

sys.path.insert(0, os.path.dirname(__file__))
from processes import communicate_all, free_port, popen  # noqa: E402

FIXED_HEAD = {"head_learning_rate": [1e-3], "dropout_rate": [0.2]}


def _data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    return tftransfer.data.from_arrays(x, y, validation_split=0.25)


@pytest.mark.slow
def test_search_shares_the_head_and_opens_the_searched_blocks(tmp_path, mobilenet_v2_weights):
    result = tftransfer.tune("MobileNetV2", _data(), max_trials=5, weights=mobilenet_v2_weights,
                             directory=tmp_path, head_epochs=2, fine_tune_epochs=1, folds=None,
                             search_space={**FIXED_HEAD, "unfreeze_blocks": (0, 6)}, seed=3)
    completed = [t for t in result.trials if t["status"] == "COMPLETED"]
    assert len(completed) == 5
    depths = {t["hyperparameters"]["unfreeze_blocks"] for t in completed}
    rates = {t["hyperparameters"]["fine_tune_learning_rate"] for t in completed}
    assert len(depths) >= 2 and len(rates) == 5
    # One head phase for the one head setting; every trial started from its weights.
    assert result.head_phases_run == 1
    log = result.tuner.hypermodel.log
    assert [entry["head_reused"] for entry in log] == [False, True, True, True, True]
    assert len({entry["head_start_checksum"] for entry in log}) == 1
    # Each trial's backbone had exactly the trainable layers its depth says.
    probe = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    blocks = backbone_blocks(probe)
    backbone = tftransfer.find_backbone(probe)
    for entry in log:
        depth = entry["hyperparameters"]["unfreeze_blocks"]
        names = {n for _, names in blocks[len(blocks) - depth:] for n in names} if depth else set()
        expected = [layer.name for layer in backbone.layers if layer.name in names
                    and layer.weights and not layer.name.endswith(("_BN", "_bn"))
                    and "bn" not in layer.name.lower()]
        assert entry["trainable_backbone_layers"] == expected
    assert result.best_model is not None and result.best_hyperparameters
    assert os.path.getsize(result.plot_path) > 1000
    assert all(t["rss_mb"] > 0 for t in completed)


def test_bad_search_arguments():
    data = _data()
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['momentum'\]"):
        tftransfer.tune("MobileNetV2", data, search_space={"momentum": (0.1, 0.9)},
                        weights=None, max_trials=1)
    with pytest.raises(ValueError, match="objective: the model reports"):
        tftransfer.tune("MobileNetV2", data, objective="val_auc", weights=None)
    with pytest.raises(ValueError, match="max_trials: expected an int of at least 1"):
        tftransfer.tune("MobileNetV2", data, max_trials=0, weights=None)
    with pytest.raises(ValueError, match="unfreeze_blocks up to 40"):
        tftransfer.tune("MobileNetV2", data, search_space={"unfreeze_blocks": (0, 40)},
                        weights=None, max_trials=1)
    no_validation = tftransfer.data.from_arrays(np.zeros((8, 32, 32, 3)), np.arange(8) % 2,
                                                validation_split=0.0)
    with pytest.raises(ValueError, match="needs a validation split"):
        tftransfer.tune("MobileNetV2", no_validation, weights=None)


_SEARCH_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np, keras, tftransfer
    directory, kill_after = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    data = tftransfer.data.from_arrays(x, y, validation_split=0.25)
    from tftransfer import tuning
    original_fit = tuning.TransferHyperModel.fit
    def fit(self, hp, model, *args, **kwargs):
        with open(os.path.join(directory, f"ran_{os.getpid()}.jsonl"), "a") as handle:
            handle.write(json.dumps(hp.values, sort_keys=True) + "\\n")
        return original_fit(self, hp, model, *args, **kwargs)
    tuning.TransferHyperModel.fit = fit
    import keras_tuner
    original_end = keras_tuner.engine.base_tuner.BaseTuner.on_trial_end
    def on_trial_end(self, trial):
        original_end(self, trial)
        if kill_after:
            done = [t for t in self.oracle.trials.values() if t.status == "COMPLETED"]
            if len(done) == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    keras_tuner.engine.base_tuner.BaseTuner.on_trial_end = on_trial_end
    result = tftransfer.tune("MobileNetV2", data, max_trials=4, weights=None,
                             directory=directory, project_name="resume", head_epochs=1,
                             fine_tune_epochs=1, folds=None,
                             search_space={"head_learning_rate": [1e-3],
                             "dropout_rate": [0.0]})
    print("DONE", len([t for t in result.trials if t["status"] == "COMPLETED"]))
""")


def _ran(directory):
    runs = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("ran_"):
            with open(os.path.join(directory, name)) as handle:
                runs.extend(handle.read().splitlines())
    return runs


@pytest.mark.slow
def test_a_killed_search_resumes_without_rerunning_finished_trials(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(_SEARCH_SCRIPT)
    killed = subprocess.run([sys.executable, str(script), str(tmp_path), "2"],
                            capture_output=True, text=True, timeout=900)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(_ran(tmp_path)) == 2
    resumed = subprocess.run([sys.executable, str(script), str(tmp_path), "0"],
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "DONE 4" in resumed.stdout
    runs = _ran(tmp_path)
    assert len(runs) == 4 and len(set(runs)) == 4  # the first two were not run again


@pytest.mark.slow
def test_a_chief_and_two_workers_finish_all_trials_once(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(_SEARCH_SCRIPT)
    port = free_port()
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {**os.environ, "KERASTUNER_TUNER_ID": tuner_id,
               "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
        processes[tuner_id] = popen([sys.executable, str(script), str(tmp_path), "0"], env)
    for tuner_id, (returncode, _, err) in communicate_all(processes).items():
        assert returncode == 0, (tuner_id, err[-3000:])
    runs = _ran(tmp_path)
    assert len(runs) == 4 and len(set(runs)) == 4  # every trial once, across the workers
    assert len([n for n in os.listdir(tmp_path) if n.startswith("ran_")]) >= 1
    oracle = json.loads((tmp_path / "resume" / "oracle.json").read_text())
    assert len(oracle["end_order"]) == 4


def test_cli_role_flags_set_the_keras_tuner_environment():
    from tftransfer import cli

    assert cli.distributed_tuning_env("chief", "10.0.0.1:8000") == {
        "KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "10.0.0.1",
        "KERASTUNER_ORACLE_PORT": "8000"}
    assert cli.distributed_tuning_env("worker", "10.0.0.1:8000", "worker3")[
        "KERASTUNER_TUNER_ID"] == "worker3"
    assert cli.distributed_tuning_env(None, None) == {}


def test_cli_tune_mistakes_are_one_line_and_exit_code_2(tmp_path, capsys):
    from tftransfer import cli

    assert cli.main(["tune", str(tmp_path / "missing")]) == 2
    assert cli.main(["tune", str(tmp_path), "--role", "worker", "--oracle", "h:1"]) == 2
    assert cli.main(["tune", str(tmp_path), "--backbone", "resnet5"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("tftransfer: error:") for line in errors)
    assert "does not exist" in errors[0] and "--tuner-id" in errors[1] and "ResNet50" in errors[2]


@pytest.mark.slow
def test_cli_tune_runs_a_search_on_a_folder(tmp_path, capsys):
    from PIL import Image

    from tftransfer import cli

    for label, name in enumerate(["dark", "light"]):
        os.makedirs(tmp_path / "data" / name)
        for index in range(12):
            value = 40 + index if label == 0 else 200 + index
            Image.fromarray(np.full((40, 40, 3), value, np.uint8)).save(
                tmp_path / "data" / name / f"{index}.png")
    code = cli.main(["tune", str(tmp_path / "data"), "--image-size", "32", "--weights", "none",
                     "--max-trials", "2", "--head-epochs", "1", "--fine-tune-epochs", "1",
                     "--directory", str(tmp_path / "tuning")])
    assert code == 0
    out = capsys.readouterr().out
    assert "trials finished here: 2 (chosen by 3-fold cross-validation)" in out
    assert "best hyperparameters" in out


@pytest.mark.slow
def test_isolated_trials_run_in_their_own_processes(tmp_path):
    result = tftransfer.tune("MobileNetV2", _data(), max_trials=3, weights=None,
                             directory=tmp_path, head_epochs=1, fine_tune_epochs=1,
                             search_space=FIXED_HEAD, isolate_trials=True)
    completed = [t for t in result.trials if t["status"] == "COMPLETED"]
    assert len(completed) == 3
    log = result.tuner.hypermodel.log
    assert len(log) == 3
    assert [entry["head_reused"] for entry in log] == [False, True, True]
    assert result.head_phases_run == 0  # this process trained nothing itself
    assert result.best_model is not None


def _two_branch_classifier():
    """A backbone whose open top consumes two frozen tensors (like NASNet cells)."""
    import keras

    from tftransfer.backbones.backbone import Backbone

    inputs = keras.Input((16, 16, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="stem_a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="stem_b")(inputs)
    b = keras.layers.BatchNormalization(name="stem_bn")(b)
    top = keras.layers.Conv2D(6, 1, name="top_conv")(keras.layers.Concatenate()([a, b]))
    top = keras.layers.Add(name="top_add")([top, keras.layers.Conv2D(6, 1, name="skip")(a)])
    backbone = Backbone(inputs, top, name="two_branch")
    image = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="preprocessing")(image)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    x = keras.layers.Dropout(0.0, name="dropout")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    model = keras.Model(image, outputs)
    for layer in backbone.layers:
        layer.trainable = layer.name in ("top_conv", "skip")
    return model


def test_the_frozen_prefix_and_trainable_suffix_recompose_the_classifier():
    from tftransfer.training import feature_cache

    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    model = _two_branch_classifier()
    cut = feature_cache.trainable_cut(tftransfer.find_backbone(model))
    # top_conv reads the concatenation, skip reads stem_a: two tensors cross the cut.
    assert len(cut) == 2
    prefix = feature_cache.prefix_model(model, [t for _, t in cut])
    suffix = feature_cache.suffix_model(model, cut)
    np.testing.assert_allclose(suffix(prefix(x)), model(x), atol=1e-5)
    assert {w.path for w in suffix.trainable_weights} == {w.path for w in model.trainable_weights}

    mobilenet = tftransfer.build_classifier("MobileNetV2", 3, image_size=32, weights=None)
    tftransfer.unfreeze(mobilenet, blocks=2)
    cut = feature_cache.trainable_cut(tftransfer.find_backbone(mobilenet))
    assert len(cut) == 1
    prefix = feature_cache.prefix_model(mobilenet, [t for _, t in cut])
    suffix = feature_cache.suffix_model(mobilenet, cut)
    x = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(suffix(prefix(x)), mobilenet(x), atol=1e-5)


def test_training_the_suffix_on_cached_activations_trains_the_classifier_the_same():
    import keras

    from tftransfer.training import feature_cache

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 3, 32)

    def trained(cached):
        keras.utils.set_random_seed(5)
        model = tftransfer.build_classifier("MobileNetV2", 3, image_size=32, weights=None,
                                            dropout_rate=0.0)
        tftransfer.unfreeze(model, blocks=2)
        if cached:
            cut = feature_cache.trainable_cut(tftransfer.find_backbone(model))
            prefix = feature_cache.prefix_model(model, [t for _, t in cut])
            arrays, labels = feature_cache.compute_activations(
                prefix, tf_batches(x, y))
            target = feature_cache.suffix_model(model, cut)
            data = feature_cache.activation_dataset(arrays, labels, batch_size=8,
                                                    shuffle=False, seed=None)
        else:
            target, data = model, tf_batches(x, y)
        target.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        history = target.fit(data, epochs=2, verbose=0, shuffle=False)
        return model, history.history["loss"]

    def tf_batches(x, y):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    whole, whole_loss = trained(False)
    cached, cached_loss = trained(True)
    np.testing.assert_allclose(cached_loss, whole_loss, rtol=1e-4)
    assert whole_loss[1] != whole_loss[0]  # it did train
    for a, b in zip(whole.weights, cached.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4, err_msg=a.path)


@pytest.mark.slow
def test_fine_tuning_trials_run_on_cached_activations_and_checkpoint_the_classifier(
        tmp_path, mobilenet_v2_weights):
    data = _data()
    result = tftransfer.tune("MobileNetV2", data, max_trials=3, weights=mobilenet_v2_weights,
                             folds=None,
                             directory=tmp_path, head_epochs=1, fine_tune_epochs=2,
                             search_space={**FIXED_HEAD, "unfreeze_blocks": [0, 2, 4],
                                           "fine_tune_learning_rate": [3e-3]}, seed=3)
    log = result.tuner.hypermodel.log
    assert len(log) == 3 and all(entry["fine_tuned_on_cached_activations"] for entry in log)
    assert (tmp_path / "MobileNetV2_search" / "heads" / "activations.npz").exists()
    # keras-tuner's checkpoint holds the whole classifier at its best epoch: the
    # best model scores what the trial reported.
    best = max((t for t in result.trials if t["score"] is not None), key=lambda t: t["score"])
    result.best_model.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy")
    accuracy = result.best_model.evaluate(data.validation, verbose=0, return_dict=True)
    assert accuracy["accuracy"] == pytest.approx(best["score"], abs=1e-6)
    # The same search without the activation cache runs the whole model.
    plain = tftransfer.tune("MobileNetV2", data, max_trials=1, weights=mobilenet_v2_weights,
                            directory=tmp_path, project_name="plain", head_epochs=1,
                            fine_tune_epochs=1, activation_cache_mb=0, folds=None,
                            search_space={**FIXED_HEAD, "unfreeze_blocks": [2]})
    assert not plain.tuner.hypermodel.log[0]["fine_tuned_on_cached_activations"]


def test_trials_on_a_keras_backbone_do_not_depend_on_their_order(tmp_path):
    # Before: every trial built on the caller's object itself, so a trial fine-tuned in
    # place what the next one started from, and the caller's weights changed.
    import keras
    import keras_tuner as kt

    from tftransfer.backbones.embedded import architecture

    backbone = architecture((32, 32, 3))  # random weights, blocks block1..block3
    weights = [w.numpy().copy() for w in backbone.weights]
    flags = [layer.trainable for layer in backbone.layers]
    scores = {}
    for order in ((1, 3), (3, 1)):
        for blocks in order:
            # A fresh dataset and hypermodel per trial: only the backbone object is shared,
            # as it is between a search's trials.
            keras.utils.set_random_seed(0)
            hypermodel = tftransfer.TransferHyperModel(
                backbone, _data(), head_epochs=1, fine_tune_epochs=1, seed=5,
                cache_dir=str(tmp_path / f"heads_{order[0]}_{blocks}"), activation_cache_mb=0,
                search_space={"head_learning_rate": [1e-3], "dropout_rate": [0.0],
                              "unfreeze_blocks": [1, 3], "fine_tune_learning_rate": [3e-3]})
            hp = kt.HyperParameters()
            hp.Fixed("unfreeze_blocks", blocks)
            model = hypermodel.build(hp)
            history = hypermodel.fit(hp, model)
            scores.setdefault(blocks, []).append(history.history["val_loss"][-1])
            keras.backend.clear_session()
    for blocks, (first, second) in scores.items():
        assert first == pytest.approx(second, rel=1e-5), (blocks, scores)
    for weight, value in zip(backbone.weights, weights):
        np.testing.assert_array_equal(weight.numpy(), value)
    assert [layer.trainable for layer in backbone.layers] == flags


def _small(count=96, batch_size=16, size=16):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (count, size, size, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    return tftransfer.data.from_arrays(x, y, validation_split=0.25, batch_size=batch_size, seed=0)


def test_the_first_trial_is_fits_defaults_with_fits_budget(tmp_path):
    # The search starts from the fixed recipe: before, trial 1 was a random draw.
    from tftransfer.training.budgets import default_budget
    from tftransfer.training.trainer import FINE_TUNE_LEARNING_RATE, HEAD_LEARNING_RATE

    data = _small()
    result = tftransfer.tune("FashionCNN", data, max_trials=1, folds=None,
                             directory=tmp_path, seed=3)
    assert result.trials[0]["hyperparameters"] == {
        "unfreeze_blocks": result.tuner.hypermodel.num_blocks,
        "fine_tune_learning_rate": FINE_TUNE_LEARNING_RATE,
        "head_learning_rate": HEAD_LEARNING_RATE, "dropout_rate": 0.2, "layer_decay": 1.0}
    budget = default_budget(5)  # 72 training images in batches of 16
    assert (result.budget["head_epochs"], result.budget["fine_tune_epochs"]) == (
        budget.head_epochs, budget.fine_tune_epochs)
    history = result.tuner.hypermodel.log[0]["history"]
    assert len(history["val_accuracy"]) == budget.fine_tune_epochs
    assert result.selection == "validation split" and not result.refit
    assert result.best_model is not None and result.refit_training is None


def test_small_data_is_cross_validated_and_the_choice_refit_on_all_labels(tmp_path):
    data = _small()
    result = tftransfer.tune("FashionCNN", data, max_trials=2, head_epochs=2,
                             fine_tune_epochs=2, directory=tmp_path, seed=3,
                             search_space={"unfreeze_blocks": [0, 4],
                                           "fine_tune_learning_rate": [3e-3]})
    assert result.selection == "3-fold cross-validation" and result.folds == 3
    log = result.tuner.hypermodel.log
    assert len(log) == 2 * 3  # every trial trained once per fold
    for trial in result.trials:
        folds = [entry for entry in log if entry["hyperparameters"] == trial["hyperparameters"]]
        best = [max(entry["history"]["val_accuracy"]) for entry in folds]
        assert trial["score"] == pytest.approx(np.mean(best), abs=1e-6)
    # Each fold trains on two thirds of the 96 labelled images and validates on the rest.
    tuner = result.tuner
    for fold in tuner.fold_models:
        counts = fold.data.counts
        assert sum(counts["train"].values()) + sum(counts["validation"].values()) == 96
        assert 30 <= sum(counts["validation"].values()) <= 34
    # The refit trains on all 96 (6 steps of 16 an epoch), with the chosen settings.
    assert result.refit and result.refit_training.budget["steps_per_epoch"] == 6
    assert result.best_model is result.refit_training.model
    first = result.trials[0]["hyperparameters"]
    assert result.kept_defaults == (result.best_hyperparameters == first)
    phases = set(result.refit_training.history["phase"])
    chosen = result.best_hyperparameters["unfreeze_blocks"]
    assert phases == ({"head", "fine_tune"} if chosen else {"head"})


def test_tune_on_arrays_that_keeps_fits_defaults_returns_fits_model(tmp_path):
    # tune((x, y)) refits on the arrays as given: a search that keeps the defaults is
    # fit(model, (x, y)) to the last weight, so tune - fit measures only the search.
    # Before, tune took bundles only and refit on train + validation in split order.
    import keras

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (48, 16, 16, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    result = tftransfer.tune("FashionCNN", (x, y), max_trials=1, head_epochs=2,
                             fine_tune_epochs=2, directory=tmp_path, seed=4)
    assert result.kept_defaults and result.refit and result.folds == 3
    keras.backend.clear_session()
    keras.utils.set_random_seed(4)
    model = tftransfer.build_classifier("FashionCNN", 2, image_size=16)
    fitted = tftransfer.fit(model, (x, y), head_epochs=2, fine_tune_epochs=2, seed=4).model
    np.testing.assert_allclose(result.best_model.predict(x, verbose=0),
                               fitted.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="x and y have different lengths"):
        tftransfer.tune("FashionCNN", (x, y[:-1]), directory=tmp_path)


def test_layer_decay_slows_the_deeper_blocks_in_a_trial(tmp_path):
    import keras
    import keras_tuner as kt

    moved = {}
    for decay in (1.0, 1e-3):
        keras.utils.set_random_seed(0)
        hypermodel = tftransfer.TransferHyperModel(
            "FashionCNN", _small(), head_epochs=1, fine_tune_epochs=2, seed=5,
            weights=None, cache_dir=str(tmp_path / f"heads_{decay}"), activation_cache_mb=0,
            search_space={"unfreeze_blocks": [4], "fine_tune_learning_rate": [3e-3],
                          "layer_decay": [decay]})
        hp = kt.HyperParameters()
        model = hypermodel.build(hp)
        backbone = tftransfer.find_backbone(model)
        before = backbone.get_layer("block1_conv1").kernel.numpy().copy()
        hypermodel.fit(hp, model)
        moved[decay] = float(np.abs(backbone.get_layer("block1_conv1").kernel.numpy()
                                    - before).max())
        keras.backend.clear_session()
    # Blocks stem, block1, block2, block3: block1 is 3 deep, its rate 3e-3 * decay**3.
    assert moved[1e-3] < 1e-6 < moved[1.0]


def test_cross_validation_arguments_are_checked():
    data = _small()
    with pytest.raises(ValueError, match="folds: expected 'auto', None or an int of at least 2"):
        tftransfer.tune("FashionCNN", data, folds=1)
    with pytest.raises(ValueError, match="tuner='hyperband' scores partial trials"):
        tftransfer.tune("FashionCNN", data, folds=3, tuner="hyperband")
    with pytest.raises(ValueError, match="objective 'loss' is a training metric"):
        tftransfer.tune("FashionCNN", data, folds=3, objective="loss")
    with pytest.raises(ValueError, match="refit: expected 'auto', True or False"):
        tftransfer.tune("FashionCNN", data, refit="yes")


def test_cross_validation_keeps_fits_defaults_unless_beaten_on_every_fold():
    # The best of several noisy fold means wins partly by chance: before, it replaced
    # the fixed recipe whatever its folds said.
    from types import SimpleNamespace

    from tftransfer.tuning import _keep_defaults_unless_beaten

    defaults, other = {"fine_tune_learning_rate": 1e-3}, {"fine_tune_learning_rate": 3e-3}

    def folds(defaults_scores, other_scores, key="val_accuracy"):
        worst = 9.9 if key.endswith("loss") else 0.0  # the best epoch counts, not the last
        return [SimpleNamespace(log=[
            {"hyperparameters": defaults, "history": {key: [worst, d]}},
            {"hyperparameters": other, "history": {key: [o, worst]}}])
            for d, o in zip(defaults_scores, other_scores)]

    # Better on every fold (one tie): the other configuration is chosen.
    assert _keep_defaults_unless_beaten(other, defaults, folds([0.5, 0.6, 0.7], [0.6, 0.6, 0.8]),
                                        "val_accuracy") == (other, False)
    # Better on average, worse on one fold: fit's defaults stay.
    assert _keep_defaults_unless_beaten(other, defaults, folds([0.5, 0.6, 0.7], [0.9, 0.9, 0.6]),
                                        "val_accuracy") == (defaults, True)
    # A loss is better when lower (best epoch = lowest).
    assert _keep_defaults_unless_beaten(
        other, defaults, folds([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], key="val_loss"),
        "val_loss") == (other, False)
    assert _keep_defaults_unless_beaten(
        other, defaults, folds([0.5, 0.6, 0.7], [0.6, 0.7, 0.8], key="val_loss"),
        "val_loss") == (defaults, True)
    assert _keep_defaults_unless_beaten(defaults, defaults, [], "val_accuracy") == (defaults,
                                                                                   True)


def _cache_files(folder):
    """Every array of every cache file in `folder`: {file: {key: array}}."""
    return {name: dict(np.load(os.path.join(folder, name))) for name in sorted(os.listdir(folder))
            if name.endswith(".npz")}


def _one_trial_caches(backbone, data, cache_dir):
    """Runs one trial (head on cached features, one open block) and returns its caches."""
    import keras
    import keras_tuner as kt

    keras.utils.set_random_seed(0)
    hypermodel = tftransfer.TransferHyperModel(
        backbone, data, head_epochs=1, fine_tune_epochs=1, seed=5, cache_dir=str(cache_dir),
        search_space={"head_learning_rate": [1e-3], "dropout_rate": [0.0],
                      "unfreeze_blocks": [1], "fine_tune_learning_rate": [1e-3]})
    hp = kt.HyperParameters()
    hp.Fixed("unfreeze_blocks", 1)
    hypermodel.fit(hp, hypermodel.build(hp))
    keras.backend.clear_session()
    return _cache_files(cache_dir)


@pytest.mark.slow
def test_a_cache_made_from_other_data_or_another_backbone_is_rebuilt(tmp_path):
    # The caches under one folder, then the same folder with one thing changed: what
    # is there afterwards must be what an empty folder gets for the new inputs.
    import keras

    from tftransfer.backbones.embedded import architecture

    def backbone(seed):  # the same architecture and name, other weights
        keras.utils.set_random_seed(seed)
        return architecture((16, 16, 3))

    def data(x, y):  # no hold-out: a swap of two labels keeps every split's pixel sums
        return tftransfer.data.from_arrays(x, y, validation_split=0.0, batch_size=16, seed=0)

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (48, 16, 16, 3)).astype("float32")
    y = np.arange(48) % 2
    other_x = rng.uniform(0, 255, x.shape).astype("float32")
    swapped = y.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # two labels swapped: the same counts, sums and images
    shared = tmp_path / "shared"
    first = _one_trial_caches(backbone(1), data(x, y), shared)
    assert {"features.npz", "activations.npz"} <= set(first) and len(first) == 3  # + a head
    # Each step changes one thing from the step before: (backbone seed, images, labels).
    # Each run gets its own objects, as a new process would.
    changes = {"two labels swapped": (1, x, swapped), "other backbone weights": (2, x, swapped),
               "other images": (2, other_x, swapped)}
    for change, (seed, images, labels) in changes.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rebuilt = _one_trial_caches(backbone(seed), data(images, labels), shared)
        fresh = _one_trial_caches(backbone(seed), data(images, labels),
                                  tmp_path / change.replace(" ", "_"))
        assert set(rebuilt) == set(fresh), change
        for name, arrays in fresh.items():
            for key, value in arrays.items():
                np.testing.assert_array_equal(rebuilt[name][key], value,
                                              err_msg=f"{change}: {name}[{key}]")
        assert not all(np.array_equal(first["features.npz"][key], value)
                       for key, value in rebuilt["features.npz"].items()), change
        assert [w for w in caught if "rebuilding them" in str(w.message)], \
            f"{change}: rebuilt without saying so"
        first = rebuilt
    # Nothing changed: the caches are read, not rebuilt (no warning, the same files).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _one_trial_caches(backbone(2), data(other_x, swapped), shared)
    assert not [w for w in caught if "rebuilding them" in str(w.message)]
    assert {name: sorted(arrays) for name, arrays in again.items()} == \
        {name: sorted(arrays) for name, arrays in first.items()}
