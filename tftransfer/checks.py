"""Argument checks shared by the public functions: each error names the argument.

Example:

>>> from tftransfer.checks import check_int
>>> check_int(3, "epochs")
3
>>> check_int(-1, "epochs")
Traceback (most recent call last):
...
ValueError: epochs: expected an int of at least 0; received -1.
"""

import numbers
import os


def check_int(value, argument, *, minimum=0):
    """`value` as an int of at least `minimum` (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument}: expected an int; received {type(value).__name__} "
                        f"({value!r}).")
    if value < minimum:
        raise ValueError(f"{argument}: expected an int of at least {minimum}; received "
                         f"{value!r}.")
    return int(value)


def check_number(value, argument, *, low=None, high=None, low_open=False, high_open=False):
    """`value` as a float within `[low, high]` (an end is open when asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument}: expected a number; received {type(value).__name__} "
                        f"({value!r}).")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high or value != value:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{argument}: expected a number in {span}; received {value!r}.")
    return value


def check_path(value, argument):
    """`value` as a path string (str or os.PathLike, not empty)."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argument}: expected a path (str or pathlib.Path); received "
                        f"{type(value).__name__} ({value!r}).")
    value = os.fspath(value)
    if not value.strip():
        raise ValueError(f"{argument}: expected a path; received an empty string.")
    return value


def check_model(value, argument="model"):
    """`value` if it is a Keras model."""
    import keras

    if not isinstance(value, keras.Model):
        raise TypeError(f"{argument}: expected a keras.Model (for example from "
                        f"tftransfer.build_classifier); received {type(value).__name__}.")
    return value
