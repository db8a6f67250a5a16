"""TF Serving pieces: warmup requests, a models.config entry, REST request bodies.

The warmup file (`assets.extra/tf_serving_warmup_requests`) is a TFRecord of
`tensorflow.serving.PredictionLog` protos. It is written here with a few lines
of protobuf wire encoding, so exporting needs no tensorflow-serving-api; the
test suite reads it back with the official protos.
"""

import base64
import os

import tensorflow as tf


def _varint(value):
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    if isinstance(payload, str):
        payload = payload.encode("utf8")
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def predict_log_record(model_name, signature_name, inputs):
    """Serialized `PredictionLog{predict_log{request{model_spec, inputs}}}`.

    Field numbers from tensorflow_serving/apis: PredictionLog.predict_log = 6,
    PredictLog.request = 1, PredictRequest.model_spec = 1 and inputs = 2 (a
    map: entries of key = 1, value = 2), ModelSpec.name = 1 and
    signature_name = 3.
    """
    model_spec = _field(1, model_name) + _field(3, signature_name)
    entries = b"".join(
        _field(2, _field(1, key) + _field(2, tf.make_tensor_proto(value).SerializeToString()))
        for key, value in inputs.items())
    request = _field(1, model_spec) + entries
    return _field(6, _field(1, request))


def write_warmup_requests(path, model_name, requests):
    """Writes `[(signature_name, {input: array})]` as a TF Serving warmup file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            writer.write(predict_log_record(model_name, signature_name, inputs))


def models_config_entry(name, base_path):
    """One `config { ... }` entry of a TF Serving `models.config` file."""
    return ("model_config_list {\n"
            "  config {\n"
            f"    name: \"{name}\"\n"
            f"    base_path: \"{base_path}\"\n"
            "    model_platform: \"tensorflow\"\n"
            "  }\n"
            "}\n")


def rest_request_body(images, *, signature_name="predict_images", input_name="image_bytes"):
    """A TF Serving REST `:predict` body carrying encoded images as base64.

    Args:
        images: list of file paths or of encoded image bytes (JPEG, PNG, ...).
        signature_name: str. Defaults to `"predict_images"`.
        input_name: str. The signature's input; its name ends in `_bytes`,
            which is how TF Serving knows to decode `{"b64": ...}`.

    Returns:
        A dict to send as JSON to `POST /v1/models/<name>:predict`.

    Example:

    >>> import tftransfer
    >>> body = tftransfer.rest_request_body([b"\\x89PNG..."])
    >>> sorted(body), sorted(body["instances"][0])
    (['instances', 'signature_name'], ['image_bytes'])
    """
    if isinstance(images, (str, bytes, os.PathLike)):
        raise TypeError("images: expected a list of encoded images or file paths; received "
                        "one (wrap it in a list).")
    instances = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            with open(image, "rb") as handle:
                image = handle.read()
        if not isinstance(image, (bytes, bytearray)):
            raise TypeError("images: expected encoded image bytes (PNG, JPEG, ...) or file "
                            f"paths; found a {type(image).__name__}.")
        instances.append({input_name: {"b64": base64.b64encode(image).decode("ascii")}})
    return {"signature_name": signature_name, "instances": instances}
