"""Security: safe loading, safe parsing, paths that stay in their root, no open ports."""

import ast
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.training.anchoring import anchor_to_pretrained
from tftransfer.training.distillation import PackedAccuracy, PackedDistillationLoss
from tftransfer.training.schedules import WarmupCosine

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from hub_modules import write_image_module  # noqa: E402
from text_fixtures import TEXTS, make_tiny_preset  # noqa: E402

PACKAGE = pathlib.Path(tftransfer.__file__).parent


def _registered_names(path):
    """The `tftransfer>...` objects a .keras file's config refers to."""
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode()
    names = set()

    def walk(node):
        if isinstance(node, dict):
            name = node.get("registered_name")
            if isinstance(name, str) and name.startswith("tftransfer>"):
                names.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(config))
    return names


def _no_lambda(model):
    for layer in model._flatten_layers(include_self=True, recursive=True):
        assert not isinstance(layer, keras.layers.Lambda), f"{model.name}: {layer.name} is a Lambda"


def _tiny_vit_preset(folder):
    import keras_hub

    keras.utils.set_random_seed(0)
    keras_hub.models.ViTBackbone(image_shape=(32, 32, 3), patch_size=8, num_layers=1,
                                 num_heads=2, hidden_dim=16, mlp_dim=32).save_to_preset(folder)
    keras_hub.layers.ViTImageConverter(image_size=(32, 32), scale=1 / 127.5,
                                       offset=-1.0).save_to_preset(folder)
    return folder


def test_every_registered_object_round_trips_under_safe_mode(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    hub = write_image_module(tmp_path / "hub_module")
    tftransfer.backbones.trust_hub_handles(hub)
    classifier = tftransfer.build_classifier("MobileNetV2", 3, image_size=32, weights=None)
    anchored = anchor_to_pretrained(
        tftransfer.unfreeze(tftransfer.build_classifier("FashionCNN", 3), blocks=1), 0.01)
    anchored.compile(keras.optimizers.Adam(WarmupCosine(1e-3, 10)), PackedDistillationLoss(),
                     metrics=[PackedAccuracy()])
    artifacts = {
        "classifier": classifier,
        "hub": tftransfer.build_classifier(f"tfhub:{hub}", 3, image_size=32),
        "anchored_and_compiled": anchored,
        "distiller": tftransfer.Distiller(classifier, tftransfer.build_classifier(
            "FashionCNN", 3)),
        # A KerasHub text model: tokenizer, encoder and pooling are tftransfer layers.
        "text": tftransfer.build_text_classifier(
            str(make_tiny_preset(tmp_path / "tiny_preset")), 3, dropout_rate=0.0),
        # A KerasHub image model: preprocessing, backbone and token pooling are tftransfer
        # layers.
        "vit": tftransfer.build_classifier(f"kerashub:{_tiny_vit_preset(tmp_path / 'vit')}",
                                           3),
    }
    texts = np.array(TEXTS[:4], dtype=object)
    seen = set()
    for name, model in artifacts.items():
        _no_lambda(model)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = tftransfer.load_model(path)  # safe_mode=True
        seen |= _registered_names(path)
        if name != "distiller":
            inputs = texts if name == "text" else x
            np.testing.assert_allclose(loaded.predict(inputs, verbose=0),
                                       model.predict(inputs, verbose=0),
                                       rtol=1e-5, atol=1e-6, err_msg=name)
    # L2SP lives on the backbone only while fine-tuning (release_anchor removes
    # it), so it is not in a saved file: its config round-trips on its own.
    anchor = keras.saving.serialize_keras_object(
        anchor_to_pretrained.__globals__["L2SP"](np.ones(3), 0.5))
    with keras.saving.custom_object_scope({}):
        restored = keras.saving.deserialize_keras_object(anchor, safe_mode=True)
    assert float(restored(np.zeros(3))) == pytest.approx(1.5)
    seen.add(anchor["registered_name"])
    registered = {key for key in keras.saving.get_custom_objects()
                  if key.startswith("tftransfer>")}
    assert registered <= seen, f"registered but not round-tripped: {registered - seen}"


def test_a_keras_file_carrying_code_is_refused(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="safe_mode"):
        tftransfer.load_model(tmp_path / "lambda.keras")


UNSAFE_CALLS = {"eval", "exec", "compile", "__import__"}
UNSAFE_ATTRIBUTES = {("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                     ("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"),
                     ("os", "system"), ("os", "popen")}


def test_no_eval_exec_unsafe_yaml_pickle_or_shell_in_the_package():
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            function = node.func
            if isinstance(function, ast.Name) and function.id in UNSAFE_CALLS:
                found.append(f"{path.name}:{node.lineno} {function.id}()")
            if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) \
                    and (function.value.id, function.attr) in UNSAFE_ATTRIBUTES:
                found.append(f"{path.name}:{node.lineno} {function.value.id}.{function.attr}()")
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                                   and keyword.value.value is False):
                    found.append(f"{path.name}:{node.lineno} shell=")
    assert not found, found


def test_a_yaml_config_with_python_tags_runs_nothing(tmp_path):
    from tftransfer import cli

    marker = tmp_path / "pwned"
    config = tmp_path / "run.yaml"
    config.write_text(f'epochs: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert cli.main(["train", str(tmp_path), "--config", str(config)]) == 2
    assert not marker.exists()


def test_exports_stay_inside_their_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    model = tftransfer.build_classifier("FashionCNN", 3)
    for path in ["../escape", "link/model", str(outside / "model"), "a/../../escape"]:
        with pytest.raises(ValueError, match="path"):
            tftransfer.export(model, path, root=root)
    assert not any(outside.iterdir())


def test_a_search_stays_inside_its_directory(tmp_path):
    x = np.zeros((8, 32, 32, 3), "float32")
    data = tftransfer.data.from_arrays(x, np.arange(8) % 2)
    with pytest.raises(ValueError, match="project_name"):
        tftransfer.tune("FashionCNN", data, directory=tmp_path / "tuning",
                        project_name="../outside")
    assert not (tmp_path / "outside").exists()


_NO_PORTS_SCRIPT = textwrap.dedent("""
    import json, os, socket, sys
    listened = []
    original_listen = socket.socket.listen
    socket.socket.listen = lambda self, *a: (listened.append(repr(self.getsockname())),
                                             original_listen(self, *a))[1]
    import numpy as np, psutil, tftransfer
    folder = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    y = np.arange(32) % 2
    data = tftransfer.data.from_arrays(x, y, validation_split=0.25, batch_size=8)
    model = tftransfer.build_classifier("FashionCNN", 2)
    result = tftransfer.fit(model, data, head_epochs=1, fine_tune_epochs=1, verbose=0,
                            checkpoint_dir=os.path.join(folder, "ckpt"), tensorboard=True)
    tftransfer.tune("FashionCNN", data, max_trials=1, head_epochs=1, fine_tune_epochs=1,
                    directory=os.path.join(folder, "tuning"))
    tftransfer.evaluate(result.model, data.validation, top_losses=0)
    tftransfer.export(result.model, os.path.join(folder, "export"))
    listening = [c for c in psutil.Process().net_connections(kind="all")
                 if c.status == psutil.CONN_LISTEN]
    print(json.dumps({"listened": listened, "listening": [str(c.laddr) for c in listening]}))
""")


def test_nothing_opens_a_network_port_unless_asked(tmp_path):
    script = tmp_path / "no_ports.py"
    script.write_text(_NO_PORTS_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    # (urllib3 binds ::1 port 0 once at import to probe for IPv6; nothing listens.)
    assert report == {"listened": [], "listening": []}
