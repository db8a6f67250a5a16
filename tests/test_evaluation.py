import re

import keras
import numpy as np
import pytest

import tftransfer
from tftransfer.evaluation import evaluate, write_report

# Rows are the model's probabilities: an identity model returns them as they are.
PROBABILITIES = np.array([
    [0.7, 0.2, 0.1],  # label 0, right, confident
    [0.6, 0.3, 0.1],  # label 0, right
    [0.2, 0.5, 0.3],  # label 0, wrong (1), 0 in the top 2
    [0.1, 0.8, 0.1],  # label 1, right
    [0.5, 0.4, 0.1],  # label 1, wrong (0)
    [0.1, 0.1, 0.8],  # label 2, right
], dtype="float32")
LABELS = np.array([0, 0, 0, 1, 1, 2])


def _identity(classes=3):
    inputs = keras.Input((classes,))
    return keras.Model(inputs, keras.layers.Activation("linear")(inputs))


def test_figures_match_a_hand_count():
    result = evaluate(_identity(), (PROBABILITIES, LABELS), class_names=["a", "b", "c"],
                      top_k=2, top_losses=2, bins=10)
    assert result.accuracy == pytest.approx(4 / 6)
    # Top 2: only row 2 misses (its label 0 is third).
    assert result.top_k == 2 and result.top_k_accuracy == pytest.approx(5 / 6)
    assert result.confusion_matrix.tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert result.per_class["a"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert result.per_class["b"]["precision"] == pytest.approx(0.5)
    assert result.per_class["c"]["f1"] == pytest.approx(1.0)
    assert result.macro_f1 == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    expected_loss = -np.mean(np.log(PROBABILITIES[np.arange(6), LABELS]))
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    # Calibration error over bins of width 0.1, recomputed here.
    confidence = PROBABILITIES.max(axis=1)
    correct = PROBABILITIES.argmax(axis=1) == LABELS
    bins = np.clip(np.ceil(confidence * 10).astype(int) - 1, 0, 9)
    expected_ece = sum(np.mean(bins == b) * abs(confidence[bins == b].mean()
                                                 - correct[bins == b].mean())
                       for b in set(bins.tolist()))
    assert result.calibration_error == pytest.approx(expected_ece, abs=1e-6)
    # Top losses, worst first: row 2 (p=0.2 for its label) then row 4 (p=0.4).
    assert [entry["index"] for entry in result.top_losses] == [2, 4]
    assert result.top_losses[0]["label"] == "a" and result.top_losses[0]["predicted"] == "b"
    assert result.top_losses[0]["loss"] == pytest.approx(-np.log(0.2), rel=1e-5)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="labels must be in"):
        evaluate(_identity(), (PROBABILITIES, LABELS + 5))
    with pytest.raises(ValueError, match="not probabilities"):
        evaluate(_identity(), (PROBABILITIES * 3, LABELS))
    with pytest.raises(ValueError, match="class_names: 2 names"):
        evaluate(_identity(), (PROBABILITIES, LABELS), class_names=["a", "b"])
    with pytest.raises(ValueError, match="top_k"):
        evaluate(_identity(), (PROBABILITIES, LABELS), top_k=0)
    with pytest.raises(TypeError, match="keras.Model or a SavedModel"):
        evaluate(object(), (PROBABILITIES, LABELS))
    with pytest.raises(ValueError, match="6 inputs but 2 labels"):
        evaluate(_identity(), (PROBABILITIES, LABELS[:2]))


def test_report_numbers_equal_evaluate_and_plots_are_pngs(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (40, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean(axis=(1, 2)) > 127).astype("int64")
    data = tftransfer.data.from_arrays(x, y, validation_split=0.25, class_names=["dark", "light"])
    model = tftransfer.build_classifier("FashionCNN", 2, image_size=32, weights=None)
    training = tftransfer.fit(model, data, head_epochs=1, fine_tune_epochs=1, verbose=0)
    evaluation = evaluate(training.model, data, top_losses=4)
    assert evaluation.count == 10 and evaluation.class_names == ["dark", "light"]
    card = write_report(tmp_path / "report", evaluation, training=training, backbone="FashionCNN")
    text = open(card).read()

    def row(name):
        return float(re.search(rf"^\| {re.escape(name)} \| ([0-9.]+) \|$", text, re.M).group(1))

    assert row("accuracy") == pytest.approx(evaluation.accuracy, abs=5e-5)
    assert row("macro F1") == pytest.approx(evaluation.macro_f1, abs=5e-5)
    assert row("calibration error (ECE)") == pytest.approx(evaluation.calibration_error, abs=5e-5)
    assert row("loss (cross-entropy)") == pytest.approx(evaluation.loss, abs=5e-5)
    for name, figures in evaluation.per_class.items():
        line = re.search(rf"^\| {name} \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| (\d+) \|$",
                         text, re.M)
        assert [float(v) for v in line.groups()[:3]] == pytest.approx(
            [figures["precision"], figures["recall"], figures["f1"]], abs=5e-5)
        assert int(line.group(4)) == figures["support"]
    for png in ("training_curves.png", "confusion_matrix.png", "reliability.png",
                "top_losses.png"):
        content = (tmp_path / "report" / png).read_bytes()
        assert content.startswith(b"\x89PNG") and len(content) > 5000
        assert f"]({png})" in text
    lr = tftransfer.find_learning_rate(training.model, data, steps=10,
                                       plot_path=tmp_path / "lr.png")
    assert (tmp_path / "lr.png").read_bytes().startswith(b"\x89PNG") and lr.plot_path


def test_plot_history_marks_the_phase_boundary(tmp_path, monkeypatch):
    import matplotlib.axes

    lines = []
    original = matplotlib.axes.Axes.axvline
    monkeypatch.setattr(matplotlib.axes.Axes, "axvline",
                        lambda self, x=0, *a, **k: lines.append(x) or original(self, x, *a, **k))
    history = {"loss": [1.0, 0.8, 0.6, 0.5], "val_loss": [1.1, 0.9, 0.8, 0.7],
               "accuracy": [0.5, 0.6, 0.7, 0.8], "phase": ["head", "head", "fine_tune",
                                                            "fine_tune"]}
    path = tftransfer.evaluation.plot_history(history, tmp_path / "curves.png")
    assert open(path, "rb").read(4) == b"\x89PNG"
    assert lines == [2.5, 2.5]  # between epoch 2 (head) and 3 (fine-tuning), on both plots
    with pytest.raises(ValueError, match="history"):
        tftransfer.evaluation.plot_history({"phase": ["head"]}, tmp_path / "x.png")


def test_top_k_only_below_the_number_of_classes(tmp_path):
    # Three classes: top-3 accuracy is always 1, so it is not reported at all.
    result = evaluate(_identity(), (PROBABILITIES, LABELS), top_k=3)
    assert result.top_k is None and result.top_k_accuracy is None
    assert "top-" not in str(result) and result.to_dict()["top_k"] is None
    assert "top-" not in open(write_report(str(tmp_path / "none"), result)).read()
    result = evaluate(_identity(), (PROBABILITIES, LABELS), top_k=2)
    assert "top-2 accuracy 0.8333" in str(result)
    assert "| top-2 accuracy | 0.8333 |" in open(write_report(str(tmp_path / "two"),
                                                              result)).read()
