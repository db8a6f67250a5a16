"""`evaluate()`: what a trained classifier gets right and wrong, and how sure it is."""

import dataclasses
import heapq
from typing import Dict, List, Optional

import numpy as np

from tftransfer.data.bundle import DatasetBundle


@dataclasses.dataclass
class EvaluationResult:
    """What `tftransfer.evaluate()` returns.

    Attributes:
        accuracy: float. Top-1 accuracy.
        top_k: int or None. The k of `top_k_accuracy`; None when the k
            asked for is not below the number of classes (every label is
            then among the top k, so the figure would always be 1).
        top_k_accuracy: float or None. Whether the label is among the k
            most probable classes; None with `top_k`.
        loss: float. Mean cross-entropy.
        per_class: dict. Class name -> `{"precision", "recall", "f1",
            "support"}`.
        macro_f1: float. Mean F1 over classes with examples.
        confusion_matrix: `[num_classes, num_classes]` int array, rows the
            true classes and columns the predicted ones.
        calibration_error: float. Expected calibration error: the
            example-weighted gap between confidence and accuracy over
            `bins` equal-width confidence bins.
        reliability: list of dicts, one per non-empty bin: confidence range,
            count, mean confidence and accuracy.
        top_losses: list of dicts, highest loss first: index (in the
            evaluation order), label, predicted, probability of the
            prediction, loss, and the input (`image`, as uint8 when it looks
            like pixels).
        class_names: list of str.
        count: int. Examples evaluated.
    """

    accuracy: float
    top_k: Optional[int]
    top_k_accuracy: Optional[float]
    loss: float
    per_class: Dict[str, Dict[str, float]]
    macro_f1: float
    confusion_matrix: np.ndarray
    calibration_error: float
    reliability: List[dict]
    top_losses: List[dict]
    class_names: List[str]
    count: int

    def to_dict(self):
        """The figures as plain JSON-ready values (inputs of top losses left out)."""
        return {
            "accuracy": self.accuracy, "top_k": self.top_k,
            "top_k_accuracy": self.top_k_accuracy, "loss": self.loss,
            "macro_f1": self.macro_f1, "calibration_error": self.calibration_error,
            "count": self.count, "class_names": list(self.class_names),
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "reliability": self.reliability,
            "top_losses": [{k: v for k, v in entry.items() if k != "image"}
                           for entry in self.top_losses],
        }

    def __str__(self):
        top_k = (f", top-{self.top_k} accuracy {self.top_k_accuracy:.4f}"
                 if self.top_k is not None else "")
        return (f"accuracy {self.accuracy:.4f}{top_k}, macro F1 {self.macro_f1:.4f}, "
                f"calibration error "
                f"{self.calibration_error:.4f}, loss {self.loss:.4f} ({self.count} examples)")


def _batches(data):
    """(inputs, labels) batches from a bundle (test split, else validation), dataset or arrays."""
    if isinstance(data, DatasetBundle):
        split = data.test if data.test is not None else data.validation
        if split is None:
            raise ValueError("data: the DatasetBundle has neither a test nor a validation split "
                             "to evaluate on; build it with test_split or validation_split > 0, "
                             "or pass a dataset.")
        return split, list(data.class_names)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (np.asarray(part) for part in data)
        if len(x) != len(y):
            raise ValueError(f"data: {len(x)} inputs but {len(y)} labels.")
        return [(x[i:i + 64], y[i:i + 64]) for i in range(0, len(x), 64)], None
    try:
        import tensorflow as tf

        if isinstance(data, tf.data.Dataset):
            return data, None
    except ImportError:  # pragma: no cover
        pass
    raise TypeError("data: expected a DatasetBundle, a tf.data.Dataset of (inputs, labels) "
                    f"batches or an (x, y) pair; received {type(data).__name__}.")


def _as_probabilities(outputs):
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 1:  # binary, sigmoid
        outputs = np.concatenate([1.0 - outputs, outputs], axis=1)
    if outputs.ndim != 2:
        raise ValueError(f"model: expected class probabilities [batch, classes]; received "
                         f"outputs of shape {outputs.shape}.")
    if np.any(outputs < -1e-6) or not np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("model: its outputs are not probabilities (each row should sum to 1, "
                         "as after a softmax); evaluate() needs a single-label classifier "
                         "such as build_classifier() returns.")
    return outputs


def _predictor(model):
    """A batch -> probabilities function: a Keras model, or a loaded tftransfer export."""
    import keras

    if isinstance(model, keras.Model):
        return model.predict_on_batch
    signature = getattr(model, "signatures", {}).get("serving_default") if hasattr(
        model, "signatures") else None
    if signature is not None:
        import tensorflow as tf

        name = sorted(signature.structured_input_signature[1])[0]
        dtype = signature.structured_input_signature[1][name].dtype

        def predict(inputs):
            return signature(**{name: tf.cast(inputs, dtype)})["probabilities"].numpy()

        return predict
    raise TypeError("model: expected a keras.Model or a SavedModel exported by tftransfer "
                    f"(tftransfer.load_model(path)); received {type(model).__name__}.")


def _pixels(value):
    value = np.asarray(value)
    if value.ndim == 3 and value.shape[-1] in (1, 3, 4) and value.dtype.kind in "fiu":
        return np.clip(value, 0, 255).astype(np.uint8)
    return value.item() if value.ndim == 0 else value


def evaluate(model, data, *, class_names=None, top_k=5, top_losses=16, bins=15):
    """Evaluates a classifier: accuracy, top-k, per-class figures, calibration, top losses.

    Args:
        model: `keras.Model`, a single-label classifier (softmax, or one
            sigmoid output for two classes) such as `build_classifier()`
            returns, or an export loaded with `tftransfer.load_model()`.
        data: `DatasetBundle` (its test split, else its validation split),
            `tf.data.Dataset` of `(inputs, labels)` batches, or `(x, y)`.
        class_names: list of str or None. Defaults to the bundle's, else
            `"0"`, `"1"`, ...
        top_k: int. Defaults to `5`. Top-k accuracy is reported only for a
            k below the number of classes (with 5 classes, top-5 is always
            1); otherwise `top_k` and `top_k_accuracy` are None.
        top_losses: int. How many of the worst examples to keep. Defaults
            to `16`.
        bins: int. Confidence bins of the calibration error. Defaults to
            `15`.

    Returns:
        An `EvaluationResult`.

    Example:

    >>> import numpy as np, tftransfer
    >>> model = tftransfer.build_classifier("FashionCNN", 3, weights=None)
    >>> x, y = np.random.uniform(0, 255, (12, 32, 32, 3)), np.arange(12) % 3
    >>> result = tftransfer.evaluate(model, (x, y), top_k=2)
    >>> result.confusion_matrix.shape, result.count
    ((3, 3), 12)
    """
    predict = _predictor(model)
    for name, value, low in (("top_k", top_k, 1), ("top_losses", top_losses, 0),
                             ("bins", bins, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int of at least {low}; received {value!r}.")
    batches, bundle_names = _batches(data)
    probabilities, labels, worst = [], [], []
    seen = 0
    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("data: expected (inputs, labels) batches.")
        inputs, batch_labels = batch[0], batch[1]
        outputs = _as_probabilities(predict(inputs))
        batch_labels = np.asarray(batch_labels)
        if batch_labels.ndim == 2 and batch_labels.shape[1] == outputs.shape[1] > 1:
            batch_labels = batch_labels.argmax(axis=1)  # one-hot
        batch_labels = batch_labels.reshape(-1).astype(np.int64)
        if batch_labels.min(initial=0) < 0 or batch_labels.max(initial=0) >= outputs.shape[1]:
            raise ValueError(f"data: labels must be in [0, {outputs.shape[1] - 1}] for this "
                             f"model's {outputs.shape[1]} classes; found "
                             f"{int(batch_labels.min())}..{int(batch_labels.max())}.")
        losses = -np.log(np.clip(outputs[np.arange(len(outputs)), batch_labels], 1e-12, 1.0))
        inputs_array = np.asarray(inputs) if top_losses else None
        for i, loss in enumerate(losses):
            entry = (float(loss), -(seen + i))
            if len(worst) < top_losses:
                heapq.heappush(worst, (entry, inputs_array[i], batch_labels[i], outputs[i]))
            elif top_losses and entry > worst[0][0]:
                heapq.heapreplace(worst, (entry, inputs_array[i], batch_labels[i], outputs[i]))
        probabilities.append(outputs)
        labels.append(batch_labels)
        seen += len(outputs)
    if not seen:
        raise ValueError("data: there is nothing to evaluate (no batches).")
    probabilities, labels = np.concatenate(probabilities), np.concatenate(labels)
    num_classes = probabilities.shape[1]
    names = list(class_names or bundle_names or [str(i) for i in range(num_classes)])
    if len(names) != num_classes:
        raise ValueError(f"class_names: {len(names)} names for a model with {num_classes} "
                         "classes.")
    k = top_k if top_k < num_classes else None
    predicted = probabilities.argmax(axis=1)
    top_k_accuracy = None
    if k is not None:
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        top_k_accuracy = float((ranked == labels[:, None]).any(axis=1).mean())
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class, f1s = {}, []
    for index, name in enumerate(names):
        true_positive = int(confusion[index, index])
        predicted_count = int(confusion[:, index].sum())
        support = int(confusion[index].sum())
        precision = true_positive / predicted_count if predicted_count else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1,
                           "support": support}
        if support:
            f1s.append(f1)
    confidence = probabilities.max(axis=1)
    correct = predicted == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    calibration, reliability = 0.0, []
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        gap = abs(float(confidence[members].mean()) - float(correct[members].mean()))
        calibration += members.mean() * gap
        reliability.append({"low": float(edges[b]), "high": float(edges[b + 1]),
                            "count": int(members.sum()),
                            "confidence": float(confidence[members].mean()),
                            "accuracy": float(correct[members].mean())})
    top = []
    for (loss, negative_index), value, label, output in sorted(worst, reverse=True):
        top.append({"index": -negative_index, "label": names[int(label)],
                    "predicted": names[int(output.argmax())],
                    "probability": float(output.max()), "loss": loss,
                    "image": _pixels(value)})
    losses = -np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1.0))
    return EvaluationResult(
        accuracy=float(correct.mean()), top_k=k, top_k_accuracy=top_k_accuracy,
        loss=float(losses.mean()), per_class=per_class,
        macro_f1=float(np.mean(f1s)) if f1s else 0.0, confusion_matrix=confusion,
        calibration_error=float(calibration), reliability=reliability, top_losses=top,
        class_names=names, count=int(seen))
