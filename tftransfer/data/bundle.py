"""`DatasetBundle` and the split and weighting logic every source shares."""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class DatasetBundle:
    """What every `tftransfer.data.from_*` function returns.

    Attributes:
        train: `tf.data.Dataset` of `(inputs, labels)` batches.
        validation: `tf.data.Dataset` or None.
        test: `tf.data.Dataset` or None.
        class_names: list of str. Index `i` is label `i`.
        counts: dict. `counts[split][class_name]` = number of examples.
        class_weights: dict. `{label: weight}` from the train split, for
            `model.fit(class_weight=...)`: `n / (num_classes * n_label)`.
        skipped: list of `(path, reason)` for files left out as unreadable.
        empty_classes: list of str. Class folders that held no usable file.
        image_size: `(height, width)` or None for text.
        task: str. `"multiclass"` or `"multilabel"`.
        augmented: bool. Whether the training split is augmented in the
            pipeline (random before the model: no feature cache).
        cache: str or None. Where decoded examples are cached: `"memory"`,
            a disk cache path, or None (decoded each epoch).
        cache_reason: str. Why (what `cache="auto"` measured), or "".
        file_check: the check of the files not checked before, done by the
            pipelines as they read them
            (`tftransfer.data.file_checks.StreamingCheck`), or None.
    """

    train: object
    validation: Optional[object]
    test: Optional[object]
    class_names: List[str]
    counts: Dict[str, Dict[str, int]]
    class_weights: Dict[int, float]
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    empty_classes: List[str] = dataclasses.field(default_factory=list)
    image_size: Optional[Tuple[int, int]] = None
    task: str = "multiclass"
    augmented: bool = False
    cache: Optional[str] = None
    cache_reason: str = ""
    file_check: Optional[object] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def num_classes(self):
        return len(self.class_names)

    def wait_for_file_checks(self, timeout=None):
        """Finishes the check of the files now, warns about what it found once,
        and returns `skipped`.

        Without it, the pipelines find the files that do not decode as they
        read them (dropping them meanwhile), and the list is final after
        each split's first complete pass, which `fit` reports. This decodes
        at once the files no pass has read yet, for the count before
        training. `timeout` is accepted for compatibility and not used.

        Example:

        >>> import numpy as np, tftransfer
        >>> data = tftransfer.data.from_arrays(np.zeros((4, 8, 8), "uint8"), np.arange(4) % 2)
        >>> data.wait_for_file_checks()
        []
        """
        if self.file_check is None:
            return self.skipped
        if self.file_check.result(timeout) is None:
            return None
        self.file_check.report(stacklevel=2)
        return self.skipped

    def __repr__(self):
        sizes = {split: sum(self.counts.get(split, {}).values()) for split in SPLITS}
        return (f"DatasetBundle(classes={self.num_classes}, train={sizes['train']}, "
                f"validation={sizes['validation']}, test={sizes['test']}, "
                f"skipped={len(self.skipped)}, image_size={self.image_size})")


def check_fraction(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{argument}: expected a float in [0, 1); received {value!r}.")
    return float(value)


def check_positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{argument}: expected a positive int; received {value!r}.")
    return int(value)


def split_indices(labels, validation_split, test_split, seed):
    """Stratified, seeded, disjoint split of example indices.

    Each class is shuffled with `seed` and cut into test, validation and
    train parts in that order, so the same seed gives the same split.
    Multi-label rows (2-D `labels`) are split without stratification.

    Returns:
        A dict `{split: sorted index array}`.
    """
    validation_split = check_fraction(validation_split, "validation_split")
    test_split = check_fraction(test_split, "test_split")
    if validation_split + test_split >= 1.0:
        raise ValueError(
            f"validation_split + test_split must be below 1; received {validation_split} + "
            f"{test_split}."
        )
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(labels))] if labels.ndim > 1 else [
        np.flatnonzero(labels == value) for value in np.unique(labels)]
    parts = {split: [] for split in SPLITS}
    for group in groups:
        group = rng.permutation(group)
        n_test = int(round(len(group) * test_split))
        n_validation = int(round(len(group) * validation_split))
        parts["test"].append(group[:n_test])
        parts["validation"].append(group[n_test:n_test + n_validation])
        parts["train"].append(group[n_test + n_validation:])
    return {split: np.sort(np.concatenate(chunks)) if chunks else np.array([], int)
            for split, chunks in parts.items()}


def class_weights(labels, num_classes):
    """`{label: n / (num_classes * n_label)}`; multi-label rows count each label."""
    labels = np.asarray(labels)
    if labels.ndim > 1:
        per_class = labels.sum(axis=0).astype(float)
    else:
        per_class = np.bincount(labels.astype(int), minlength=num_classes).astype(float)
    total = per_class.sum()
    return {label: (float(total / (num_classes * count)) if count else 0.0)
            for label, count in enumerate(per_class)}


def count_by_class(labels, class_names):
    labels = np.asarray(labels)
    if labels.ndim > 1:
        return {name: int(labels[:, index].sum()) for index, name in enumerate(class_names)}
    counts = np.bincount(labels.astype(int), minlength=len(class_names))
    return {name: int(counts[index]) for index, name in enumerate(class_names)}
