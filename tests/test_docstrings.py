"""The docstring examples of these modules run as written (doctest)."""

import doctest
import importlib

import pytest

MODULES = [
    "tftransfer.backbones.embedded",
    "tftransfer.backbones.efficientnet_lite",
    "tftransfer.backbones.kerashub",
    "tftransfer.backbones.kerashub_vision",
    "tftransfer.backbones.text_layers",
    "tftransfer.selection.cli",
    "tftransfer.selection.knn",
    "tftransfer.selection.logme",
    "tftransfer.selection.probe",
    "tftransfer.selection.ranking",
    "tftransfer.training.lora",
    "tftransfer.text_demo",
    "tftransfer.checkpoints",
    "tftransfer.checkpoints.mapping",
    "tftransfer.checkpoints.pytorch",
    "tftransfer.checkpoints.safetensors",
    "tftransfer.checks",
    "tftransfer.files",
    "tftransfer.training.callbacks",
    "tftransfer.cli",
    "tftransfer.datasets",
    "tftransfer.data.bundle",
    "tftransfer.data.file_checks",
    "tftransfer.data.tfrecords",
    "tftransfer.data.service",
    "tftransfer.data.sharding",
    "tftransfer.demo",
    "tftransfer.evaluation.explanations",
    "tftransfer.evaluation.metrics",
    "tftransfer.evaluation.plots",
    "tftransfer.evaluation.report",
]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
