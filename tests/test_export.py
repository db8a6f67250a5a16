import base64
import io
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
from PIL import Image

import tftransfer

sys.path.insert(0, os.path.dirname(__file__))
import hub_modules  # noqa: E402
from synthetic import TARGET_CLASSES, small_backbone, synthetic_images  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small classifier trained on the demo's synthetic shapes, and held-out data."""
    keras.utils.set_random_seed(0)
    x, y = synthetic_images("target", 80, seed=2)
    x_test, y_test = synthetic_images("target", 60, seed=3)
    model = tftransfer.build_classifier(small_backbone(), 3, dropout_rate=0.0)
    tftransfer.unfreeze(model)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return model, (x, y), (x_test, y_test)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, (x, _), (x_test, y_test) = trained
    root = tmp_path_factory.mktemp("exports")
    result = tftransfer.export(
        model, root / "shapes", class_names=list(TARGET_CLASSES), top_k=2,
        tflite=["float32", "int8"], representative_data=x,
        evaluation_data=tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(60))
    return result, root


def _run(code, *args):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def test_layout_manifest_and_models_config(exported):
    result, root = exported
    assert result.path == str(root / "shapes" / "1") and result.version == 1
    assert sorted(n for n in os.listdir(root / "shapes")) == ["1", "models.config"]
    manifest = json.loads((root / "shapes" / "1" / "export_manifest.json").read_text())
    assert manifest["class_names"] == list(TARGET_CLASSES)
    assert manifest["image_size"] == [32, 32] and manifest["preprocessing"] == "none"
    assert manifest["parity_max_abs_diff"] == result.parity_max_abs_diff <= 1e-5
    assert {"tensorflow", "keras", "tftransfer"} <= set(manifest["packages"])
    config = (root / "shapes" / "models.config").read_text()
    assert 'name: "shapes"' in config and 'model_platform: "tensorflow"' in config


def test_saved_model_cli_lists_both_signatures(exported):
    result, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", result.path, "--all"], capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    serving = text.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    images = text.split("signature_def['predict_images']")[1].split("signature_def[")[0]
    assert "inputs['images'] tensor_info:" in serving
    assert "dtype: DT_FLOAT" in serving and "shape: (-1, -1, -1, 3)" in serving
    assert "inputs['image_bytes'] tensor_info:" in images
    assert "dtype: DT_STRING" in images and "shape: (-1)" in images
    for block in (serving, images):
        for output, dtype, shape in (("probabilities", "DT_FLOAT", "(-1, 3)"),
                                     ("top_k_scores", "DT_FLOAT", "(-1, 2)"),
                                     ("top_k_classes", "DT_STRING", "(-1, 2)")):
            part = block.split(f"outputs['{output}'] tensor_info:")[1][:200]
            assert f"dtype: {dtype}" in part and f"shape: {shape}" in part


def test_plain_tensorflow_process_reproduces_keras_predictions(trained, exported, tmp_path):
    model, _, (x_test, _) = trained
    result, _ = exported
    np.save(tmp_path / "x.npy", x_test[:20])
    np.save(tmp_path / "y.npy", model.predict(x_test[:20], verbose=0))
    code = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        loaded = tf.saved_model.load(sys.argv[1])
        out = loaded.signatures["serving_default"](images=tf.constant(np.load(sys.argv[2])))
        print("tftransfer" in sys.modules, float(np.abs(out["probabilities"].numpy()
                                                       - np.load(sys.argv[3])).max()))
        print(out["top_k_classes"].numpy()[0].tolist())
    """)
    output = _run(code, result.path, tmp_path / "x.npy", tmp_path / "y.npy")
    assert output.returncode == 0, output.stderr[-2000:]
    imported, difference = output.stdout.splitlines()[0].split()
    assert imported == "False" and float(difference) <= 1e-5
    classes = output.stdout.splitlines()[1]
    assert sum(f"b'{name}'" in classes for name in TARGET_CLASSES) == 2  # top 2 of 3


def _encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format=fmt, quality=95)
    return buffer.getvalue()


def test_predict_images_equals_decoding_in_python(trained, exported):
    _, _, (x_test, _) = trained
    result, _ = exported
    loaded = tftransfer.load_model(os.path.dirname(result.path))
    blobs = [_encoded(x_test[0], "JPEG"), _encoded(x_test[1], "PNG")]
    from_bytes = loaded.signatures["predict_images"](image_bytes=tf.constant(blobs))
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.float32)
                        for b in blobs])
    from_arrays = loaded.signatures["serving_default"](images=tf.constant(decoded))
    np.testing.assert_allclose(from_bytes["probabilities"].numpy(),
                               from_arrays["probabilities"].numpy(), atol=2e-3)
    np.testing.assert_array_equal(from_bytes["top_k_classes"].numpy(),
                                  from_arrays["top_k_classes"].numpy())


def test_rest_instances_with_b64_map_to_the_signature(trained, exported, tmp_path):
    _, _, (x_test, _) = trained
    result, _ = exported
    paths = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        path.write_bytes(_encoded(x_test[index], "PNG"))
        paths.append(path)
    body = json.loads(json.dumps(tftransfer.rest_request_body(paths)))
    assert body["signature_name"] == "predict_images"
    # TF Serving's row format: each instance maps input names to values, and
    # {"b64": ...} under an input whose name ends in "_bytes" is decoded base64.
    loaded = tf.saved_model.load(result.path)
    signature = loaded.signatures[body["signature_name"]]
    inputs = {}
    for instance in body["instances"]:
        for name, value in instance.items():
            assert name.endswith("_bytes")
            inputs.setdefault(name, []).append(base64.b64decode(value["b64"]))
    served = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    pixels = x_test[:3].astype(np.uint8).astype(np.float32)  # what the PNG files hold
    direct = loaded.signatures["serving_default"](images=tf.constant(pixels))
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               direct["probabilities"].numpy(), atol=1e-5)


def test_warmup_requests_parse_with_the_tf_serving_protos(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    result, _ = exported
    path = os.path.join(result.path, "assets.extra", "tf_serving_warmup_requests")
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    assert len(records) == 2
    seen = {}
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "shapes"
        seen[request.model_spec.signature_name] = {
            name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
    assert seen["serving_default"]["images"].shape == (1, 32, 32, 3)
    png = seen["predict_images"]["image_bytes"][0]
    assert png.startswith(b"\x89PNG")
    loaded = tf.saved_model.load(result.path)
    loaded.signatures["predict_images"](image_bytes=tf.constant([png]))  # a valid request


def test_int8_tflite_within_two_points_of_keras(exported):
    result, _ = exported
    int8 = result.tflite["int8"]
    assert os.path.isfile(int8["path"]) and int8["evaluated_on"] == 180
    assert int8["keras_accuracy"] > 0.6  # a model that learned something
    assert abs(int8["accuracy"] - int8["keras_accuracy"]) <= 0.02
    assert result.tflite["float32"]["accuracy"] == pytest.approx(
        result.tflite["float32"]["keras_accuracy"], abs=0.01)
    assert int8["size_bytes"] < result.tflite["float32"]["size_bytes"]


def test_predict_images_answers_each_image_and_flags_the_bad_ones(trained, exported):
    _, _, (x_test, _) = trained
    result, _ = exported
    loaded = tf.saved_model.load(result.path)
    signature = loaded.signatures["predict_images"]
    good = [_encoded(x_test[0], "PNG"), _encoded(x_test[1], "JPEG")]
    out = signature(image_bytes=tf.constant([good[0], b"not an image", good[1]]))
    np.testing.assert_array_equal(out["valid"].numpy(), [True, False, True])
    probabilities = out["probabilities"].numpy()
    alone = signature(image_bytes=tf.constant(good))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities[[0, 2]], alone, atol=1e-6)
    np.testing.assert_array_equal(probabilities[1], 0.0)
    assert list(out["top_k_classes"].numpy()[1]) == [b"", b""]
    # Right headers, broken bodies: cut short, and an empty string.
    out = signature(image_bytes=tf.constant([good[0][:40], good[0], b""]))
    np.testing.assert_array_equal(out["valid"].numpy(), [False, True, False])
    np.testing.assert_allclose(out["probabilities"].numpy()[1], alone[0], atol=1e-6)
    out = loaded.signatures["serving_default"](images=tf.zeros([1, 50, 40, 3]))  # resized
    assert out["probabilities"].shape == (1, 3)
    manifest = json.loads(open(os.path.join(result.path, "export_manifest.json")).read())
    assert manifest["signatures"]["predict_images"]["outputs"]["valid"] == ["bool", [None]]
    assert "valid=false" in manifest["signature_outputs"]["valid"]


def test_a_rest_request_with_a_bad_image_is_answered_per_instance(trained, exported, tmp_path):
    _, _, (x_test, _) = trained
    result, _ = exported
    paths = [tmp_path / "0.png", tmp_path / "notes.txt", tmp_path / "2.png"]
    paths[0].write_bytes(_encoded(x_test[0], "PNG"))
    paths[1].write_text("not an image")
    paths[2].write_bytes(_encoded(x_test[2], "PNG"))
    body = json.loads(json.dumps(tftransfer.rest_request_body(paths)))
    signature = tf.saved_model.load(result.path).signatures[body["signature_name"]]
    blobs = [base64.b64decode(instance["image_bytes"]["b64"]) for instance in body["instances"]]
    out = signature(image_bytes=tf.constant(blobs))
    # TF Serving's row format answers one prediction per instance, the flag among them.
    assert out["valid"].numpy().tolist() == [True, False, True]
    sums = out["probabilities"].numpy().sum(axis=-1)
    np.testing.assert_allclose(sums, [1.0, 0.0, 1.0], atol=1e-5)


def test_tflite_runs_on_litert_and_falls_back_to_tf_lite_quietly(exported, monkeypatch):
    pytest.importorskip("ai_edge_litert")
    import importlib
    import warnings

    tflite = importlib.import_module("tftransfer.export.tflite")
    result, _ = exported
    with open(result.tflite["float32"]["path"], "rb") as handle:
        content = handle.read()
    assert type(tflite._interpreter(content)).__module__.startswith("ai_edge_litert")
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    on_litert = tftransfer.tflite_predict(content, images)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # not installed
    assert type(tflite._interpreter(content)).__module__.startswith("tensorflow")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tf.lite.Interpreter's deprecation warning is hidden
        on_tf_lite = tftransfer.tflite_predict(content, images)
    np.testing.assert_allclose(on_litert, on_tf_lite, atol=1e-6)


def test_bad_export_arguments(trained, exported, tmp_path):
    model = trained[0]
    result, root = exported
    with pytest.raises(ValueError, match="top_k: top-k classes need class names"):
        tftransfer.export(model, tmp_path / "m", top_k=3)
    with pytest.raises(ValueError, match=r"path: '\.\./x' contains '\.\.'"):
        tftransfer.export(model, "../x", class_names=list(TARGET_CLASSES))
    with pytest.raises(ValueError, match="escapes the export root"):
        tftransfer.export(model, "/etc/x", root=tmp_path, class_names=list(TARGET_CLASSES))
    with pytest.raises(ValueError, match="exists already.*overwrite=True"):
        tftransfer.export(model, root / "shapes", version=1, class_names=list(TARGET_CLASSES))
    with pytest.raises(ValueError, match="tflite='int8' needs representative_data"):
        tftransfer.export(model, tmp_path / "m", tflite="int8")


def test_versions_count_up_and_overwrite_replaces(trained, tmp_path):
    model = trained[0]
    first = tftransfer.export(model, tmp_path / "m", parity=False)
    second = tftransfer.export(model, tmp_path / "m", parity=False)
    assert (first.version, second.version) == (1, 2)
    assert "top_k_classes" not in first.signatures["serving_default"]["outputs"]
    again = tftransfer.export(model, tmp_path / "m", version=1, overwrite=True, parity=False)
    assert again.version == 1
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2", "models.config"]


def test_a_killed_export_leaves_no_version_and_the_next_succeeds(trained, tmp_path):
    model = trained[0]
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    code = textwrap.dedent(f"""
        import os, signal, keras, tftransfer
        from tftransfer.export import saved_model
        def killed(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)  # killed after the SavedModel is written
        saved_model._write_manifest = killed
        model = keras.models.load_model(r"{model_path}")
        tftransfer.export(model, r"{tmp_path / 'served'}", parity=False)
    """)
    killed = _run(code)
    assert killed.returncode == -signal.SIGKILL
    leftovers = os.listdir(tmp_path / "served")
    assert not any(name.isdigit() for name in leftovers)  # TF Serving sees no version
    assert any(name.startswith(".tftransfer-tmp-") for name in leftovers)
    result = tftransfer.export(model, tmp_path / "served", parity=False)
    assert result.version == 1
    assert sorted(os.listdir(tmp_path / "served")) == ["1", "models.config"]


def test_hub_and_text_models_export_with_their_variables(tmp_path):
    image_module = hub_modules.write_image_module(tmp_path / "image_module")
    model = tftransfer.build_classifier("tfhub:" + image_module, 2, image_size=16)
    tftransfer.unfreeze(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 16, 16, 3)).astype("float32")
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, np.arange(16) % 2, epochs=2, verbose=0)
    result = tftransfer.export(model, tmp_path / "hub", sample_inputs=x)
    assert result.parity_max_abs_diff <= 1e-5

    text_module = hub_modules.write_text_module(tmp_path / "text_module")
    text_model = tftransfer.build_text_classifier("tfhub:" + text_module, 2)
    text_result = tftransfer.export(text_model, tmp_path / "text", class_names=["neg", "pos"])
    assert text_result.parity_max_abs_diff <= 1e-5
    assert set(text_result.signatures) == {"serving_default"}
    assert text_result.signatures["serving_default"]["inputs"] == {"texts": ("string", [None])}
    loaded = tftransfer.load_model(tmp_path / "text")
    out = loaded.signatures["serving_default"](texts=tf.constant(["good", "bad"]))
    assert out["top_k_classes"].shape == (2, 2)


def test_load_model_reads_keras_files_and_export_folders(trained, exported, tmp_path):
    model, _, (x_test, _) = trained
    model.save(tmp_path / "m.keras")
    reloaded = tftransfer.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded.predict(x_test[:4], verbose=0),
                               model.predict(x_test[:4], verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="neither a .keras file"):
        tftransfer.load_model(tmp_path)
