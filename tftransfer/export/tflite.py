"""TFLite conversion: float32, float16, dynamic range and full-integer int8."""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

VARIANTS = ("float32", "float16", "dynamic", "int8")


def _images(data, limit):
    """Up to `limit` images from a dataset of (images, labels), of images, or an array."""
    if isinstance(data, tf.data.Dataset):
        collected = []
        for element in data:
            images = element[0] if isinstance(element, (tuple, list)) else element
            collected.append(np.asarray(images, np.float32))
            if sum(len(c) for c in collected) >= limit:
                break
        return np.concatenate(collected)[:limit]
    return np.asarray(data, np.float32)[:limit]


def convert(model, variant, representative_data=None, calibration_images=300):
    """Converts a Keras image model to TFLite bytes (input float32 [1, h, w, 3])."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {VARIANTS}; received {variant!r}.")
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    # Through Keras' own ExportArchive, which saves the variables so that the
    # converter freezes them (a tf.Module holding a Keras 3 model leaves them as
    # uninitialized resource variables in the .tflite file).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda images: model(images, training=False),
                         input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32,
                                                        name="images")])
    with tempfile.TemporaryDirectory() as scratch:
        archive.write_out(scratch, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch, signature_keys=["serve"])
        return _configured(converter, variant, representative_data,
                           calibration_images).convert()


def _configured(converter, variant, representative_data, calibration_images):
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative_data is None:
            raise ValueError("int8 conversion needs representative_data to calibrate.")
        samples = _images(representative_data, calibration_images)

        def representative():
            for image in samples:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def _interpreter(model_bytes):
    """A LiteRT interpreter (`ai-edge-litert`), or TensorFlow's own when it is missing.

    `tf.lite.Interpreter` is deprecated in favour of LiteRT and warns so on
    each use; it runs the same files, so the fallback keeps it quiet.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return tf.lite.Interpreter(model_content=model_bytes)
    return Interpreter(model_content=model_bytes)


def tflite_predict(model_bytes, images):
    """Runs a converted model on `[n, h, w, 3]` images, one at a time."""
    if not isinstance(model_bytes, (bytes, bytearray)):
        raise TypeError("model_bytes: expected the bytes of a .tflite file (open(path, 'rb')"
                        f".read()); received {type(model_bytes).__name__}.")
    interpreter = _interpreter(model_bytes)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for image in np.asarray(images, np.float32):
        interpreter.set_tensor(input_detail["index"], image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[0])
    return np.stack(outputs)


def _accuracy(probabilities, labels):
    labels = np.asarray(labels)
    if labels.ndim > 1:
        labels = labels.argmax(axis=-1)
    return float(np.mean(np.argmax(probabilities, axis=-1) == labels))


def convert_and_evaluate(model, variant, directory, *, representative_data=None,
                         evaluation_data=None, max_evaluation=1000):
    """Writes `<directory>/model_<variant>.tflite`; measures accuracy when data is given."""
    if model.inputs[0].dtype == "string":
        raise ValueError("tflite: text models (string inputs) are not converted to TFLite.")
    content = convert(model, variant, representative_data)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"model_{variant}.tflite")
    with open(path, "wb") as handle:
        handle.write(content)
    result = {"path": path, "size_bytes": len(content)}
    if evaluation_data is not None:
        images, labels = [], []
        for batch_images, batch_labels in evaluation_data:
            images.append(np.asarray(batch_images, np.float32))
            labels.append(np.asarray(batch_labels))
            if sum(len(i) for i in images) >= max_evaluation:
                break
        images, labels = np.concatenate(images)[:max_evaluation], np.concatenate(labels)[
            :max_evaluation]
        result["accuracy"] = _accuracy(tflite_predict(content, images), labels)
        result["keras_accuracy"] = _accuracy(model.predict(images, verbose=0), labels)
        result["evaluated_on"] = int(len(images))
    return result
