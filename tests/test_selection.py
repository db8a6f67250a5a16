"""Ranking backbones before training: LogME, kNN accuracy, the linear probe, rank_backbones."""

import json

import keras
import numpy as np
import pytest

from tftransfer.selection import (
    knn_score,
    linear_probe_score,
    logme_fit,
    logme_score,
    rank_backbones,
)
from tftransfer.selection.cli import add_rank_parser, rank_command

METHODS = {"logme": logme_score, "knn": knn_score, "probe": linear_probe_score}


def _direct_evidence(features, y, alpha, beta):
    """log N(y; 0, I / beta + F F^T / alpha) / N, computed without any SVD."""
    count = len(y)
    covariance = np.eye(count) / beta + features @ features.T / alpha
    _, log_det = np.linalg.slogdet(covariance)
    return (-0.5 * log_det - 0.5 * y @ np.linalg.solve(covariance, y)
            - count / 2.0 * np.log(2.0 * np.pi)) / count


def _blobs(count=60, classes=3, dimensions=8, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    centers = rng.normal(size=(classes, dimensions)) * 3.0
    return centers[labels] + spread * rng.normal(size=(count, dimensions)), labels


# --- LogME against the closed form --------------------------------------------------------


@pytest.mark.parametrize("count,dimensions", [(40, 5), (12, 30), (25, 25)])
def test_logme_is_the_maximum_of_the_evidence(count, dimensions):
    # More examples than features (the SVD correction for y outside span(F) matters), fewer
    # (the zero singular values' log(alpha) terms matter), and square.
    rng = np.random.default_rng(count)
    features = rng.normal(size=(count, dimensions))
    y = features[:, 0] - 0.5 * features[:, 1] + 0.7 * rng.normal(size=count)
    fit = logme_fit(features, y[:, None])
    alpha, beta = fit.alphas[0], fit.betas[0]
    # The score is the evidence formula at the fixed point...
    np.testing.assert_allclose(fit.evidences[0], _direct_evidence(features, y, alpha, beta),
                               rtol=1e-9)
    # ...and the fixed point is the maximum: moving alpha or beta lowers the evidence.
    for scale_alpha, scale_beta in [(1.1, 1), (0.9, 1), (1, 1.1), (1, 0.9)]:
        assert _direct_evidence(features, y, alpha * scale_alpha,
                                beta * scale_beta) < fit.evidences[0]
    # The posterior mean is the ridge solution at lambda = alpha / beta.
    ridge = np.linalg.solve(features.T @ features + alpha / beta * np.eye(dimensions),
                            features.T @ y)
    np.testing.assert_allclose(fit.weights[:, 0], ridge, rtol=1e-6, atol=1e-9)


def test_logme_matches_a_numerical_maximisation():
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(3)
    features = rng.normal(size=(30, 4))
    y = features @ np.array([1.0, -1.0, 0.0, 2.0]) + rng.normal(size=30)
    found = optimize.minimize(lambda p: -_direct_evidence(features, y, *np.exp(p)), [0.0, 0.0],
                              method="Nelder-Mead",
                              options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    fit = logme_fit(features, y[:, None])
    np.testing.assert_allclose(fit.evidences[0], -found.fun, rtol=1e-8)
    np.testing.assert_allclose([fit.alphas[0], fit.betas[0]], np.exp(found.x), rtol=1e-3)


def test_logme_closed_form_for_orthogonal_features():
    # F = c * [I_D; 0] and y with x_i = y_i on the first D rows, r = |rest of y|^2: the
    # evidence splits, and at the optimum beta = (N - gamma) / residual holds with
    # gamma = sum c^2 / (c^2 + alpha / beta); check both fixed-point equations by hand.
    count, dimensions, c = 10, 2, 3.0
    features = np.zeros((count, dimensions))
    features[:dimensions] = c * np.eye(dimensions)
    y = np.array([4.0, -2.0, 1.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0])
    fit = logme_fit(features, y[:, None])
    alpha, beta = fit.alphas[0], fit.betas[0]
    ratio = alpha / beta
    gamma = dimensions * c ** 2 / (c ** 2 + ratio)
    m = c * y[:dimensions] / (c ** 2 + ratio)
    residual = np.sum((y[:dimensions] - c * m) ** 2) + np.sum(y[dimensions:] ** 2)
    np.testing.assert_allclose(alpha, gamma / np.sum(m ** 2), rtol=1e-6)
    np.testing.assert_allclose(beta, (count - gamma) / residual, rtol=1e-6)
    np.testing.assert_allclose(fit.weights[:, 0], m, rtol=1e-6)


def test_logme_averages_one_hot_columns():
    features, labels = _blobs()
    one_hot = np.eye(3)[labels]
    expected = np.mean([logme_fit(features, one_hot[:, [i]]).evidences[0] for i in range(3)])
    np.testing.assert_allclose(logme_score(features, labels), expected, rtol=1e-12)
    # Regression targets: one evidence per column, averaged.
    np.testing.assert_allclose(logme_score(features, one_hot.astype("float32") + 0.0,
                                           task="regression"), expected, rtol=1e-12)


# --- properties every method shares -----------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_invariant_to_a_global_scaling_of_the_features(name):
    features, labels = _blobs(spread=2.0)
    reference = METHODS[name](features, labels)
    for scale in (1e-4, 1e3):
        np.testing.assert_allclose(METHODS[name](scale * features, labels), reference,
                                   rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_informative_features_outrank_random_ones(name, task):
    rng = np.random.default_rng(1)
    count = 90
    informative = rng.normal(size=(count, 6))
    noise = rng.normal(size=(count, 6))
    if task == "multiclass":
        labels = np.argmax(informative[:, :3], axis=1)
    elif task == "multilabel":
        labels = (informative[:, :3] > 0).astype("int64")
    else:
        labels = informative[:, :2] @ np.array([[1.0, 0.5], [-2.0, 1.0]])
    good = METHODS[name](informative, labels, task=task)
    bad = METHODS[name](noise, labels, task=task)
    assert good > bad + 0.05, (good, bad)


# --- kNN and the probe on toy sets whose scores are known --------------------------------


def test_knn_leave_one_out_by_hand():
    features = np.array([[0.0], [1.0], [3.0], [10.0], [11.0], [14.0]])
    labels = [0, 0, 1, 1, 1, 1]
    # k=1: the point at 3 has 1 (class 0) nearest -> 5 of 6.
    assert knn_score(features, labels, k=1) == pytest.approx(5 / 6)
    # k=3: 0 -> {1, 3, 10}: 0,1,1 -> 1 (wrong); 1 -> {0, 3, 10}: 0,1,1 -> 1 (wrong);
    # 3 -> {1, 0, 10}: 0,0,1 -> 0 (wrong); the three on the right are right -> 3 of 6.
    assert knn_score(features, labels, k=3) == pytest.approx(3 / 6)
    # Regression: the neighbour's value, R^2 = 1 - SSE / SST.
    values = np.array([0.0, 1.0, 3.0, 10.0, 11.0, 14.0])
    predicted = np.array([1.0, 0.0, 1.0, 11.0, 10.0, 11.0])
    expected = 1 - np.sum((values - predicted) ** 2) / np.sum((values - values.mean()) ** 2)
    assert knn_score(features, values, k=1) == pytest.approx(expected)


def test_knn_folds_and_probe_on_separable_blobs():
    features, labels = _blobs(spread=0.1)
    assert knn_score(features, labels, folds=5) == 1.0
    assert linear_probe_score(features, labels) == 1.0
    # Labels unrelated to the features: near chance (1/3), far from 1.
    shuffled = np.random.default_rng(0).permutation(labels)
    assert linear_probe_score(features, shuffled) < 0.6
    assert knn_score(features, shuffled) < 0.6


def test_probe_scores_held_out_examples_only():
    # Wider features than examples and labels unrelated to them: any linear model fits the
    # training rows, so only a held-out score stays near chance (1/2).
    rng = np.random.default_rng(4)
    features = rng.normal(size=(40, 100))
    labels = rng.permutation(np.arange(40) % 2)
    assert linear_probe_score(features, labels) < 0.75


def test_probe_recovers_a_linear_target():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(80, 5))
    target = features @ np.array([1.0, -2.0, 0.0, 0.5, 3.0]) + 7.0
    assert linear_probe_score(features, target, task="regression") > 0.999
    assert linear_probe_score(features, rng.normal(size=80), task="regression") < 0.1


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("call,argument", [
    (lambda: logme_score(np.zeros(5), [0, 1, 0, 1, 0]), "features"),
    (lambda: logme_score(np.ones((5, 2)), [0, 1, 0]), "labels"),
    (lambda: logme_score(np.ones((4, 2)), [1, 1, 1, 1]), "labels"),
    (lambda: logme_score(np.ones((4, 2)), [0, 1, 0, 1], task="ranking"), "task"),
    (lambda: logme_score(np.full((4, 2), np.nan), [0, 1, 0, 1]), "features"),
    (lambda: knn_score(np.ones((4, 2)), [0, 1, 0, 1], k=4), "k"),
    (lambda: linear_probe_score(np.ones((4, 2)), [0, 1, 0, 1], folds=9), "folds"),
    (lambda: rank_backbones((np.zeros((4, 8, 8, 3)), [0, 1, 0, 1]), []), "candidates"),
    (lambda: rank_backbones((np.zeros((4, 8, 8, 3)), [0, 1, 0, 1]), ["x"], method="leep"),
     "method"),
    (lambda: rank_backbones("photos/", ["FashionCNN"]), "data"),
    (lambda: rank_backbones((np.zeros((4, 8, 8, 3)), [0, 1]), ["FashionCNN"]), "data"),
])
def test_bad_input_names_the_argument(call, argument):
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        call()


# --- rank_backbones end to end -----------------------------------------------------------


def _image_candidates():
    inputs = keras.Input((8, 8, 3))
    top = keras.Model(inputs, keras.layers.Flatten()(inputs[:, :4]), name="top")
    bottom = keras.Model(inputs, keras.layers.Flatten()(inputs[:, 4:]), name="bottom")
    return top, bottom


def _images():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 12)
    images = rng.uniform(0, 100, (36, 8, 8, 3)).astype("float32")
    images[:, :4] += 50.0 * labels[:, None, None, None]  # only the top half tells the class
    return images, labels


def test_rank_backbones_on_images(tmp_path, capsys):
    top, bottom = _image_candidates()
    images, labels = _images()
    result = rank_backbones((images, labels), {"bottom half": bottom, "top half": top},
                            batch_size=8)
    printed = capsys.readouterr().out
    assert "Features of bottom half" in printed and "5/5" in printed  # the progress bar
    assert result.best == "top half" and result.names == ["top half", "bottom half"]
    assert result.task == "multiclass" and result.examples == 36
    row = result.rows[0]
    assert (row.feature_dim, row.parameters) == (96, 0) and row.feature_seconds > 0
    table = str(result)
    assert table.splitlines()[0].split() == ["rank", "candidate", "logme", "feature", "s",
                                             "dim", "parameters"]
    assert "top half" in table.splitlines()[2]
    # The kept features score with the other methods without a second pass.
    for method in ("knn", "probe"):
        assert result.rescore(method).best == "top half"
    result.plot(str(tmp_path / "ranking.png"))
    assert (tmp_path / "ranking.png").stat().st_size > 1000
    assert json.loads(json.dumps(result.to_dict()))["rows"][0]["name"] == "top half"


def test_rank_backbones_resizes_for_built_models_and_takes_named_ones():
    # A grayscale 28 px array, a tftransfer classifier at 32 px and a registry name built
    # at the data's size: random FashionCNN features, but the same pipeline as pretrained.
    import tftransfer

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (10, 28, 28)).astype("float32")
    labels = np.arange(10) % 2
    classifier = tftransfer.build_classifier("FashionCNN", 2, image_size=32, weights=None,
                                             name="cnn32")
    result = rank_backbones((images, labels), [classifier, "FashionCNN"], weights=None,
                            method="knn", verbose=0)
    assert sorted(result.names) == ["FashionCNN", "cnn32"]
    assert {row.feature_dim for row in result.rows} == {64}
    assert all(row.parameters == classifier.get_layer("fashion_cnn").count_params()
               for row in result.rows)


def test_rank_backbones_on_texts_multilabel():
    vectorizer = keras.layers.TextVectorization(max_tokens=50, output_mode="multi_hot")
    texts = ["red apple", "green apple", "red car", "green car", "red pear", "blue car",
             "green pear", "blue apple"] * 3
    vectorizer.adapt(texts)
    inputs = keras.Input(shape=(), dtype="string")
    words = keras.Model(inputs, vectorizer(inputs), name="words")
    # A poor encoder: it sees only whether a text mentions a pear.
    pear = keras.layers.TextVectorization(vocabulary=["pear"], output_mode="count")
    pears = keras.Model(inputs, pear(inputs), name="pears")
    labels = np.array([[("red" in t), ("car" in t)] for t in texts], "int64")
    result = rank_backbones((texts, labels), [pears, words], verbose=0)
    assert result.task == "multilabel" and result.best == "words"


def test_rank_command(tmp_path, capsys):
    import argparse

    from PIL import Image

    rng = np.random.default_rng(0)
    for label, brightness in (("dark", 30), ("light", 220)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for index in range(4):
            pixels = np.clip(brightness + rng.normal(0, 10, (32, 32, 3)), 0, 255)
            Image.fromarray(pixels.astype("uint8")).save(tmp_path / "data" / label / f"{index}.png")
    parser = argparse.ArgumentParser(prog="tftransfer")
    add_rank_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["rank", str(tmp_path / "data"), "--backbones", "FashionCNN",
                              "--method", "knn", "--json", str(tmp_path / "rank.json")])
    assert args.handler(args) == 0
    assert "best: FashionCNN" in capsys.readouterr().out
    assert json.loads((tmp_path / "rank.json").read_text())["method"] == "knn"
    args = parser.parse_args(["rank", str(tmp_path / "missing"), "--backbones", "FashionCNN"])
    assert rank_command(args) == 2
    assert capsys.readouterr().err.startswith("tftransfer: error: data:")
