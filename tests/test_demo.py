import re

import keras
import numpy as np
import pytest

from tftransfer import cli
from tftransfer.demo import synthetic_images


def test_synthetic_images_are_labelled_and_in_pixel_range():
    x, y = synthetic_images("target", 5, image_size=24, seed=3)
    assert x.shape == (15, 24, 24, 3) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 255
    assert np.bincount(y).tolist() == [5, 5, 5]
    with pytest.raises(ValueError, match="task"):
        synthetic_images("other", 1)


@pytest.mark.slow
def test_demo_command_transfers_and_reloads(tmp_path, capsys):
    assert cli.main(["demo", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    transfer = float(re.search(r"transfer \(pretrained backbone\): ([0-9.]+)", out).group(1))
    scratch = float(re.search(r"from scratch: ([0-9.]+)", out).group(1))
    # The point of the demo: the pretrained backbone beats scratch on few labels.
    assert transfer > scratch + 0.05
    model_path = tmp_path / "demo_classifier.keras"
    reloaded = keras.models.load_model(model_path, safe_mode=True)
    x, y = synthetic_images("target", 30, seed=3)
    accuracy = float(np.mean(np.argmax(reloaded.predict(x, verbose=0), axis=1) == y))
    assert abs(accuracy - transfer) < 0.15


def test_cli_backbones_list_and_info(capsys):
    assert cli.main(["backbones", "list"]) == 0
    listed = capsys.readouterr().out.split()
    assert "EfficientNetB0" in listed and len(listed) == 40
    assert cli.main(["backbones", "info", "mobilenetv2"]) == 0
    out = capsys.readouterr().out
    assert "feature dimension: 1280" in out and "block_16" in out


def test_cli_unknown_backbone_is_one_line_and_exit_code_2(capsys):
    assert cli.main(["backbones", "info", "resnet5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tftransfer: error: backbone: unknown backbone 'resnet5'")
    assert err.count("\n") == 1
