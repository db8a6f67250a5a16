"""The new head on top of a backbone: pooling, dropout, Dense, float32 output."""

import keras

# task -> (output activation, smallest num_classes, largest num_classes or None)
TASKS = {
    "multiclass": ("softmax", 2, None),
    "multilabel": ("sigmoid", 1, None),
    "binary": ("sigmoid", 1, 1),
    "regression": ("linear", 1, None),
}


def validate_task(task, num_classes):
    """Checks that `num_classes` fits `task`; returns the output activation."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}; received {task!r}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(
            f"num_classes: expected an int; received {type(num_classes).__name__} "
            f"({num_classes!r})."
        )
    activation, low, high = TASKS[task]
    if num_classes < low or (high is not None and num_classes > high):
        if task == "binary":
            what = (
                "task='binary' has one sigmoid output: pass num_classes=1 (or use "
                "task='multiclass' with num_classes=2)"
            )
        elif task == "multiclass":
            what = (
                "task='multiclass' needs at least 2 classes (for one yes/no output use "
                "task='binary' with num_classes=1)"
            )
        else:
            what = f"task={task!r} needs num_classes >= {low}"
        raise ValueError(f"num_classes: received {num_classes}; {what}.")
    return activation


def classification_head(features, num_classes, *, task="multiclass", dropout_rate=0.2,
                        head_units=()):
    """Applies the head to a backbone's output, Functional style.

    Feature maps `[batch, h, w, c]` are pooled with GlobalAveragePooling2D
    (feature vectors `[batch, c]`, as TF-Hub modules give, are used as they
    are), then Dropout, optional hidden Dense layers, and the output Dense
    layer, which computes in float32 even under a mixed precision policy so
    that the loss and the probabilities stay accurate.

    Args:
        features: KerasTensor. The backbone's output.
        num_classes: int. Output units; see `build_classifier()` for how it
            must fit `task`.
        task: str. `"multiclass"` (softmax), `"multilabel"` (sigmoid per
            class), `"binary"` (one sigmoid unit) or `"regression"` (linear).
            Defaults to `"multiclass"`.
        dropout_rate: float. In [0, 1). Defaults to `0.2`.
        head_units: tuple of int. Hidden Dense layers (ReLU) before the
            output. Defaults to `()`.

    Returns:
        The output KerasTensor.

    Example:

    >>> import keras, tftransfer
    >>> inputs = keras.Input((7, 7, 32))
    >>> outputs = tftransfer.heads.classification_head(inputs, 3)
    >>> keras.Model(inputs, outputs).output_shape
    (None, 3)
    """
    activation = validate_task(task, num_classes)
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) or not (
        0.0 <= dropout_rate < 1.0
    ):
        raise ValueError(f"dropout_rate: expected a float in [0, 1); received {dropout_rate!r}.")
    if isinstance(head_units, int):
        head_units = (head_units,)
    head_units = tuple(head_units or ())
    for units in head_units:
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(
                f"head_units: expected a tuple of positive ints; received {head_units!r}."
            )
    x = features
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    elif len(x.shape) != 2:
        raise ValueError(
            "The backbone's output must be a feature map [batch, height, width, channels] "
            f"or a feature vector [batch, features]; received shape {tuple(x.shape)}."
        )
    x = keras.layers.Dropout(float(dropout_rate), name="dropout")(x)
    for index, units in enumerate(head_units):
        x = keras.layers.Dense(units, activation="relu", name=f"head_dense_{index}")(x)
    return keras.layers.Dense(
        num_classes, activation=activation, dtype="float32", name="predictions"
    )(x)
