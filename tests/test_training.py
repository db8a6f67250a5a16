import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tftransfer
from tftransfer.training import WarmupCosine
from tftransfer.training.lr_finder import steepest_descent

sys.path.insert(0, os.path.dirname(__file__))
from processes import communicate_all, free_port, popen  # noqa: E402


def _data(n=96, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    return x, y


def _model(**kwargs):
    kwargs.setdefault("image_size", 32)
    kwargs.setdefault("weights", None)
    model = tftransfer.build_classifier("MobileNetV2", 2, **kwargs)
    # Random weights standing in for ImageNet ones (offline): trained as pretrained.
    tftransfer.find_backbone(model).pretrained = True
    return model


def _snapshot(layers):
    return {(layer.name, i): w.numpy().copy() for layer in layers
            for i, w in enumerate(layer.weights)}


@pytest.mark.parametrize("cache_features", [True, False])
def test_phases_touch_only_what_they_should(cache_features):
    x, y = _data()
    model = _model()
    backbone = tftransfer.find_backbone(model)
    bns = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    others = [l for l in backbone.layers if l.weights and l not in bns]
    before_bn, before_other = _snapshot(bns), _snapshot(others)
    head_before = model.get_layer("predictions").get_weights()[0].copy()
    trainer = tftransfer.Trainer(
        model, tftransfer.data.from_arrays(x, y), head_epochs=2, fine_tune_epochs=2,
        unfreeze_blocks=2, schedule="constant", fine_tune_learning_rate=3e-4,
        cache_features=cache_features, verbose=0)
    trainer.train_head()
    assert trainer.cache_note.startswith("on" if cache_features else "off")
    for key, value in {**_snapshot(bns), **_snapshot(others)}.items():
        np.testing.assert_array_equal(value, {**before_bn, **before_other}[key], err_msg=str(key))
    assert not np.array_equal(model.get_layer("predictions").get_weights()[0], head_before)

    trainer.fine_tune()
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    for key, value in _snapshot(bns).items():
        np.testing.assert_array_equal(value, before_bn[key], err_msg=str(key))
    top = {name for _, names in tftransfer.backbone_blocks(model)[-2:] for name in names}
    changed = {key[0] for key, value in _snapshot(others).items()
               if not np.array_equal(value, before_other[key])}
    assert changed and changed <= top
    result = trainer.result()
    assert result.history["phase"] == ["head", "head", "fine_tune", "fine_tune"]
    assert result.history["epoch"] == [0, 1, 2, 3]


def test_cosine_schedule_peaks_at_the_requested_learning_rate():
    schedule = WarmupCosine(2e-4, total_steps=100, warmup_steps=10)
    values = [float(schedule(step)) for step in range(101)]
    assert max(values) == pytest.approx(2e-4)
    assert values[0] == 0.0 and values[10] == pytest.approx(2e-4) and values[100] < 1e-9
    assert values[5] == pytest.approx(1e-4)


def test_cached_and_uncached_head_phases_give_the_same_head():
    x, y = _data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # one fixed order
    heads = []
    for cache in (True, False):
        keras.utils.set_random_seed(7)
        model = _model(dropout_rate=0.3)
        result = tftransfer.fit(model, dataset, head_epochs=3, fine_tune_epochs=0,
                                cache_features=cache, early_stopping_patience=None,
                                verbose=0)
        assert result.feature_cache.startswith("on" if cache else "off")
        heads.append(model.get_layer("predictions").get_weights())
    for cached, uncached in zip(*heads):
        np.testing.assert_allclose(cached, uncached, rtol=1e-4, atol=1e-5)


def test_cache_switches_itself_off_with_random_augmentation():
    x, y = _data(48)
    model = _model(augmentation="light")
    result = tftransfer.fit(model, tftransfer.data.from_arrays(x, y), head_epochs=1,
                            fine_tune_epochs=0, verbose=0)
    assert result.feature_cache.startswith("off") and "augmentation" in result.feature_cache
    result = tftransfer.fit(_model(), tftransfer.data.from_arrays(x, y, augmentation="light"),
                            head_epochs=1, fine_tune_epochs=0, verbose=0)
    assert result.feature_cache == "off: the training data is augmented in the pipeline"
    with pytest.raises(ValueError, match="cache_features=True.*augment"):
        tftransfer.fit(_model(augmentation="light"), tftransfer.data.from_arrays(x, y),
                       head_epochs=1, fine_tune_epochs=0, cache_features=True, verbose=0)


def test_bad_input_fails_before_any_training():
    x, y = _data(32)
    data = tftransfer.data.from_arrays(x, y)
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match="head_epochs"):
        tftransfer.fit(model, data, head_epochs=-1, verbose=0)
    with pytest.raises(ValueError, match="unfreeze_blocks: 99 is more than the 18 blocks"):
        tftransfer.fit(model, data, unfreeze_blocks=99, verbose=0)
    with pytest.raises(ValueError, match="labels range over 0..4.*2 output"):
        tftransfer.fit(model, (x, np.arange(32) % 5), verbose=0)
    with pytest.raises(ValueError, match="the data has 3 classes.*2 outputs"):
        tftransfer.fit(model, tftransfer.data.from_arrays(x, np.arange(32) % 3), verbose=0)
    with pytest.raises(ValueError, match="loss: .*cannot compare"):
        tftransfer.fit(model, data, loss=keras.losses.CategoricalCrossentropy(), verbose=0)
    with pytest.raises(ValueError, match="fine_tune_learning_rate"):
        tftransfer.fit(model, data, fine_tune_learning_rate=0, verbose=0)
    with pytest.raises(ValueError, match="schedule"):
        tftransfer.fit(model, data, schedule="triangular", verbose=0)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_nan_loss_stops_with_advice():
    x, y = _data(32)
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="lower learning rate.*NaN"):
        tftransfer.fit(_model(), (x, y), head_epochs=2, fine_tune_epochs=0,
                       cache_features=False, verbose=0)


def _one_feature_data(n, seed, *, minority=0.5, shift=1.5):
    """4x4 images whose red channel carries the class plus unit noise; class 1 is
    `minority` of the examples. With an identity backbone the head is a logistic
    regression on the channel means, so its answer is known."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < minority).astype("int64")
    signal = rng.normal(0.0, 1.0, n) + shift * y
    x = np.full((n, 4, 4, 3), 127.0, "float32")
    x[..., 0] += 30 * signal[:, None, None]
    x[..., 1] = rng.uniform(0, 255, (n, 4, 4))
    return np.clip(x, 0, 255).astype("float32"), y


def _head_trained_on(x, y, **kwargs):
    """`fit`'s head phase (cached features, fixed seed) on an identity backbone."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    backbone = keras.Model(inputs, keras.layers.Identity()(inputs), name="identity")
    model = tftransfer.build_classifier(backbone, 2, image_size=4, preprocessing="tf",
                                        dropout_rate=0.0)
    data = tftransfer.data.from_arrays(x, y, validation_split=0.0, batch_size=32, seed=0)
    tftransfer.fit(model, data, head_epochs=30, fine_tune_epochs=0, head_learning_rate=0.1,
                   verbose=0, **kwargs)
    return model


def test_class_weights_raise_the_recall_of_a_rare_class():
    # 10 % of class 1 and overlapping classes: unweighted, the head mostly says class 0.
    x, y = _one_feature_data(400, seed=0, minority=0.1)
    test_x, test_y = _one_feature_data(2000, seed=1, minority=0.1)
    assert tftransfer.data.from_arrays(x, y, validation_split=0.0).class_weights[1] > 4
    recall = {}
    for class_weight in ("auto", None):
        model = _head_trained_on(x, y, class_weight=class_weight)
        predicted = model.predict(test_x, verbose=0).argmax(axis=1)
        recall[class_weight] = float((predicted[test_y == 1] == 1).mean())
    # Measured: 0.76 weighted ("auto": the bundle's weights), 0.35 unweighted.
    assert recall["auto"] > recall[None] + 0.2, recall


def test_label_smoothing_lowers_the_confidence_of_the_predictions():
    x, y = _one_feature_data(400, seed=0, shift=4.0)
    test_x, _ = _one_feature_data(1000, seed=1, shift=4.0)
    confidence, entropy = {}, {}
    for smoothing in (0.0, 0.2):
        model = _head_trained_on(x, y, label_smoothing=smoothing, class_weight=None)
        probabilities = model.predict(test_x, verbose=0)
        confidence[smoothing] = float(probabilities.max(axis=1).mean())
        entropy[smoothing] = float(-(probabilities * np.log(probabilities + 1e-12)).sum(1).mean())
    # Smoothed targets are 0.9 / 0.1 here: the head stops short of certainty.
    # Measured: mean confidence 0.845 against 0.945, entropy 0.39 against 0.15.
    assert confidence[0.2] < confidence[0.0] - 0.05, confidence
    assert confidence[0.2] < 1 - 0.2 / 2 + 0.02, confidence
    assert entropy[0.2] > entropy[0.0] + 0.1, entropy


def test_mixed_precision_on_request_keeps_a_float32_output():
    x, y = _data(32)
    model = _model()
    result = tftransfer.fit(model, (x, y), head_epochs=1, fine_tune_epochs=1,
                            mixed_precision="mixed_float16", cache_features=False, verbose=0)
    assert result.mixed_precision == "mixed_float16"
    assert tftransfer.find_backbone(model).compute_dtype == "float16"
    assert model(x[:2]).dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_auto_precision_resolves_for_the_device_this_runs_on():
    # float32 on CPUs, a mixed policy on GPUs that have one (7.0 and newer).
    policy = tftransfer.training.resolve_mixed_precision("auto")
    capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability")
                    for gpu in tf.config.list_physical_devices("GPU")]
    if not any(c and c >= (7, 0) for c in capabilities):
        assert policy == "float32", capabilities
    else:
        assert policy in ("mixed_float16", "mixed_bfloat16"), (policy, capabilities)
    x, y = _data(16)
    model = _model()
    result = tftransfer.fit(model, (x, y), head_epochs=1, fine_tune_epochs=0,
                            cache_features=False, verbose=0)
    assert result.mixed_precision == policy
    assert tftransfer.find_backbone(model).compute_dtype == {
        "float32": "float32", "mixed_float16": "float16",
        "mixed_bfloat16": "bfloat16"}[policy]
    assert model(x[:2]).dtype == "float32"


@pytest.mark.parametrize("capabilities, expected", [
    ([], "float32"),
    ([(6, 1)], "float32"),  # Pascal: no tensor cores
    ([(7, 5)], "mixed_float16"),
    ([(8, 0)], "mixed_bfloat16"),
    ([(9, 0), (9, 0)], "mixed_bfloat16"),
    ([(8, 6), (7, 0)], "mixed_float16"),  # what every GPU of the machine supports
])
def test_auto_precision_follows_the_gpus_compute_capability(monkeypatch, capabilities,
                                                            expected):
    devices = [f"GPU:{i}" for i in range(len(capabilities))]
    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: devices if kind == "GPU" else real(kind))
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"compute_capability": capabilities[devices.index(device)]})
    assert tftransfer.training.resolve_mixed_precision("auto") == expected
    assert tftransfer.training.resolve_mixed_precision("float32") == "float32"


def test_find_learning_rate_restores_weights_and_plots(tmp_path):
    x, y = _data(64)
    model = _model()
    before = [w.numpy().copy() for w in model.weights]
    result = tftransfer.find_learning_rate(model, tftransfer.data.from_arrays(x, y), steps=30,
                                           plot_path=tmp_path / "lr.png")
    assert len(result.learning_rates) == len(result.losses) >= 10
    assert result.suggestion == steepest_descent(result.learning_rates, result.losses)
    assert result.learning_rates == sorted(result.learning_rates)
    assert os.path.getsize(tmp_path / "lr.png") > 1000
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


@pytest.mark.parametrize("steepest", [-5.0, -3.0, -1.5])
def test_the_suggested_learning_rate_is_where_the_loss_falls_fastest(steepest):
    rates = np.logspace(-7, 0, 71)  # a tenth of a decade apart
    log_rates = np.log10(rates)
    # A gentle fall from the first rate, the steep one at `steepest`, then divergence.
    losses = (2.5 - 0.05 * (log_rates + 7) - np.tanh(2 * (log_rates - steepest))
              + np.where(log_rates > -0.5, 30 * (log_rates + 0.5) ** 2, 0.0))
    assert steepest_descent(rates, losses) == pytest.approx(10 ** steepest, rel=1e-6)
    assert steepest_descent(rates[:2], losses[:2]) == rates[0]  # too short for a slope
    with pytest.raises(ValueError, match="learning_rates and losses"):
        steepest_descent(rates, losses[:-1])


_RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np, keras, tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    import tftransfer
    checkpoint_dir, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    class Kill(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = 0
        def on_epoch_end(self, epoch, logs=None):
            self.seen += 1
            print("EPOCH", epoch, flush=True)
            if epoch == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None,
                                        dropout_rate=0.0)
    result = tftransfer.fit(model, data, head_epochs=3, fine_tune_epochs=3, unfreeze_blocks=1,
                            checkpoint_dir=checkpoint_dir, cache_features=False,
                            early_stopping_patience=None, callbacks=[Kill()], verbose=0)
    np.savez(out, *[w.numpy() for w in model.weights])
""")


def _run_resume_script(tmp_path, checkpoint_dir, out, kill_at):
    script = tmp_path / "train.py"
    script.write_text(_RESUME_SCRIPT)
    return subprocess.run([sys.executable, str(script), str(checkpoint_dir), str(out),
                           str(kill_at)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 4])  # in the head phase, and in fine-tuning
def test_a_run_killed_after_epoch_k_resumes_at_k_plus_1(tmp_path, kill_at):
    reference = _run_resume_script(tmp_path, tmp_path / "ref_ckpt", tmp_path / "ref.npz", -1)
    assert reference.returncode == 0, reference.stderr[-3000:]
    killed = _run_resume_script(tmp_path, tmp_path / "ckpt", tmp_path / "out.npz", kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert [int(line.split()[1]) for line in killed.stdout.splitlines()
            if line.startswith("EPOCH")][-1] == kill_at
    resumed = _run_resume_script(tmp_path, tmp_path / "ckpt", tmp_path / "out.npz", -1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    epochs = [int(line.split()[1]) for line in resumed.stdout.splitlines()
              if line.startswith("EPOCH")]
    assert epochs[0] == kill_at + 1 and epochs[-1] == 5
    expected, actual = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "out.npz")
    assert len(expected.files) == len(actual.files)
    for key in expected.files:  # bit-identical: the same weights as the run never killed
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


_MIRRORED_SCRIPT = textwrap.dedent("""
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tftransfer
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 127).astype("int64")
    model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    result = tftransfer.fit(model, (x, y), head_epochs=2, fine_tune_epochs=1,
                            strategy=strategy, verbose=0)
    assert result.model is not model
    from tftransfer.training.trainer import created_in_scope
    assert created_in_scope(strategy, result.model.weights[0])
    assert not created_in_scope(strategy, model.weights[0])
    print("REPLICAS", strategy.num_replicas_in_sync, "LOSS", result.history["loss"])
""")


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus_trains(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("REPLICAS")][0]
    assert line.split()[1] == "2"


_WORKER_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np, tensorflow as tf
    import tftransfer
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 127).astype("int64")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
    with strategy.scope():
        model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    result = tftransfer.fit(model, data, head_epochs=2, fine_tune_epochs=1,
                            strategy=strategy, verbose=0)
    print("WORKERS", strategy.num_replicas_in_sync, "LOSS", result.history["loss"], flush=True)
""")


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_with_two_processes_trains(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER_SCRIPT)
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(popen([sys.executable, str(script)],
                               {**os.environ, "TF_CONFIG": json.dumps(config)}))
    outputs = communicate_all(processes, timeout=600).values()
    losses = []
    for returncode, out, err in outputs:
        assert returncode == 0, err[-3000:]
        line = [l for l in out.splitlines() if l.startswith("WORKERS")][0]
        assert line.startswith("WORKERS 2 LOSS")
        losses.append(json.loads(line.split("LOSS", 1)[1]))
    # Synchronous training: both workers see the same global loss every epoch.
    assert len(losses[0]) == 3 and np.all(np.isfinite(losses[0]))
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_discriminative_learning_rates_shrink_with_depth():
    x, y = _data(16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # one step
    deltas = {}
    for decay in (None, 0.1):
        keras.utils.set_random_seed(5)
        model = tftransfer.build_classifier("ResNet50", 2, image_size=32, weights=None,
                                            dropout_rate=0.0)
        backbone = tftransfer.find_backbone(model)
        watched = {name: backbone.get_layer(name).kernel for name in
                   ("conv5_block3_3_conv", "conv5_block2_3_conv")}
        watched["head"] = model.get_layer("predictions").kernel
        before = {name: v.numpy().copy() for name, v in watched.items()}
        tftransfer.fit(model, dataset, head_epochs=0, fine_tune_epochs=1, unfreeze_blocks=2,
                       optimizer="sgd", schedule="constant", fine_tune_learning_rate=0.01,
                       discriminative_lr=decay, early_stopping_patience=None, verbose=0)
        deltas[decay] = {name: v.numpy() - before[name] for name, v in watched.items()}
    plain, scaled = deltas[None], deltas[0.1]
    np.testing.assert_allclose(scaled["head"], plain["head"], rtol=1e-4, atol=1e-9)
    # Weight deltas are differences of float32 weights: compare up to their rounding.
    for name, factor in (("conv5_block3_3_conv", 0.1), ("conv5_block2_3_conv", 0.01)):
        expected = factor * plain[name]
        np.testing.assert_allclose(scaled[name], expected, rtol=1e-2, atol=1e-8)
        assert np.abs(scaled[name]).sum() == pytest.approx(np.abs(expected).sum(), rel=1e-2)
    assert np.abs(plain["conv5_block2_3_conv"]).max() > 0
    with pytest.raises(ValueError, match="discriminative_lr"):
        tftransfer.fit(_model(), dataset, discriminative_lr=2.0, verbose=0)


def test_a_model_trained_with_discriminative_rates_saves_and_reloads(tmp_path):
    x, y = _data(16)
    model = _model()
    tftransfer.fit(model, (x, y), head_epochs=0, fine_tune_epochs=1, discriminative_lr=0.5,
                   verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    assert type(reloaded.optimizer) is keras.optimizers.Adam


def test_checkpoint_dir_writes_logs_and_tensorboard_on_request(tmp_path):
    x, y = _data(32)
    model = _model()
    result = tftransfer.fit(model, tftransfer.data.from_arrays(x, y), head_epochs=1,
                            fine_tune_epochs=1, checkpoint_dir=tmp_path / "run",
                            tensorboard=str(tmp_path / "tb"), verbose=0)
    written = set(os.listdir(tmp_path / "run"))
    assert {"best.keras", "log.csv", "history.json", "head.done.weights.h5",
            "fine_tune.done.weights.h5"} <= written
    assert not any(name.endswith(".tmp") or ".tmp." in name for name in written)
    with open(tmp_path / "run" / "history.json") as handle:
        assert json.load(handle)["phase"] == ["head", "fine_tune"]
    assert any(files for _, _, files in os.walk(tmp_path / "tb"))  # event files
    reloaded = tftransfer.load_model(str(tmp_path / "run" / "best.keras"))
    assert reloaded.output_shape == model.output_shape
    assert result.history["epoch"] == [0, 1]


def _diverging_case():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 16, 16, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 2].mean(axis=(1, 2))).astype("int64")
    return x, y


def test_fine_tuning_that_diverges_is_reverted_to_the_head_phase():
    # A rate far too high for the backbone: without the guard the model fits its own
    # training data worse than the head alone did, and fit returns it.
    x, y = _diverging_case()
    common = dict(head_epochs=3, seed=0, verbose=0, batch_size=16)
    keras.utils.set_random_seed(0)
    head_only = tftransfer.fit(tftransfer.build_classifier("FashionCNN", 2, image_size=16),
                               (x, y), fine_tune_epochs=0, **common)
    keras.utils.set_random_seed(0)
    with pytest.warns(UserWarning, match=r"fine-tuning at learning rate 3 ended with a "
                                         r"training loss of .* it diverged"):
        guarded = tftransfer.fit(tftransfer.build_classifier("FashionCNN", 2, image_size=16),
                                 (x, y), fine_tune_epochs=3, fine_tune_learning_rate=3.0,
                                 **common)
    assert guarded.fine_tune_reverted
    assert guarded.history["loss"][-1] > guarded.history["loss"][2]  # it did diverge
    np.testing.assert_allclose(guarded.model.predict(x, verbose=0),
                               head_only.model.predict(x, verbose=0), atol=1e-5)
    keras.utils.set_random_seed(0)
    unguarded = tftransfer.fit(tftransfer.build_classifier("FashionCNN", 2, image_size=16),
                               (x, y), fine_tune_epochs=3, fine_tune_learning_rate=3.0,
                               revert_diverged=False, **common)
    assert not unguarded.fine_tune_reverted
    assert not np.allclose(unguarded.model.predict(x, verbose=0),
                           head_only.model.predict(x, verbose=0), atol=1e-3)
    # A head on frozen features can overfit a small set (an ImageNet head on 100 images
    # ends near 0.02): a healthy fine-tuning run that ends a little above that is not
    # divergence; the bar is also at least half a uniform guess's loss, log(K) / 2.
    five = tftransfer.Trainer(tftransfer.build_classifier("FashionCNN", 5, image_size=16),
                              (x, y % 5), verbose=0)
    assert five._diverged_above(0.02) == pytest.approx(0.5 * np.log(5))
    assert five._diverged_above(1.5) == 1.5
    # At a sound rate fine-tuning stands.
    keras.utils.set_random_seed(0)
    sound = tftransfer.fit(tftransfer.build_classifier("FashionCNN", 2, image_size=16),
                           (x, y), fine_tune_epochs=3, **common)
    assert not sound.fine_tune_reverted


def test_fit_takes_uint8_image_arrays():
    # Images as they are read from files or IDX archives (uint8). Before, the head phase's
    # feature pass failed: its compiled function took float32 only.
    x = np.random.default_rng(0).integers(0, 255, (24, 32, 32, 3), dtype=np.uint8)
    y = np.arange(24) % 2
    model = tftransfer.build_classifier("FashionCNN", 2)
    result = tftransfer.fit(model, (x, y), head_epochs=1, fine_tune_epochs=1, verbose=0)
    assert result.history["phase"] == ["head", "fine_tune"]
    np.testing.assert_allclose(result.model.predict(x, verbose=0),
                               result.model.predict(x.astype("float32"), verbose=0), rtol=1e-6)
