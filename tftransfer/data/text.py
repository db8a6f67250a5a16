"""Text datasets: lists of strings and folders of text files."""

import os

import numpy as np
import tensorflow as tf

from tftransfer.data.bundle import (
    DatasetBundle,
    check_positive_int,
    class_weights,
    count_by_class,
    split_indices,
)
from tftransfer.data.pipeline import finish


def from_texts(texts, labels, *, batch_size=32, validation_split=0.2, test_split=0.0,
               seed=1337, class_names=None):
    """Builds text datasets that yield `(strings, labels)` batches.

    Args:
        texts: list of str.
        labels: list of int labels, or of class names (str).
        batch_size: int. Defaults to `32`.
        validation_split: float. Defaults to `0.2`.
        test_split: float. Defaults to `0.0`.
        seed: int. Defaults to `1337`.
        class_names: list of str or None. For string labels, their order.
            Defaults to the sorted distinct labels (or `"0"`, `"1"`, ...).

    Returns:
        A `DatasetBundle` for `build_text_classifier()` models.

    Example:

    >>> import tftransfer
    >>> data = tftransfer.data.from_texts(["good", "bad", "fine", "awful"],
    ...                                   ["pos", "neg", "pos", "neg"], validation_split=0.0)
    >>> data.class_names
    ['neg', 'pos']
    """
    if isinstance(texts, str) or not hasattr(texts, "__len__"):
        raise TypeError("texts: expected a list of strings; received "
                        f"{type(texts).__name__}.")
    if len(texts) != len(labels):
        raise ValueError(f"texts and labels have different lengths: {len(texts)} texts and "
                         f"{len(labels)} labels.")
    if len(texts) == 0:
        raise ValueError("texts: received no texts.")
    wrong = next((t for t in texts if not isinstance(t, (str, bytes))), None)
    if wrong is not None:
        raise TypeError(f"texts: expected strings; found a {type(wrong).__name__} ({wrong!r}).")
    texts = [str(text) for text in texts]
    labels = list(labels)
    if all(isinstance(label, str) for label in labels):
        names = [str(n) for n in class_names] if class_names is not None else sorted(set(labels))
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise ValueError(f"class_names: labels {unknown[:5]} are not in {names}.")
        index = {name: i for i, name in enumerate(names)}
        label_array = np.array([index[label] for label in labels], dtype="int64")
    else:
        label_array = np.asarray(labels)
        if not np.issubdtype(label_array.dtype, np.integer) or label_array.min() < 0:
            raise ValueError("labels: expected non-negative ints or class-name strings.")
        count = int(label_array.max()) + 1
        names = ([str(n) for n in class_names] if class_names is not None
                 else [str(i) for i in range(count)])
    if len(names) < 2:
        raise ValueError(f"labels: found only one class ({names}); a classifier needs two.")
    batch_size = check_positive_int(batch_size, "batch_size")
    parts = split_indices(label_array, validation_split, test_split, seed)
    text_array = np.array(texts, dtype=object)

    def dataset(split):
        indices = parts[split]
        if len(indices) == 0:
            return None
        data = tf.data.Dataset.from_tensor_slices(
            (tf.constant(list(text_array[indices]), tf.string), label_array[indices]))
        return finish(data, training=split == "train", batch_size=batch_size, seed=seed,
                      cache=None, key="", size=len(indices))

    return DatasetBundle(
        train=dataset("train"), validation=dataset("validation"), test=dataset("test"),
        class_names=names,
        counts={split: count_by_class(label_array[parts[split]], names) for split in parts},
        class_weights=class_weights(label_array[parts["train"]], len(names)),
    )


def from_text_directory(path, *, batch_size=32, validation_split=0.2, test_split=0.0,
                        seed=1337, class_names=None, encoding="utf-8"):
    """Builds text datasets from `path/<class>/<file>.txt` (each file one example).

    Args:
        path: str. The root folder, one sub-folder per class.
        encoding: str. Files are decoded with it (undecodable bytes are
            replaced). Defaults to `"utf-8"`.
        batch_size, validation_split, test_split, seed, class_names: as in
            `from_texts()`.

    Returns:
        A `DatasetBundle`.

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> data = tftransfer.data.from_text_directory("reviews/")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"path: {path!r} does not exist or is not a folder.")
    folders = sorted(name for name in os.listdir(path)
                     if not name.startswith(".") and os.path.isdir(os.path.join(path, name)))
    if class_names is not None:
        missing = [name for name in class_names if name not in folders]
        if missing:
            raise ValueError(f"class_names: no folder for {missing} under {path!r}.")
        folders = list(class_names)
    texts, labels = [], []
    for name in folders:
        for root, dirs, files in os.walk(os.path.join(path, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for file_name in sorted(files):
                if file_name.startswith("."):
                    continue
                with open(os.path.join(root, file_name), encoding=encoding,
                          errors="replace") as handle:
                    texts.append(handle.read())
                labels.append(name)
    if not texts:
        raise ValueError(f"path: found no text files under {path!r}.")
    return from_texts(texts, labels, batch_size=batch_size, validation_split=validation_split,
                      test_split=test_split, seed=seed,
                      class_names=[n for n in folders if n in set(labels)])


def from_text_csv(csv_path, text_column="text", label_column="label", *, batch_size=32,
                  validation_split=0.2, test_split=0.0, seed=1337, class_names=None,
                  encoding="utf-8"):
    """Builds text datasets from a CSV file with a text column and a label column.

    Args:
        csv_path: str. A CSV file with a header row.
        text_column: str. The column of texts. Defaults to `"text"`.
        label_column: str. The column of class names. Defaults to `"label"`.
        encoding: str. Defaults to `"utf-8"`.
        batch_size, validation_split, test_split, seed, class_names: as in
            `from_texts()`.

    Returns:
        A `DatasetBundle` of `(strings, labels)` batches.

    Example:

    >>> import tftransfer
    >>> with open("/tmp/reviews.csv", "w") as handle:
    ...     _ = handle.write('text,label\\n"good, really",pos\\nbad,neg\\nfine,pos\\n')
    >>> data = tftransfer.data.from_text_csv("/tmp/reviews.csv", validation_split=0.0)
    >>> data.class_names, data.counts["train"]
    (['neg', 'pos'], {'neg': 1, 'pos': 2})
    """
    import csv

    csv_path = os.fspath(csv_path)
    if not os.path.isfile(csv_path):
        raise ValueError(f"csv_path: no file at {csv_path!r}.")
    with open(csv_path, encoding=encoding, errors="replace", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for argument, column in (("text_column", text_column), ("label_column", label_column)):
            if column not in columns:
                raise ValueError(f"{argument}: {csv_path!r} has no column {column!r}; its "
                                 f"columns are {columns}.")
        rows = [(row[text_column] or "", row[label_column]) for row in reader]
    missing = [index + 2 for index, (_, label) in enumerate(rows) if not label]
    if missing:
        raise ValueError(f"label_column: rows {missing[:5]} of {csv_path!r} have no label.")
    return from_texts([text for text, _ in rows], [label for _, label in rows],
                      batch_size=batch_size, validation_split=validation_split,
                      test_split=test_split, seed=seed, class_names=class_names)


FORTUNES_DIR = "/usr/share/games/fortunes"


def _overstrike(text):
    # fortune files underline with backspaces ("____\b\b\b\bword"): apply them.
    if "\b" not in text:
        return text
    kept = []
    for character in text:
        if character == "\b":
            if kept:
                kept.pop()
        else:
            kept.append(character)
    return "".join(kept)


def read_fortunes(categories, *, folder=FORTUNES_DIR, max_characters=400):
    """Reads quotes from fortune(6) files, one file per category.

    A fortune file holds entries separated by lines holding `%` (the Debian
    package `fortunes` installs them under `/usr/share/games/fortunes/`).
    Entries are stripped, deduplicated within and across categories (a quote
    filed under two categories is dropped from both: its label is
    ambiguous) and kept when at most `max_characters` long; backspace
    overstrikes (the files' underlining) are applied.

    Args:
        categories: list of str. File names under `folder`, e.g.
            `["computers", "food", "law"]`.
        folder: str. Where the files are. Defaults to
            `/usr/share/games/fortunes`.
        max_characters: int or None. Longer entries are left out. Defaults
            to `400`.

    Returns:
        `(texts, labels)`: lists of str, each label a category name.

    Example:

    >>> import tftransfer
    >>> texts, labels = tftransfer.data.read_fortunes(  # doctest: +SKIP
    ...     ["food", "law"])
    >>> sorted(set(labels))  # doctest: +SKIP
    ['food', 'law']
    """
    if isinstance(categories, str) or not categories:
        raise ValueError(f"categories: expected a list of fortune file names; received "
                         f"{categories!r}.")
    found = {}
    for category in categories:
        path = os.path.join(folder, category)
        if not os.path.isfile(path):
            raise ValueError(
                f"categories: no fortune file {path!r}. On Debian or Ubuntu, install them with "
                "`apt-get install fortunes` (or pass folder= where yours are).")
        with open(path, encoding="utf-8", errors="replace") as handle:
            entries = handle.read().replace("\r\n", "\n").split("\n%\n")
        seen = set()
        for entry in entries:
            text = _overstrike(entry).strip().strip("%").strip()
            if not text or text in seen:
                continue
            if max_characters is not None and len(text) > max_characters:
                continue
            seen.add(text)
            found.setdefault(text, set()).add(category)
    texts, labels = [], []
    for category in categories:  # stable order: by category, then by file order
        for text, owners in found.items():
            if owners == {category}:
                texts.append(text)
                labels.append(category)
    return texts, labels
