"""`rank_backbones()`: score candidate backbones on the user's data before training any."""

import dataclasses
import time
from typing import Dict, List

import numpy as np

from tftransfer.selection import features as _features
from tftransfer.selection._checks import target_matrix
from tftransfer.selection.knn import knn_score
from tftransfer.selection.logme import logme_score
from tftransfer.selection.probe import linear_probe_score

METHODS = {"logme": logme_score, "knn": knn_score, "probe": linear_probe_score}
METHOD_TITLES = {"logme": "LogME", "knn": "kNN accuracy", "probe": "linear probe"}


@dataclasses.dataclass
class CandidateScore:
    """One row of a ranking.

    Attributes:
        name: str. The candidate's name (its label, or the model's name).
        score: float. The method's score; higher is better.
        feature_seconds: float. Building the candidate and computing its
            features.
        score_seconds: float. Computing the score from the features.
        feature_dim: int. Length of the pooled feature vector.
        parameters: int. Parameters of the part that computes the features.
    """

    name: str
    score: float
    feature_seconds: float
    score_seconds: float
    feature_dim: int
    parameters: int


@dataclasses.dataclass
class RankingResult:
    """What `rank_backbones()` returns: the candidates, best first.

    Attributes:
        rows: list of `CandidateScore`, sorted by score, best first.
        method: str. The scoring method's name.
        task: str. The task the labels were scored as.
        examples: int. Examples scored.
        features: dict. `{name: [examples, dimensions] array}`, kept so that
            `rescore()` can try another method without a second pass.
        labels: dict. `{name: labels}`, in the order of the features.
    """

    rows: List[CandidateScore]
    method: str
    task: str
    examples: int
    features: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    labels: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def best(self):
        """The name of the best-scored candidate."""
        return self.rows[0].name

    @property
    def names(self):
        """Candidate names, best first."""
        return [row.name for row in self.rows]

    @property
    def scores(self):
        """`{name: score}`."""
        return {row.name: row.score for row in self.rows}

    @property
    def seconds(self):
        """Total seconds: every candidate's features and score."""
        return float(sum(row.feature_seconds + row.score_seconds for row in self.rows))

    def table(self):
        """The ranking as a plain-text table."""
        header = ("rank", "candidate", self.method, "feature s", "dim", "parameters")
        lines = [(str(i), row.name, f"{row.score:.4f}", f"{row.feature_seconds:.1f}",
                  str(row.feature_dim), f"{row.parameters:,}")
                 for i, row in enumerate(self.rows, start=1)]
        widths = [max(len(line[c]) for line in [header] + lines) for c in range(len(header))]
        left = (False, True, False, False, False, False)

        def format_line(line):
            return "  ".join(cell.ljust(w) if is_left else cell.rjust(w)
                             for cell, w, is_left in zip(line, widths, left)).rstrip()

        out = [format_line(header), format_line(["-" * w for w in widths])]
        out += [format_line(line) for line in lines]
        out.append(f"{self.examples} examples, task {self.task}; higher is better.")
        return "\n".join(out)

    def __str__(self):
        return self.table()

    def _repr_pretty_(self, printer, cycle):  # IPython and Jupyter print the table
        printer.text(self.table())

    def to_dict(self):
        """The ranking as JSON-ready data (without the features)."""
        return {"method": self.method, "task": self.task, "examples": self.examples,
                "rows": [dataclasses.asdict(row) for row in self.rows]}

    def rescore(self, method="knn"):
        """Scores the same features with another method (no new feature pass).

        Args:
            method: str or callable. As in `rank_backbones()`. Defaults to
                `"knn"`.

        Returns:
            A new `RankingResult`.
        """
        if not self.features:
            raise ValueError("rescore: this result kept no features.")
        scorer, method_name = _scorer(method)
        rows = []
        old = {row.name: row for row in self.rows}
        for name, features in self.features.items():
            start = time.perf_counter()
            score = float(scorer(features, self.labels[name], task=self.task))
            rows.append(dataclasses.replace(old[name], score=score,
                                            score_seconds=time.perf_counter() - start))
        return RankingResult(_sorted(rows), method_name, self.task, self.examples,
                             dict(self.features), dict(self.labels))

    def plot(self, path=None, *, title=None):
        """A horizontal bar chart of the scores, best on top.

        Args:
            path: str or None. Where to save the figure (PNG, SVG, PDF by its
                suffix). Defaults to None (not saved).
            title: str or None. Defaults to the method and the task.

        Returns:
            The matplotlib `Figure`.
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = list(reversed(self.rows))
        figure, axis = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.2))
        bars = axis.barh([row.name for row in rows], [row.score for row in rows],
                         color=["tab:green" if row is self.rows[0] else "tab:blue"
                                for row in rows])
        axis.bar_label(bars, labels=[f"{row.score:.3f}" for row in rows], fontsize=8,
                       padding=2)
        axis.set_xlabel(f"{METHOD_TITLES.get(self.method, self.method)} (higher is better)")
        axis.set_title(title or f"Backbone ranking: {self.task}, {self.examples} examples",
                       fontsize=10)
        axis.margins(x=0.15)
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=100)
            plt.close(figure)
        return figure


def _sorted(rows):
    return sorted(rows, key=lambda row: -row.score if np.isfinite(row.score) else np.inf)


def _scorer(method):
    if callable(method):
        return method, getattr(method, "__name__", "custom")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)} or a callable "
                         f"(features, labels, task=...) -> float; received {method!r}.")
    return METHODS[method], method


def _candidate_items(candidates):
    if isinstance(candidates, dict):
        items = list(candidates.items())
    elif isinstance(candidates, str):
        items = [(None, name.strip()) for name in candidates.split(",") if name.strip()]
    else:
        try:
            items = [(None, candidate) for candidate in candidates]
        except TypeError:
            raise ValueError("candidates: expected a list of backbone names or keras.Model "
                             f"objects, or a dict of them; received {type(candidates).__name__}."
                             ) from None
    if not items:
        raise ValueError("candidates: received none; pass at least one backbone name or "
                         "keras.Model.")
    return items


def rank_backbones(data, candidates, *, method="logme", task="auto", image_size=None,
                   weights="pretrained", batch_size=32, verbose=1, keep_features=True):
    """Ranks candidate backbones on labelled data, without training any.

    Each candidate's pooled features are computed once (the frozen backbone
    in inference mode, with the preprocessing its weights expect, in one
    batched pass: the pass `fit` uses for its feature cache) and scored
    against the labels by a transferability estimate:

    - `"logme"` (default): LogME, the evidence of a Bayesian linear model
      on the features (You et al., ICML 2021;
      `tftransfer.selection.logme`). No hyperparameters, milliseconds.
    - `"knn"`: leave-one-out 5-nearest-neighbour accuracy (Renggli et al.,
      CVPR 2022; `tftransfer.selection.knn`).
    - `"probe"`: 5-fold cross-validated accuracy of a ridge linear probe
      (`tftransfer.selection.probe`).

    A higher score predicts a higher accuracy after fine-tuning. Scores rank
    candidates on the same data; they are not accuracies (LogME's is a log
    evidence per example).

    Args:
        data: the labelled data: a `DatasetBundle` (its train split; images
            or texts), a `tf.data.Dataset` of `(inputs, labels)` batches, or
            an `(x, y)` pair: images `[n, height, width(, 1 or 3)]` in
            [0, 255] or a list of strings, and labels: class indices `[n]`,
            0/1 rows `[n, labels]` (multi-label) or float targets
            (regression).
        candidates: list or dict. Backbone names as `build_classifier()`
            takes them (`"EfficientNetLite0"`, `"FashionCNN"`,
            `"kerashub:..."`) or, for texts, as `build_text_classifier()`
            takes them (`"all-MiniLM-L6-v2"`); or built `keras.Model`
            objects: a tftransfer classifier (its features end where its
            head starts) or any model from inputs to features (feature maps
            are averaged). A dict maps display names to them; a string is
            split at commas.
        method: str or callable. `"logme"`, `"knn"`, `"probe"`, or a
            function `(features, labels, task=...) -> float`, higher better.
            Defaults to `"logme"`.
        task: str. `"auto"` (a bundle's task; else integer labels are
            classes, 0/1 rows multi-label, floats regression),
            `"multiclass"`, `"binary"`, `"multilabel"` or `"regression"`.
            Defaults to `"auto"`.
        image_size: int, `(height, width)` or None. The size named image
            candidates are built at. Defaults to the data's size. Built
            models get the images resized to their own input size.
        weights: `"pretrained"`, None or a weights path. For named
            candidates: their pretrained weights (ImageNet for Keras
            Applications), or a random initialization. Defaults to
            `"pretrained"`.
        batch_size: int. For `(x, y)` data. Defaults to `32`.
        verbose: int. 1: a progress bar per candidate; 0: silent. Defaults
            to `1`.
        keep_features: bool. Keep the features in the result, for
            `RankingResult.rescore()`. Defaults to `True`.

    Returns:
        A `RankingResult`: prints as a table (candidate, score, feature
        seconds, feature dimension, parameters), with `.best`, `.scores`,
        `.rescore(method)` and `.plot(path)`.

    Example:

    >>> import keras, numpy as np
    >>> from tftransfer.selection import rank_backbones
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 16)
    >>> x = rng.uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    >>> x[y == 1, :4] += 200.0  # class 1 is bright on top
    >>> inputs = keras.Input((8, 8, 3))
    >>> top = keras.Model(inputs, keras.layers.Flatten()(inputs[:, :4]), name="top")
    >>> bottom = keras.Model(inputs, keras.layers.Flatten()(inputs[:, 4:]), name="bottom")
    >>> result = rank_backbones((x, y), [bottom, top], verbose=0)
    >>> result.best, result.names
    ('top', ['top', 'bottom'])
    """
    scorer, method_name = _scorer(method)
    items = _candidate_items(candidates)
    if weights not in _features.WEIGHTS and not isinstance(weights, str):
        raise ValueError(f"weights: expected 'pretrained', None or a weights path; received "
                         f"{weights!r}.")
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    if image_size is not None and (not isinstance(image_size, (tuple, list))
                                   or len(image_size) != 2):
        raise ValueError(f"image_size: expected None, an int or (height, width); received "
                         f"{image_size!r}.")
    prepared = _features.prepare_data(data, batch_size=batch_size)
    if task == "auto" and prepared.task != "auto":
        task = prepared.task
    rows, kept_features, kept_labels, resolved_task, examples = [], {}, {}, task, 0
    for label, candidate in items:
        start = time.perf_counter()
        name, model = _features.feature_model(
            candidate, prepared.kind, image_size=image_size or prepared.image_size,
            weights=weights)
        name = str(label) if label is not None else name
        if name in kept_features or any(row.name == name for row in rows):
            raise ValueError(f"candidates: two candidates are named {name!r}; pass a dict of "
                             "distinct names.")
        found = _features.extract(name, model, prepared, verbose=verbose)
        feature_seconds = time.perf_counter() - start
        _, resolved_task = target_matrix(found.labels, task, examples=len(found.features),
                                         argument="data")
        start = time.perf_counter()
        score = float(scorer(found.features, found.labels, task=resolved_task))
        rows.append(CandidateScore(name, score, feature_seconds, time.perf_counter() - start,
                                   int(found.features.shape[1]), found.parameters))
        examples = len(found.features)
        if keep_features:
            kept_features[name], kept_labels[name] = found.features, found.labels
        del model
    result = RankingResult(_sorted(rows), method_name, resolved_task, examples, kept_features,
                           kept_labels)
    if verbose:
        print(result.table())
    return result
