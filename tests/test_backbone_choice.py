"""tune() over several backbones: ranked first, trials spent on the best-ranked only."""

import os

import numpy as np
import pytest

import tftransfer
from tftransfer.tuning import backbone_choice


def _data():
    # Real images of the shipped demo folder: the embedded FashionCNN, pretrained on other
    # Fashion-MNIST classes, has useful features there; the same network at random
    # initialization does not.
    folder = os.path.join(os.path.dirname(tftransfer.__file__), "demo_data", "fashion_target",
                          "train")
    return tftransfer.data.from_directory(folder, 32, batch_size=16, validation_split=0.3,
                                          seed=0)


def test_several_backbones_are_ranked_and_only_the_best_is_searched(tmp_path, monkeypatch):
    data = _data()
    searched = []
    real_tune = tftransfer.tuning.search.tune

    def recording_tune(backbone, *args, **kwargs):
        if not isinstance(backbone, (list, tuple, dict)):
            searched.append((backbone, kwargs["max_trials"]))
        return real_tune(backbone, *args, **kwargs)

    monkeypatch.setattr(tftransfer.tuning.search, "tune", recording_tune)
    # The same network under two names: the ranking's order is its own to choose.
    result = tftransfer.tune({"first": "FashionCNN", "second": "FashionCNN"}, data, keep=1,
                             max_trials=2, head_epochs=1, fine_tune_epochs=1,
                             directory=str(tmp_path), overwrite=True, folds=None)
    best, other = result.ranking.names
    assert sorted(result.ranking.names) == ["first", "second"]
    assert result.ranking.method == "logme" and result.ranking.examples == len(
        [0 for _, labels in data.train.unbatch()])
    assert result.backbone == best and list(result.searches) == [best]
    assert searched == [("FashionCNN", 2)]  # every trial on the best-ranked
    assert os.path.isdir(tmp_path / f"backbone_search_{best}")
    assert not os.path.exists(tmp_path / f"backbone_search_{other}")
    assert result.best_model.output_shape == (None, 5)


def test_trials_are_split_between_the_kept_candidates(tmp_path, monkeypatch):
    calls = []

    class Ranking:
        names = ["b", "a", "c"]

    monkeypatch.setattr("tftransfer.selection.rank_backbones", lambda *a, **k: Ranking())
    monkeypatch.setattr(backbone_choice, "_best_score", lambda result: result)
    monkeypatch.setattr(
        "tftransfer.tuning.search.tune",
        lambda backbone, data, **kwargs: calls.append((backbone, kwargs["max_trials"])) or {
            "B": 0.7, "A": 0.9}[backbone])
    monkeypatch.setattr(backbone_choice.dataclasses, "replace", lambda result, **kw: (result, kw))
    best, extra = backbone_choice.tune_backbones({"a": "A", "b": "B", "c": "C"}, None,
                                                 keep=2, max_trials=5)
    assert calls == [("B", 3), ("A", 2)]  # the best-ranked gets the remainder
    assert best == 0.9 and extra["backbone"] == "a"  # the better search wins, not the rank


@pytest.mark.parametrize("backbones, keep, match", [
    (["FashionCNN"], 1, "at least 2 candidates"),
    (["FashionCNN", "FashionCNN"], 1, "distinct name"),
    (["FashionCNN", "MobileNetV2"], 0, "keep: expected an int"),
])
def test_bad_candidate_lists_are_refused(backbones, keep, match):
    with pytest.raises(ValueError, match=match):
        backbone_choice.tune_backbones(backbones, None, keep=keep)
