"""SavedModel export in the TF Serving layout, with stable signatures and a parity check.

Layout: `<model_dir>/<version>/` with `saved_model.pb`, `variables/`,
`assets.extra/tf_serving_warmup_requests` and `export_manifest.json`. Each
version is built in a hidden temporary folder beside it and renamed into
place, so a killed export never leaves a version folder behind; TF Serving
ignores the hidden folder, and the next export removes it.

Text models over KerasHub backbones tokenize inside the graph with
TensorFlow Text ops (`FastWordpieceTokenizeWithOffsets`, `RegexSplitWithOffsets`,
...). A SavedModel that holds them loads only where those ops are registered:
in Python after `import tensorflow_text`, in TF Serving only in a build that
links the TensorFlow Text op library. The manifest's `serving_requires` says
so, with the ops the graph uses; `load_model()`, the parity check and
`tftransfer predict` import `tensorflow_text` when it lists it.
"""

import dataclasses
import datetime
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from tftransfer import files

from tftransfer.export.serving import models_config_entry, write_warmup_requests

TEMP_PREFIX = files.TEMPORARY_TAG


def _one_shot_options():
    # A pipeline built for each request: graph rewrites and autotuning cost more than
    # they save there.
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_warm_start = False
    return options


_ONE_SHOT = _one_shot_options()

# What each signature output means: the manifest's `signature_outputs`.
SIGNATURE_OUTPUTS = {
    "probabilities": "float32 [batch, num_classes]: class probabilities (zeros for an "
                     "image that does not decode).",
    "top_k_scores": "float32 [batch, top_k]: the top_k probabilities, best first (with "
                    "class names only).",
    "top_k_classes": "string [batch, top_k]: their class names ('' for an image that does "
                     "not decode).",
    "valid": "bool [batch], predict_images only: whether each image decoded. Every image "
             "of a batch is answered on its own: one that the decoder rejects (empty, not "
             "PNG / JPEG / GIF / BMP, truncated or corrupt) gets valid=false and zero "
             "probabilities, and the request does not fail.",
}


@dataclasses.dataclass
class ExportResult:
    """What `tftransfer.export()` returns.

    Attributes:
        path: str. The version folder, `<model_dir>/<version>`.
        version: int.
        signatures: dict. Signature name -> `{"inputs": ..., "outputs": ...}`
            as `{name: (dtype, shape)}`.
        parity_max_abs_diff: float or None. Largest difference between the
            Keras model and the SavedModel loaded in a fresh plain-TensorFlow
            process, on sample inputs.
        tflite: dict. Variant -> `{"path", "size_bytes", "accuracy"}`.
        manifest: dict. What `export_manifest.json` holds.
    """

    path: str
    version: int
    signatures: Dict[str, dict]
    parity_max_abs_diff: Optional[float]
    tflite: Dict[str, dict]
    manifest: dict


class ServingModule(tf.Module):
    """The exported object: the Keras model plus signatures with stable names."""

    def __init__(self, model, class_names, top_k):
        super().__init__()
        self.model = model
        self.top_k = int(top_k)
        self.class_names = (tf.constant(list(class_names), dtype=tf.string)
                            if class_names is not None else None)
        self.text = model.inputs[0].dtype == "string"
        if not self.text:
            self.height, self.width = (int(model.input_shape[1]), int(model.input_shape[2]))

    def _outputs(self, probabilities):
        probabilities = tf.cast(probabilities, tf.float32)
        outputs = {"probabilities": probabilities}
        if self.top_k > 0:
            scores, indices = tf.math.top_k(probabilities, k=self.top_k)
            outputs["top_k_scores"] = scores
            outputs["top_k_classes"] = tf.gather(self.class_names, indices)
        return outputs

    def _predict_float_images(self, images):
        images = tf.image.resize(tf.cast(images, tf.float32), (self.height, self.width))
        return self._outputs(self.model(images, training=False))

    def _decode(self, contents):
        image = tf.io.decode_image(contents, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32), (self.height, self.width))

    def _decode_each(self, image_bytes):
        """`(images, valid)`: each encoded image decoded, or zeros and `valid` False.

        A graph cannot try/except a decode, but a tf.data pipeline can drop the
        elements that fail (`ignore_errors`): each image is decoded with its
        index, the ones that fail are dropped, and the rest are scattered back
        into place. Whatever the decoder rejects is caught this way: empty
        strings, unknown formats, and PNG / JPEG / GIF / BMP data that is
        truncated or corrupt past a valid header.
        """
        count = tf.shape(image_bytes)[0]
        decoded = (tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
                   # Sequential: a parallel map starts threads for each request, which
                   # costs more than decoding a request's few images.
                   .map(lambda index, contents: (index, self._decode(contents)))
                   .ignore_errors()
                   .batch(tf.cast(tf.maximum(count, 1), tf.int64))
                   .with_options(_ONE_SHOT))
        empty = (tf.zeros([0], tf.int32), tf.zeros([0, self.height, self.width, 3], tf.float32))
        indices, images = decoded.reduce(
            empty, lambda state, batch: (tf.concat([state[0], batch[0]], 0),
                                         tf.concat([state[1], batch[1]], 0)))
        shape = tf.stack([count, self.height, self.width, 3])
        images = tf.scatter_nd(indices[:, None], images, shape)
        valid = tf.scatter_nd(indices[:, None], tf.ones_like(indices), count[None]) > 0
        return images, valid

    def _outputs_or_nothing(self, probabilities, valid):
        """The outputs, with zeros (and empty class names) where `valid` is False."""
        outputs = self._outputs(tf.where(valid[:, None], tf.cast(probabilities, tf.float32),
                                         0.0))
        if "top_k_classes" in outputs:
            outputs["top_k_classes"] = tf.where(valid[:, None], outputs["top_k_classes"], "")
        outputs["valid"] = valid
        return outputs

    def signatures(self):
        if self.text:
            text_fn = tf.function(
                lambda texts: self._outputs(self.model(texts, training=False)),
                input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
            return {"serving_default": text_fn.get_concrete_function()}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                    name="images")])
        def serving_default(images):
            return self._predict_float_images(images)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def predict_images(image_bytes):
            images, valid = self._decode_each(image_bytes)
            return self._outputs_or_nothing(self.model(images, training=False), valid)

        self.serving_default = serving_default
        self.predict_images = predict_images
        return {"serving_default": serving_default.get_concrete_function(),
                "predict_images": predict_images.get_concrete_function()}


# --- paths ---------------------------------------------------------------------------


def resolve_model_dir(path, root=None):
    """Checks an export path: no `..` escapes, and inside `root` when one is given."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise ValueError(f"path: expected a folder path like 'saved_models/<name>'; received "
                         f"{path!r}.")
    path = os.fspath(path)
    if ".." in path.replace("\\", "/").split("/"):
        raise ValueError(f"path: {path!r} contains '..' and could escape the export root; "
                         "write the folder without '..'.")
    if root is not None:
        root = os.path.realpath(os.fspath(root))
        full = os.path.realpath(os.path.join(root, path))
        if full != root and not full.startswith(root + os.sep):
            raise ValueError(f"path: {path!r} escapes the export root {root!r}.")
        return full
    return os.path.abspath(path)


def _existing_versions(model_dir):
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(name) for name in os.listdir(model_dir)
                  if name.isdigit() and os.path.isdir(os.path.join(model_dir, name)))


# --- manifest, samples, parity -------------------------------------------------------------


def _versions():
    names = ("tensorflow", "keras", "tftransfer", "tensorflow-hub", "keras-hub",
             "tensorflow-text", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _describe_model(model):
    from tftransfer.training.freezing import find_backbone

    info = {"model_name": model.name}
    try:
        backbone = find_backbone(model)
        info["backbone"] = backbone.name
        info["weights_source"] = getattr(backbone, "handle", None) or "keras"
    except (ValueError, TypeError):
        pass
    try:
        info["preprocessing"] = model.get_layer("preprocessing").mode
    except ValueError:
        pass
    if model.inputs[0].dtype != "string":
        info["image_size"] = [int(model.input_shape[1]), int(model.input_shape[2])]
    return info


def _serving_requirements(model):
    """The Python packages whose ops the model's graph needs (from its layers)."""
    needed = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for package in getattr(layer, "serving_requirements", ()) or ():
            if package not in needed:
                needed.append(package)
    return needed


def _custom_ops(path):
    """Op types in a SavedModel that core TensorFlow does not define (its library's ops)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    used = set()
    for meta_graph in proto.meta_graphs:
        used.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            used.update(node.op for node in function.node_def)
    core = set(dir(tf.raw_ops))
    return sorted(op for op in used if op not in core)


def serving_requirements_note(packages, ops):
    """The manifest's `serving_requires` entry (None when plain TensorFlow serves it)."""
    if not packages:
        return None
    versions = _versions()
    return {
        "packages": {name: versions.get(name) for name in packages},
        "ops": ops,
        "note": ("The graph tokenizes with the TensorFlow Text ops listed in `ops`. In "
                 "Python, `import tensorflow_text` before tf.saved_model.load(). TF Serving "
                 "must register them: the tensorflow/serving images link a TensorFlow Text "
                 "build of their own (older than the one here), so send a warmup request "
                 "and check the log for 'Op type not registered'; a custom build links "
                 "@org_tensorflow_text//tensorflow_text:ops_lib at this version."),
    }


def import_serving_requirements(folder):
    """Imports what an export's manifest says its ops need (`tensorflow_text`)."""
    manifest_path = os.path.join(folder, "export_manifest.json")
    if not os.path.isfile(manifest_path):
        return
    with open(manifest_path) as handle:
        requires = (json.load(handle).get("serving_requires") or {}).get("packages") or {}
    for package in requires:
        module = package.replace("-", "_")
        try:
            importlib.import_module(module)
        except ImportError:
            raise ImportError(
                f"The export at {folder!r} tokenizes with {package} ops; install it "
                f"(pip install '{package}=={requires[package]}') to load it.") from None


def _sample_inputs(model, sample_inputs):
    if sample_inputs is not None:
        return np.asarray(sample_inputs)
    if model.inputs[0].dtype == "string":
        return np.array([b"a short example", b"another one", b""], dtype=object)
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    return np.random.default_rng(0).uniform(0, 255, (8, height, width, 3)).astype("float32")


_PARITY_CODE = r"""
import json, sys
import numpy as np
import tensorflow as tf
path, inputs_path, expected_path, modules = sys.argv[1:5]
for module in filter(None, modules.split(",")):
    __import__(module)
loaded = tf.saved_model.load(path)
inputs = np.load(inputs_path, allow_pickle=True)
if inputs.dtype == object:
    inputs = tf.constant([bytes(x) for x in inputs])
function = loaded.signatures["serving_default"]
(input_name,) = function.structured_input_signature[1]
outputs = function(**{input_name: tf.constant(inputs)})
difference = float(np.max(np.abs(outputs["probabilities"].numpy() - np.load(expected_path))))
print(json.dumps({"max_abs_diff": difference, "tftransfer_imported": "tftransfer" in sys.modules}))
"""


def parity_check(path, model, inputs, *, imports=()):
    """Loads the SavedModel in a fresh process with plain TensorFlow and compares.

    `imports` are modules to import first (`tensorflow_text` for graphs that
    use its ops); tftransfer itself is never imported there.
    """
    model_inputs = (tf.constant([bytes(x) for x in inputs]) if inputs.dtype == object
                    else inputs)
    expected = np.asarray(model.predict(model_inputs, verbose=0), dtype=np.float32)
    with tempfile.TemporaryDirectory() as scratch:
        np.save(os.path.join(scratch, "inputs.npy"), inputs, allow_pickle=True)
        np.save(os.path.join(scratch, "expected.npy"), expected)
        result = subprocess.run(
            [sys.executable, "-c", _PARITY_CODE, path, os.path.join(scratch, "inputs.npy"),
             os.path.join(scratch, "expected.npy"), ",".join(imports)],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "Error" in line]
        raise RuntimeError("The exported SavedModel failed to load and run in a fresh "
                           f"TensorFlow process: {(errors or ['(no error line)'])[-1][:500]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["max_abs_diff"]


def signature_summary(path):
    loaded = tf.saved_model.load(path)
    summary = {}
    for name, function in loaded.signatures.items():
        inputs = {key: (spec.dtype.name, spec.shape.as_list())
                  for key, spec in function.structured_input_signature[1].items()}
        outputs = {key: (spec.dtype.name, spec.shape.as_list())
                   for key, spec in function.structured_outputs.items()}
        summary[name] = {"inputs": inputs, "outputs": outputs}
    return summary


# --- export ------------------------------------------------------------------------------


def export(model, path, *, version=None, class_names=None, top_k=None, tflite=None,
           representative_data=None, evaluation_data=None, overwrite=False, root=None,
           sample_inputs=None, parity=True, metrics=None, model_name=None):
    """Exports a classifier for TF Serving (and TFLite), atomically, and checks it.

    Writes `path/<version>/`: a SavedModel whose signatures have stable names,
    warmup requests for TF Serving, and `export_manifest.json`; then loads it
    in a fresh process with plain TensorFlow and records how far its
    predictions are from the Keras model's. `path/models.config` gets a TF
    Serving entry for the model.

    Signatures (image models):
    - `serving_default`: `images` float32 `[batch, height, width, 3]` in
      [0, 255], any size (resized inside).
    - `predict_images`: `image_bytes` string `[batch]` of encoded JPEG / PNG /
      GIF / BMP, decoded inside (TF Serving's REST API accepts
      `{"b64": ...}` for an input whose name ends in `_bytes`). Each image
      is answered on its own: it also returns `valid` bool `[batch]`, False
      (with zero probabilities) for an image that does not decode, and a
      bad image never fails the request.
    Text models have `serving_default` with `texts` string `[batch]`. Every
    signature returns `probabilities` float32 `[batch, num_classes]` and,
    with class names, `top_k_scores` float32 and `top_k_classes` string
    `[batch, top_k]`.

    Args:
        model: `keras.Model`. A classifier (image or text).
        path: str. The model folder, e.g. `"saved_models/flowers"`.
        version: int or None. Defaults to the next integer (1 at first).
        class_names: list of str or None. Needed for `top_k_classes`.
        top_k: int or None. Defaults to `min(5, num_classes)` when class
            names are given, else 0 (no top-k outputs). Asking for top-k
            without class names is an error.
        tflite: None, a variant or a list of them: `"float32"`,
            `"float16"`, `"dynamic"` (dynamic-range int8 weights) or
            `"int8"` (full integer, calibrated on `representative_data`).
        representative_data: dataset or array of images for int8
            calibration (a few hundred images).
        evaluation_data: dataset of `(images, labels)` to measure each
            TFLite variant's accuracy next to the Keras model's.
        overwrite: bool. Replace an existing version. Defaults to `False`.
        root: str or None. When given, `path` must stay inside it.
        sample_inputs: array or None. Inputs for the parity check (and the
            warmup requests). Defaults to 8 random images (or 3 strings).
        parity: bool. Run the parity check. Defaults to `True`.
        metrics: dict or None. Recorded in the manifest.
        model_name: str or None. The TF Serving model name. Defaults to the
            folder name.

    Returns:
        An `ExportResult`.

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> result = tftransfer.export(model, "saved_models/flowers",  # doctest: +SKIP
    ...                            class_names=data.class_names)
    >>> result.path, result.parity_max_abs_diff  # doctest: +SKIP
    ('.../saved_models/flowers/1', 2.9e-08)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model: expected a keras.Model; received {type(model).__name__}.")
    model_dir = resolve_model_dir(path, root)
    # A LoRA model is exported merged (kernel + A @ B, no factors); the parity check
    # compares the merged export with the adapted model itself.
    adapted = model
    from tftransfer.training.freezing import has_lora

    if has_lora(model):
        from tftransfer.training.lora import merge_lora

        model = merge_lora(model)
    num_classes = int(model.output_shape[-1])
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names: {len(class_names)} names for a model with "
                             f"{num_classes} outputs.")
    if top_k is None:
        top_k = min(5, num_classes) if class_names is not None else 0
    elif isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k: expected a non-negative int; received {top_k!r}.")
    elif top_k > 0 and class_names is None:
        raise ValueError("top_k: top-k classes need class names; pass class_names=[...] "
                         "(for example data.class_names), or top_k=0.")
    top_k = min(top_k, num_classes)
    variants = [tflite] if isinstance(tflite, str) else list(tflite or [])
    from tftransfer.export.tflite import VARIANTS, convert_and_evaluate

    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"tflite: expected None or some of {VARIANTS}; received "
                             f"{variant!r}.")
    if "int8" in variants and representative_data is None:
        raise ValueError("tflite='int8' needs representative_data (a few hundred images from "
                         "the training pipeline) to calibrate the quantization.")

    existing = _existing_versions(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    elif isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"version: expected a non-negative int or None; received {version!r}.")
    target = os.path.join(model_dir, str(version))
    if os.path.exists(target) and not overwrite:
        raise ValueError(f"version: {target!r} exists already. Pass overwrite=True to replace "
                         "it, or version=None for the next version.")
    os.makedirs(model_dir, exist_ok=True)
    files.remove_temporaries(model_dir)  # what killed exports left (their process is gone)
    temporary = os.path.join(model_dir, f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    name = model_name or os.path.basename(model_dir.rstrip(os.sep))
    try:
        module = ServingModule(model, class_names, top_k)
        signatures = module.signatures()
        tf.saved_model.save(module, temporary, signatures=signatures)
        samples = _sample_inputs(model, sample_inputs)
        _write_warmup(temporary, name, module, samples)
        summary = signature_summary(temporary)
        manifest = {
            **_describe_model(model),
            "version": version,
            "class_names": class_names,
            "top_k": top_k,
            "signatures": summary,
            "signature_outputs": {key: text for key, text in SIGNATURE_OUTPUTS.items()
                                  if any(key in signature["outputs"]
                                         for signature in summary.values())},
            "packages": _versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "metrics": metrics or {},
        }
        requirements = _serving_requirements(model)
        requires = serving_requirements_note(
            requirements, _custom_ops(temporary) if requirements else [])
        if requires is not None:
            manifest["serving_requires"] = requires
        imports = [package.replace("-", "_") for package in requirements]
        parity_diff = (parity_check(temporary, adapted, samples, imports=imports) if parity
                       else None)
        manifest["parity_max_abs_diff"] = parity_diff
        tflite_results = {}
        for variant in variants:
            tflite_results[variant] = convert_and_evaluate(
                model, variant, os.path.join(temporary, "tflite"),
                representative_data=representative_data, evaluation_data=evaluation_data)
        manifest["tflite"] = tflite_results
        _write_manifest(temporary, manifest)
        # overwrite=True: swap atomically, then drop the old one.
        files.move_folder_into_place(
            temporary, target, os.path.join(model_dir, f"{TEMP_PREFIX}{os.getpid()}-old-{version}"))
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    config_path = os.path.join(model_dir, "models.config")
    with files.replacing(config_path) as config_temporary, open(config_temporary, "w") as handle:
        handle.write(models_config_entry(name, f"/models/{name}"))
    for variant, details in tflite_results.items():
        details["path"] = details["path"].replace(temporary, target)
    return ExportResult(path=target, version=version, signatures=summary,
                        parity_max_abs_diff=parity_diff, tflite=tflite_results,
                        manifest=manifest)


def _write_warmup(directory, name, module, samples):
    if module.text:
        requests = [("serving_default", {"texts": np.asarray(samples[:2], dtype=object)})]
    else:
        png = tf.io.encode_png(tf.cast(samples[0], tf.uint8)).numpy()
        requests = [("serving_default", {"images": samples[:1].astype(np.float32)}),
                    ("predict_images", {"image_bytes": np.array([png], dtype=object)})]
    write_warmup_requests(os.path.join(directory, "assets.extra", "tf_serving_warmup_requests"),
                          name, requests)


def _write_manifest(directory, manifest):
    with open(os.path.join(directory, "export_manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=2)


def load_model(path, *, safe_mode=True):
    """Loads a `.keras` file, a SavedModel folder, or the newest version of an export.

    Args:
        path: str. A `.keras` file; a SavedModel folder (`saved_model.pb`
            inside); or a model folder of numbered versions (the newest is
            loaded).
        safe_mode: bool. For `.keras` files. Defaults to `True`.

    Returns:
        A `keras.Model` for `.keras` files, else the loaded SavedModel (call
        its `signatures["serving_default"]`).

    Example:

    >>> import tftransfer  # doctest: +SKIP
    >>> exported = tftransfer.load_model("saved_models/flowers")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise ValueError(f"path: no file at {path!r}.")
        import tftransfer  # noqa: F401  (registers the custom objects)

        return keras.models.load_model(path, safe_mode=safe_mode)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        import_serving_requirements(path)
        return tf.saved_model.load(path)
    versions = _existing_versions(path)
    if versions:
        folder = os.path.join(path, str(versions[-1]))
        import_serving_requirements(folder)
        return tf.saved_model.load(folder)
    raise ValueError(f"path: {path!r} is neither a .keras file, a SavedModel folder nor a "
                     "folder of numbered SavedModel versions.")
