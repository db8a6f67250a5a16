"""The `tftransfer` command, on a real folder dataset (the shipped demo set)."""

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

import tftransfer
from tftransfer import cli


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A small copy of the demo set: train/ and test/ class folders of PNG files."""
    root = tmp_path_factory.mktemp("cli_data")
    for split, count in (("train", 12), ("test", 6)):
        source = tftransfer.datasets.demo_target_folder(split)
        for name in sorted(os.listdir(source))[:3]:
            os.makedirs(root / split / name)
            for image in sorted(os.listdir(os.path.join(source, name)))[:count]:
                shutil.copy(os.path.join(source, name, image), root / split / name / image)
    return root


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tftransfer: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_train_evaluate_export_predict_on_a_folder(folder, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("head-epochs: 2\nfine_tune_epochs: 1\nunfreeze_blocks: 1\n"
                      "head_learning_rate: 0.003\n")
    run = tmp_path / "run"
    assert cli.main(["train", str(folder), "--config", str(config), "--output", str(run),
                     "--fine-tune-epochs", "2", "--export", str(tmp_path / "saved")]) == 0
    out = capsys.readouterr().out
    assert (run / "model.keras").exists()
    assert json.loads((run / "model.classes.json").read_text()) == ["ankle_boot", "bag", "sandal"]
    card = tmp_path / "saved" / "report_v1" / "model_card.md"
    assert card.exists() and "evaluation (test split)" in out
    history = json.loads(open(tmp_path / "saved" / "report_v1" / "evaluation.json").read())
    assert history["count"] == 18  # the folder's test/ split
    # Flags win over the config file: 2 head epochs (file) + 2 fine-tuning (flag).
    assert "2 head, 2 fine-tuning" in card.read_text()

    assert cli.main(["evaluate", str(run / "model.keras"), str(folder), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["count"] == 18 and figures["class_names"] == ["ankle_boot", "bag", "sandal"]
    assert figures["accuracy"] == pytest.approx(history["accuracy"], abs=1e-6)
    # The export gives the same figures as the .keras file.
    assert cli.main(["evaluate", str(tmp_path / "saved"), str(folder), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported["accuracy"] == pytest.approx(figures["accuracy"], abs=1e-6)

    assert cli.main(["export", str(run / "model.keras"), str(tmp_path / "saved")]) == 0
    out = capsys.readouterr().out
    assert os.path.isdir(tmp_path / "saved" / "2") and "docker run" in out

    images = sorted(str(p) for p in (folder / "test" / "bag").iterdir())[:2]
    for model in (str(run / "model.keras"), str(tmp_path / "saved")):
        assert cli.main(["predict", model, *images, "--json", "--top-k", "2"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        assert [row["file"] for row in rows] == images
        assert all(len(row["classes"]) == 2 and set(row["classes"]) <= {
            "ankle_boot", "bag", "sandal"} for row in rows)
        assert all(row["scores"][0] >= row["scores"][1] for row in rows)

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    for model in (str(run / "model.keras"), str(tmp_path / "saved")):
        assert cli.main(["predict", model, images[0], str(notes)]) == 2
        _one_error_line(capsys, "1 file(s) do not decode as images", repr(str(notes)))


def test_mistakes_are_one_line_and_exit_code_2(folder, tmp_path, capsys):
    missing = str(tmp_path / "missing")
    assert cli.main(["train", missing]) == 2
    _one_error_line(capsys, "does not exist")
    assert cli.main(["train", str(folder), "--backbone", "resnet5"]) == 2
    _one_error_line(capsys, "unknown backbone 'resnet5'", "ResNet50")
    assert cli.main(["tune", missing]) == 2
    _one_error_line(capsys, "does not exist")
    assert cli.main(["evaluate", missing + ".keras", str(folder)]) == 2
    _one_error_line(capsys, "does not exist")
    assert cli.main(["export", missing + ".keras", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, "no file")
    assert cli.main(["predict", missing, "image.png"]) == 2
    _one_error_line(capsys, "does not exist")
    assert cli.main(["backbones", "info", "resnet5"]) == 2
    _one_error_line(capsys, "unknown backbone")
    assert cli.main(["train"]) == 2  # argparse's own errors are one line too
    _one_error_line(capsys, "required: data")
    assert cli.main(["train", str(folder), "--head-epochs", "two"]) == 2
    _one_error_line(capsys, "invalid int or 'auto' value: 'two'")


def _without_tf_logging_settings():
    return {key: value for key, value in os.environ.items()
            if key not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL")}


def test_the_command_starts_quietly():
    first = tftransfer.list_backbones()[0]
    script = os.path.join(os.path.dirname(sys.executable), "tftransfer")
    commands = [[sys.executable, "-m", "tftransfer", "backbones", "list"]]
    if os.path.isfile(script):  # the console script, as installed by pip install -e .
        commands.append([script, "backbones", "list"])
    for command in commands:
        run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                             env=_without_tf_logging_settings())
        assert run.returncode == 0, run.stderr
        assert run.stderr == "", run.stderr  # no absl, oneDNN, CUDA stub or CPU guard lines
        assert run.stdout.splitlines()[0] == first
    # --verbose is accepted before or after the subcommand, and keeps TensorFlow's lines.
    for flags in (["--verbose", "backbones", "list"], ["backbones", "list", "--verbose"]):
        run = subprocess.run([sys.executable, "-m", "tftransfer", *flags], capture_output=True,
                             text=True, timeout=300, env=_without_tf_logging_settings())
        assert run.returncode == 0 and run.stdout.splitlines()[0] == first, run.stderr


def test_quiet_start_applies_to_the_command_only():
    from tftransfer import _startup

    assert _startup.invoked_as_command(["/venv/bin/tftransfer", "train"], [])
    assert _startup.invoked_as_command(["-m"], ["python", "-u", "-m", "tftransfer", "train"])
    assert not _startup.invoked_as_command(["-m"], ["python", "-m", "pytest"])
    assert not _startup.invoked_as_command(["script.py"], ["python", "script.py"])
    assert _startup.wants_quiet(["tftransfer", "backbones", "list"], {})
    assert _startup.wants_quiet(["tftransfer", "train"], {"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert not _startup.wants_quiet(["tftransfer", "train", "--verbose"], {})
    assert not _startup.wants_quiet(["tftransfer", "train"], {"TF_CPP_MIN_LOG_LEVEL": "0"})


def test_config_files_are_parsed_safely(folder, tmp_path, capsys):
    unsafe = tmp_path / "unsafe.yaml"
    marker = tmp_path / "pwned"
    unsafe.write_text(f"head_epochs: !!python/object/apply:os.system ['touch {marker}']\n")
    assert cli.main(["train", str(folder), "--config", str(unsafe)]) == 2
    _one_error_line(capsys, "does not parse")
    assert not marker.exists()  # yaml.safe_load never runs it
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"head_epochs": 1, "epochz": 3}))
    assert cli.main(["train", str(folder), "--config", str(unknown)]) == 2
    _one_error_line(capsys, "unknown option(s) ['epochz']")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert cli.main(["train", str(folder), "--config", str(listed)]) == 2
    _one_error_line(capsys, "mapping")
    assert cli.load_config(str(unknown), ["head_epochs", "epochz"]) == {"head_epochs": 1,
                                                                         "epochz": 3}


def test_help_everywhere(capsys):
    for command in ([], ["backbones"], ["train"], ["tune"], ["evaluate"], ["export"],
                    ["predict"], ["demo"], ["distill"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(command + ["--help"])
        assert exit_info.value.code == 0
        assert "usage: tftransfer" in capsys.readouterr().out


@pytest.mark.slow
def test_distill_a_student_from_a_teacher_file(folder, tmp_path, capsys):
    assert cli.main(["train", str(folder), "--output", str(tmp_path / "teacher"),
                     "--head-epochs", "1", "--fine-tune-epochs", "1"]) == 0
    capsys.readouterr()
    teacher = str(tmp_path / "teacher" / "model.keras")
    assert cli.main(["distill", teacher, str(folder), "--student", "FashionCNN", "--weights",
                     "none", "--head-epochs", "1", "--fine-tune-epochs", "1", "--image-size",
                     "24", "--output", str(tmp_path / "student")]) == 0
    out = capsys.readouterr().out
    assert "student evaluation" in out and (tmp_path / "student" / "student.keras").exists()
    student = tftransfer.load_model(str(tmp_path / "student" / "student.keras"))
    assert student.input_shape == (None, 24, 24, 3)  # the teacher ran at its own 32x32
    assert cli.main(["distill", teacher, str(folder), "--temperature", "0"]) == 2
    _one_error_line(capsys, "temperature")
    assert cli.main(["distill", str(tmp_path / "none.keras"), str(folder)]) == 2
    _one_error_line(capsys, "teacher")


def test_predict_names_bad_files_on_an_export_without_valid(tmp_path):
    import numpy as np
    import tensorflow as tf

    def predict_images(image_bytes):  # an export made before `valid`: one bad image fails all
        if any(not bytes(b).startswith(b"\x89PNG") for b in image_bytes.numpy()):
            raise tf.errors.InvalidArgumentError(None, None, "Graph execution error:")
        return {"probabilities": tf.fill([len(image_bytes), 2], 0.5)}

    class OldExport:
        signatures = {"predict_images": predict_images}

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(tf.io.encode_png(np.zeros((4, 4, 3), np.uint8)).numpy())
    bad.write_bytes(b"GIF89a broken")
    with pytest.raises(cli.UsageError, match=r"1 file\(s\) do not decode.*bad\.png'$"):
        cli.predict_files(OldExport(), ["a", "b"], [str(good), str(bad)])
    assert cli.predict_files(OldExport(), ["a", "b"], [str(good)], top_k=1)[0]["scores"] == [0.5]


def _subcommands():
    parser = cli.build_parser()
    (commands,) = [action for action in parser._actions
                   if isinstance(action, argparse._SubParsersAction)]
    return commands.choices


def test_every_flag_has_help_that_shows_its_default():
    for name, parser in _subcommands().items():
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.option_strings == ["-h", "--help"]:
                continue
            flag = action.option_strings[-1]
            assert action.help, f"{name} {flag} has no help"
            assert "default:" in parser._get_formatter()._format_action(action), (name, flag)
        assert "(default: None)" not in text, name
    train = _subcommands()["train"].format_help()
    assert "(default: auto)" in " ".join(train.split())  # --head-epochs: fit's own budget


def _copy_with_a_broken_file(folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    broken = data / "train" / "bag" / "notes.png"
    broken.write_text("not an image")
    return data, broken


@pytest.mark.slow
def test_train_piped_prints_one_line_per_epoch_and_one_line_warnings(folder, tmp_path, capsys):
    data, broken = _copy_with_a_broken_file(folder, tmp_path)
    # Random weights and a learning rate too small to learn anything: a result at chance.
    assert cli.main(["train", str(data), "--weights", "none", "--head-epochs", "2",
                     "--fine-tune-epochs", "1", "--head-learning-rate", "1e-9",
                     "--fine-tune-learning-rate", "1e-9", "--seed", "0",
                     "--output", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    for control in ("\x1b", "\r", "\x08", "━"):
        assert control not in captured.out, repr(control)
    epochs = [line for line in out if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2", "epoch 3/3"]
    assert all("accuracy" in line and "loss" in line for line in epochs)
    assert "head phase: epochs 1-2" in out and "fine-tuning: epochs 3-3" in out
    assert not any(line.startswith("Epoch ") for line in out)  # no Keras progress lines
    err = captured.err.strip().splitlines()
    assert all(line.startswith("tftransfer: warning: ") for line in err), captured.err
    (skipped,) = [line for line in err if "unreadable" in line]
    assert str(broken) in skipped and "UserWarning" not in captured.err
    (chance,) = [line for line in err if "near chance" in line]
    assert "--head-epochs" in chance and "--weights imagenet" in chance


def test_chance_warning_only_near_chance():
    import keras
    import numpy as np

    inputs = keras.Input((3,))
    identity = keras.Model(inputs, keras.layers.Activation("linear")(inputs))
    labels = np.arange(30) % 3
    right = np.eye(3, dtype="float32")[labels] * 0.9 + 0.1 / 3
    assert cli.chance_warning(tftransfer.evaluate(identity, (right, labels))) is None
    constant = np.tile(np.array([[0.5, 0.3, 0.2]], "float32"), (30, 1))
    note = cli.chance_warning(tftransfer.evaluate(identity, (constant, labels)), "test")
    assert note.startswith("test accuracy 0.333 is near chance (0.333")


@pytest.mark.slow
def test_train_with_every_default_on_the_shipped_demo_folder(tmp_path, capsys):
    """The acceptance of issue 23: `tftransfer train <demo train folder> --backbone
    FashionCNN`, every other option at its default, reaches the demo's accuracy (0.908
    measured) on the shipped test images."""
    train = tftransfer.datasets.demo_target_folder("train")
    test = tftransfer.datasets.demo_target_folder("test")
    run = tmp_path / "run"
    assert cli.main(["train", train, "--backbone", "FashionCNN", "--output", str(run)]) == 0
    captured = capsys.readouterr()
    assert "near chance" not in captured.err
    assert "top-5" not in captured.out  # five classes: top-5 accuracy would always be 1
    assert "top-5" not in (run / "report" / "model_card.md").read_text()
    assert cli.main(["evaluate", str(run / "model.keras"), test, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["count"] == 500 and figures["top_k"] is None
    assert figures["accuracy"] >= 0.85, figures["accuracy"]


def test_a_quiet_session_drops_only_the_known_lines():
    from tftransfer import _startup

    patterns = _startup.noise_patterns(has_nvidia_driver=False)
    assert _startup.is_noise("W0000 00:00:1796032957.410199    1587 "
                             "tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.", patterns)
    assert not _startup.is_noise("Traceback (most recent call last):", patterns)
    cuinit = ("E0000 00:00:1796032935.647198    1587 cuda_platform.cc:52] failed call to cuInit: "
              "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
    assert _startup.is_noise(cuinit, patterns)
    assert not _startup.is_noise(cuinit, _startup.noise_patterns(has_nvidia_driver=True))
    script = ("import os, warnings\nimport tftransfer, tensorflow as tf\n"
              "tf.constant(1.0) + 1\n"
              "os.write(2, b'a real error\\n')\n"
              "warnings.warn('Warning: tf.lite.Interpreter is deprecated and will be removed')\n"
              "warnings.warn('a real warning')\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env={**_without_tf_logging_settings(),
                                           "TFTRANSFER_QUIET": "1"})
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == "a real error" and "UserWarning: a real warning" in lines[1], run.stderr
    assert [line for line in lines if "a real" not in line] == [], run.stderr  # nothing else


def test_rank_ranks_candidates_from_the_command_line(folder, tmp_path, capsys):
    # `tftransfer rank` is wired into the command (tftransfer/selection/cli.py).
    assert cli.main(["rank", str(folder / "train"), "--backbones", "FashionCNN,MobileNetV2",
                     "--weights", "none", "--image-size", "32", "--json",
                     str(tmp_path / "ranking.json")]) == 0
    out = capsys.readouterr().out
    assert "FashionCNN" in out and "MobileNetV2" in out and "best:" in out
    ranking = json.loads((tmp_path / "ranking.json").read_text())
    assert "FashionCNN" in json.dumps(ranking) and "MobileNetV2" in json.dumps(ranking)
