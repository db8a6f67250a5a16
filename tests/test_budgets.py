"""Training budgets sized by the data, and the defaults of fit() that follow from them."""

import numpy as np
import pytest

import tftransfer
from tftransfer.training import budgets


@pytest.mark.parametrize("steps, head, fine_tune", [
    (4, 75, 25),        # 100 images in batches of 32
    (2, 100, 50),       # 50 images: the head is capped at MAX_EPOCHS
    (32, 10, 4),        # 1,000 images
    (313, 2, 2),        # 10,000 images: the minimum epochs
    (31250, 2, 2),      # a million images
])
def test_default_budget_gives_enough_updates_and_few_passes(steps, head, fine_tune):
    budget = budgets.default_budget(steps)
    assert (budget.head_epochs, budget.fine_tune_epochs) == (head, fine_tune)
    assert budget.head_epochs * steps >= min(budgets.HEAD_STEPS,
                                              budgets.MAX_EPOCHS * steps)
    assert budget.fine_tune_epochs * steps >= min(budgets.FINE_TUNE_STEPS,
                                                   budgets.MAX_EPOCHS * steps)
    assert "300 steps" in budget.rule and f"{steps} steps an epoch" in budget.rule


def test_given_epochs_win_and_unknown_sizes_fall_back():
    budget = budgets.default_budget(4, head_epochs=3, fine_tune_epochs=0)
    assert (budget.head_epochs, budget.fine_tune_epochs) == (3, 0)
    assert budget.rule.startswith("head: as given; fine-tuning: as given")
    unknown = budgets.default_budget(None)
    assert (unknown.head_epochs, unknown.fine_tune_epochs) == (5, 5)
    assert "unknown" in unknown.rule and unknown.steps_per_epoch is None


def _tiny(n=40, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    return x, (np.arange(n) % 2).astype("int64")


def test_fit_defaults_follow_the_budget_and_fine_tune_the_whole_backbone():
    x, y = _tiny()
    model = tftransfer.build_classifier("FashionCNN", 2, image_size=16)
    backbone = tftransfer.find_backbone(model)
    conv = backbone.get_layer("block1_conv1")
    kernel = conv.kernel.numpy().copy()
    result = tftransfer.fit(model, (x, y), verbose=0)  # 40 images: 2 steps an epoch
    assert result.budget["steps_per_epoch"] == 2
    assert (result.budget["head_epochs"], result.budget["fine_tune_epochs"]) == (100, 50)
    # No validation data: no early stopping, every budgeted epoch runs.
    assert result.history["phase"].count("head") == 100
    assert result.history["phase"].count("fine_tune") == 50
    # unfreeze_blocks="all": the first block trains too.
    assert conv.trainable and not np.allclose(conv.kernel.numpy(), kernel)


def _early_stopping(trainer, phase="head"):
    import keras

    return [c for c in trainer._callbacks(phase, 1e-3)
            if isinstance(c, keras.callbacks.EarlyStopping)]


def test_early_stopping_auto_watches_validation_data_only():
    x, y = _tiny()

    def trainer(**kwargs):
        return tftransfer.Trainer(tftransfer.build_classifier("FashionCNN", 2, image_size=16),
                                  (x, y), verbose=0, **kwargs)

    assert _early_stopping(trainer()) == []  # no validation data: the budget sets the length
    with_validation = trainer(validation_data=_tiny(8, seed=1))
    (stopping,) = _early_stopping(with_validation)
    assert stopping.monitor == "val_loss" and stopping.restore_best_weights
    assert stopping.patience == 25  # a quarter of the 100 head epochs
    (stopping,) = _early_stopping(with_validation, "fine_tune")
    assert stopping.patience == 13  # a quarter of the 50 fine-tuning epochs
    (fixed,) = _early_stopping(trainer(early_stopping_patience=5))
    assert fixed.patience == 5 and fixed.monitor == "loss"


def test_epoch_arguments_take_auto_or_a_count():
    x, y = _tiny()
    with pytest.raises(ValueError, match="head_epochs: expected 'auto' or a non-negative int"):
        tftransfer.fit(tftransfer.build_classifier("FashionCNN", 2, image_size=16), (x, y),
                       head_epochs="many")
    with pytest.raises(ValueError, match="unfreeze_blocks: expected 'all' or a non-negative"):
        tftransfer.fit(tftransfer.build_classifier("FashionCNN", 2, image_size=16), (x, y),
                       unfreeze_blocks="most")
