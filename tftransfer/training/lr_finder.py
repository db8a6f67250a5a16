"""The learning-rate range test (Smith, 2017; fastai's lr_find)."""

import dataclasses
import os
from typing import List, Optional

import keras
import numpy as np

from tftransfer import checks


@dataclasses.dataclass
class LearningRateFinderResult:
    """What `find_learning_rate()` returns.

    Attributes:
        learning_rates: list of float, one per step.
        losses: list of float, the smoothed training loss at each step.
        suggestion: float. The learning rate where the smoothed loss falls
            fastest (steepest negative slope against log learning rate).
        plot_path: str or None. The PNG of loss against learning rate.
    """

    learning_rates: List[float]
    losses: List[float]
    suggestion: float
    plot_path: Optional[str] = None


def find_learning_rate(model, data, *, min_learning_rate=1e-7, max_learning_rate=1.0,
                       steps=100, loss=None, optimizer="adam", smoothing=0.9,
                       plot_path=None):
    """Runs a learning-rate range test and suggests a learning rate.

    The learning rate grows exponentially from `min_learning_rate` to
    `max_learning_rate` over `steps` training steps on the currently
    trainable weights, the smoothed loss is recorded, and the test stops
    early once the loss diverges (4x its best). The model's weights (and
    compile state) are restored afterwards.

    Args:
        model: `keras.Model`. A classifier (freeze or unfreeze it as for the
            phase you are tuning).
        data: `tf.data.Dataset` of `(inputs, labels)` batches, or a
            `DatasetBundle` (its train split). Repeated as needed.
        min_learning_rate: float. Defaults to `1e-7`.
        max_learning_rate: float. Defaults to `1.0`.
        steps: int. Defaults to `100`.
        loss: loss or None. Defaults to sparse categorical cross-entropy for
            softmax heads, binary cross-entropy for sigmoid ones, MSE else.
        optimizer: str. Defaults to `"adam"`.
        smoothing: float. Exponential smoothing of the loss. Defaults to
            `0.9`.
        plot_path: str or None. Where to write the plot (PNG).

    Returns:
        A `LearningRateFinderResult`.

    Example:

    >>> import numpy as np, tftransfer
    >>> model = tftransfer.build_classifier("MobileNetV2", 2, image_size=32, weights=None)
    >>> data = tftransfer.data.from_arrays(
    ...     np.random.uniform(0, 255, (64, 32, 32, 3)), np.arange(64) % 2)
    >>> result = tftransfer.find_learning_rate(model, data, steps=20)
    >>> 1e-7 <= result.suggestion <= 1.0
    True
    """
    from tftransfer.data.bundle import DatasetBundle
    from tftransfer.training.trainer import _task_of, default_loss

    if isinstance(data, DatasetBundle):
        data = data.train
    if not (0 < min_learning_rate < max_learning_rate):
        raise ValueError("min_learning_rate and max_learning_rate: expected 0 < min < max; "
                         f"received {min_learning_rate!r} and {max_learning_rate!r}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 5:
        raise ValueError(f"steps: expected an int of at least 5; received {steps!r}.")
    checks.check_number(smoothing, "smoothing", low=0.0, high=1.0, high_open=True)
    if loss is None:
        task, _ = _task_of(model)
        loss = default_loss(task)
    saved = [w.numpy() for w in model.weights]
    compiled = getattr(model, "compiled", False)
    previous = (model.optimizer, model.loss) if compiled else None

    factor = (max_learning_rate / min_learning_rate) ** (1.0 / (steps - 1))
    model.compile(optimizer=keras.optimizers.get(
        {"class_name": optimizer, "config": {"learning_rate": min_learning_rate}}), loss=loss)
    learning_rates, losses = [], []
    average, best = 0.0, np.inf
    iterator = iter(data.repeat())
    for step in range(steps):
        rate = min_learning_rate * factor ** step
        model.optimizer.learning_rate = rate
        inputs, labels = next(iterator)
        value = float(model.train_on_batch(inputs, labels, return_dict=True)["loss"])
        average = smoothing * average + (1 - smoothing) * value
        smoothed = average / (1 - smoothing ** (step + 1))
        if not np.isfinite(smoothed) or (step > 5 and smoothed > 4 * best):
            break
        best = min(best, smoothed)
        learning_rates.append(rate)
        losses.append(smoothed)
    for weight, value in zip(model.weights, saved):
        weight.assign(value)
    if previous is not None:
        model.compile(optimizer=previous[0].__class__.from_config(previous[0].get_config()),
                      loss=previous[1])
    suggestion = (steepest_descent(learning_rates, losses) if learning_rates
                  else min_learning_rate)
    result = LearningRateFinderResult(learning_rates, losses, suggestion)
    if plot_path is not None:
        result.plot_path = _plot(result, os.fspath(plot_path))
    return result


def steepest_descent(learning_rates, losses):
    """The learning rate where `losses` falls fastest against log learning rate.

    The slope at each point is the central difference of the loss against
    `log10(learning_rate)` (one-sided at both ends); the suggestion is the
    rate of the most negative slope. Fewer than 3 points have no slope to
    speak of: the first rate is returned.

    Args:
        learning_rates: sequence of float, increasing (a range test's rates).
        losses: sequence of float, the loss at each rate.

    Returns:
        A float, one of `learning_rates`.

    Example:

    >>> import numpy as np
    >>> rates = np.logspace(-6, 0, 61)
    >>> losses = 2 - np.tanh(np.log10(rates) + 3)   # falls fastest at 1e-3
    >>> float(f"{steepest_descent(rates, losses):.3g}")
    0.001
    """
    if len(learning_rates) != len(losses) or not len(losses):
        raise ValueError("learning_rates and losses: expected two sequences of the same, "
                         f"non-zero length; received {len(learning_rates)} and {len(losses)}.")
    if len(losses) < 3:
        return float(learning_rates[0])
    slopes = np.gradient(np.asarray(losses, dtype=np.float64),
                         np.log10(np.asarray(learning_rates, dtype=np.float64)))
    return float(learning_rates[int(np.argmin(slopes))])


def _plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(result.learning_rates, result.losses)
    axis.axvline(result.suggestion, color="tab:red", linestyle="--",
                 label=f"suggested {result.suggestion:.2g}")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss (smoothed)")
    axis.set_title("Learning-rate range test")
    axis.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
