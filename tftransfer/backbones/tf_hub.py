"""TF-Hub and SavedModel backbones as a Keras 3 layer.

`tensorflow_hub.KerasLayer` is a tf_keras layer and cannot be used inside a
Keras 3 model; `keras.layers.TFSMLayer` copies the module's variables (so
training them changes nothing the module computes) and is refused under
safe_mode. `HubBackbone` loads the module with `tf.saved_model.load` and makes
the module's own variables the layer's weights (no copy), so the optimizer
updates what the module computes with, checkpoints and `.keras` files hold
the fine-tuned values, and a SavedModel export carries them.

Trust: a SavedModel is graph code, and a handle inside a `.keras` file could
point anywhere. Under `safe_mode=True` (Keras' default when loading), a
`.keras` file may load only a trusted handle:

- handles on the stock hosts (`https://tfhub.dev/`, `https://www.kaggle.com/`,
  `https://kaggle.com/`);
- handles this Python process already built a backbone from (you named them
  in your own code);
- prefixes you allowed with `tftransfer.backbones.trust_hub_handles(...)` or
  the environment variable `TFTRANSFER_TRUSTED_HUB_HANDLES` (paths or URL
  prefixes separated by `os.pathsep`).

Anything else is refused with an error that says how to trust it; loading
with `safe_mode=False` trusts the file as a whole, as Keras does.
"""

import hashlib
import os
import threading

import keras
import tensorflow as tf
from keras import ops

TRUSTED_HOSTS = ("https://tfhub.dev/", "https://www.kaggle.com/", "https://kaggle.com/")
TRUST_ENV = "TFTRANSFER_TRUSTED_HUB_HANDLES"

_trusted_prefixes = set()
_trust_lock = threading.Lock()


def _is_url(handle):
    return "://" in handle


def _normalize_handle(handle):
    if _is_url(handle):
        return handle.strip()
    return os.path.abspath(os.path.expanduser(handle.strip()))


def trust_hub_handles(*prefixes):
    """Allows `.keras` files to load TF-Hub handles under these prefixes.

    Args:
        *prefixes: str. Local directories or URL prefixes, e.g.
            `"/models/hub"` or `"https://models.example.com/"`.

    Example:

    >>> import tftransfer
    >>> tftransfer.backbones.trust_hub_handles("/srv/hub_models")
    >>> tftransfer.backbones.is_trusted_hub_handle("/srv/hub_models/resnet/1")
    True
    """
    with _trust_lock:
        for prefix in prefixes:
            if not isinstance(prefix, (str, os.PathLike)) or not str(prefix).strip():
                raise ValueError(f"trust_hub_handles: expected paths or URL prefixes; "
                                 f"received {prefix!r}.")
            _trusted_prefixes.add(_normalize_handle(os.fspath(prefix)))


def _under(handle, prefix):
    if _is_url(prefix):
        return handle == prefix or handle.startswith(prefix.rstrip("/") + "/")
    return handle == prefix or handle.startswith(prefix.rstrip(os.sep) + os.sep)


def is_trusted_hub_handle(handle):
    """Whether a `.keras` file may load `handle` under safe_mode."""
    handle = _normalize_handle(handle)
    if any(handle.startswith(host) for host in TRUSTED_HOSTS):
        return True
    env = [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p.strip()]
    prefixes = set(_trusted_prefixes) | {_normalize_handle(p) for p in env}
    return any(_under(handle, prefix) for prefix in prefixes)


def hub_cache_dir():
    """Where tensorflow_hub caches downloaded modules (TFHUB_CACHE_DIR)."""
    import tempfile

    return os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                             "tfhub_modules")


def _import_tensorflow_hub():
    try:
        import tensorflow_hub
    except ImportError as error:  # pragma: no cover - a dependency of tftransfer
        raise ImportError(
            "TF-Hub URL handles need tensorflow_hub: `pip install tensorflow-hub==0.16.1` "
            "(with setuptools<82, whose pkg_resources it imports)."
        ) from error
    return tensorflow_hub


def resolve_handle(handle):
    """Turns a handle into a local SavedModel directory.

    URLs go through tensorflow_hub's resolver and its cache (TFHUB_CACHE_DIR);
    a module already in the cache needs no network.

    Raises:
        ValueError: for a path that holds no SavedModel, or a URL that can
            be neither found in the cache nor downloaded.
    """
    if not isinstance(handle, str) or not handle.strip():
        raise ValueError(f"handle: expected a TF-Hub URL or a SavedModel path; received "
                         f"{handle!r}.")
    handle = handle.strip()
    if _is_url(handle) and not handle.startswith("file://"):
        hub = _import_tensorflow_hub()
        try:
            path = hub.resolve(handle)
        except Exception as error:
            cached = os.path.join(hub_cache_dir(),
                                  hashlib.sha1(handle.encode("utf8")).hexdigest())
            raise ValueError(
                f"handle {handle!r}: could not download the TF-Hub module ({error}). "
                f"Offline, tensorflow_hub reads it from its cache: on a machine with network "
                f"download {handle}?tf-hub-format=compressed, extract the archive into "
                f"{cached!r} (that folder must hold saved_model.pb; set TFHUB_CACHE_DIR to "
                "use another cache folder), or pass the local SavedModel directory as the "
                "handle."
            ) from error
    else:
        path = handle[len("file://"):] if handle.startswith("file://") else handle
        path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise ValueError(f"handle {handle!r}: no such directory. Pass a TF-Hub URL or the "
                         "directory of a SavedModel (the folder that holds saved_model.pb).")
    if not (os.path.isfile(os.path.join(path, "saved_model.pb"))
            or os.path.isfile(os.path.join(path, "saved_model.pbtxt"))):
        raise ValueError(f"handle {handle!r}: {path!r} is not a SavedModel (it holds no "
                         "saved_model.pb). Pass the folder that tf.saved_model.save wrote.")
    return path


def _first_input_spec(function):
    if isinstance(function, tf.types.experimental.ConcreteFunction):
        concrete = function
    else:
        try:
            concrete = function.concrete_functions[0]
        except (AttributeError, IndexError, TypeError):
            return None
    args, kwargs = concrete.structured_input_signature
    specs = [spec for spec in list(args) + list(kwargs.values())
             if isinstance(spec, tf.TensorSpec)]
    return specs[0] if specs else None


class _HubUsageError(ValueError):
    """A mistake in how the module is used (signature, output_key), said as it is."""


@keras.saving.register_keras_serializable(package="tftransfer")
class HubBackbone(keras.layers.Layer):
    """A TF-Hub module or TF2 SavedModel as a Keras 3 layer that fine-tunes.

    The module's own variables are this layer's weights: the optimizer
    updates them, and `.keras` files, checkpoints and SavedModel exports hold
    their fine-tuned values. While `inference_mode` is on (the default, and
    what `tftransfer.unfreeze()` keeps unless `freeze_batch_norm=False`), the
    module runs with `training=False`; otherwise it runs in training mode when
    the layer is trainable and called in training, as `hub.KerasLayer` does.
    Freezing is whole-module: a hub backbone has no blocks.

    Args:
        handle: str. A tfhub.dev / Kaggle URL (cached in TFHUB_CACHE_DIR) or
            the directory of a SavedModel in the TF2 reusable format
            (`__call__(inputs, training)`, `variables`,
            `trainable_variables`, `regularization_losses`).
        trainable: bool. Fine-tune the module's variables. Defaults to
            `False`.
        signature: str or None. Call this signature instead of `__call__`,
            for modules that only expose signatures. Defaults to None.
        output_key: str or None. The output to use when the module returns a
            dict (signatures do). Defaults to the only output, or
            `"default"`.
        input_kind: str. `"image"` (float images `[batch, h, w, 3]`) or
            `"text"` (strings `[batch]`). Defaults to `"image"`.
        inference_mode: bool. Always run the module with `training=False`.
            Defaults to `True`.
        **kwargs: Base layer keyword arguments.

    Example:

    >>> import tensorflow as tf, tftransfer
    >>> class Features(tf.Module):
    ...     def __init__(self):
    ...         self.w = tf.Variable(tf.ones([3, 4]))
    ...     @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
    ...     def __call__(self, images):
    ...         return tf.reduce_mean(images, [1, 2]) @ self.w
    >>> tf.saved_model.save(Features(), "/tmp/features_module")
    >>> layer = tftransfer.backbones.HubBackbone("/tmp/features_module")
    >>> layer(tf.zeros([2, 8, 8, 3])).shape
    TensorShape([2, 4])
    """

    is_tftransfer_backbone = True

    def __init__(self, handle, trainable=False, signature=None, output_key=None,
                 input_kind="image", inference_mode=True, **kwargs):
        kwargs.setdefault("name", "hub_backbone")
        super().__init__(trainable=trainable, **kwargs)
        if input_kind not in ("image", "text"):
            raise ValueError(f"input_kind: expected 'image' or 'text'; received {input_kind!r}.")
        self.handle = handle
        self.signature = signature
        self.output_key = output_key
        self.input_kind = input_kind
        self.inference_mode = bool(inference_mode)
        self._path = resolve_handle(handle)
        self._module = tf.saved_model.load(self._path)
        with _trust_lock:
            _trusted_prefixes.add(_normalize_handle(handle))
        self._function = self._select_function()
        self._takes_training = self.signature is None and self._accepts_training()
        self._adopt_variables()
        self._output_dim = None

    # --- loading -----------------------------------------------------------------

    def _select_function(self):
        module = self._module
        signatures = sorted(getattr(module, "signatures", {}) or {})
        if self.signature is not None:
            if self.signature not in signatures:
                raise ValueError(
                    f"signature: the module {self.handle!r} has no signature "
                    f"{self.signature!r}; its signatures are {signatures}."
                )
            return module.signatures[self.signature]
        if not callable(module):
            hint = (f"pick one with signature=... (it has {signatures})" if signatures
                    else "it exposes no signatures either")
            raise ValueError(
                f"handle {self.handle!r}: the SavedModel has no __call__ to use as a backbone; "
                f"{hint}."
            )
        return module

    def _accepts_training(self):
        call = getattr(self._module, "__call__", None)
        for concrete in getattr(call, "concrete_functions", []) or []:
            args, kwargs = concrete.structured_input_signature
            if "training" in kwargs or len(args) > 1:
                return True
        return False

    def _adopt_variables(self):
        module = self._module
        variables = list(getattr(module, "variables", []) or [])
        if not variables and self.signature is not None:
            variables = list(getattr(self._function, "variables", []) or [])
        trainable_ids = {id(v) for v in getattr(module, "trainable_variables", []) or []}
        if not hasattr(module, "trainable_variables"):
            trainable_ids = {id(v) for v in variables if v.trainable}
        for index, variable in enumerate(variables):
            self._track_variable(_SharedVariable(
                variable,
                trainable=id(variable) in trainable_ids,
                name=f"{index}_" + variable.name.split(":")[0].replace("/", "_"),
            ))

    # --- calling -----------------------------------------------------------------

    def _input_dtype(self):
        function = self._function if self.signature is not None else getattr(
            self._module, "__call__", None)
        spec = _first_input_spec(function)
        if spec is not None and spec.dtype != tf.string:
            return spec.dtype
        return tf.string if self.input_kind == "text" else tf.float32

    def _run(self, inputs, training):
        if self.signature is not None:
            input_names = sorted(self._function.structured_input_signature[1])
            if len(input_names) != 1:
                raise _HubUsageError(
                    f"signature {self.signature!r} of {self.handle!r} takes {input_names}; "
                    "only signatures with one input can be backbones."
                )
            outputs = self._function(**{input_names[0]: inputs})
        elif self._takes_training:
            outputs = self._function(inputs, training=training)
        else:
            outputs = self._function(inputs)
        if isinstance(outputs, dict):
            keys = sorted(outputs)
            key = self.output_key
            if key is None:
                key = keys[0] if len(keys) == 1 else ("default" if "default" in keys else None)
            if key not in outputs:
                raise _HubUsageError(
                    f"output_key: the module {self.handle!r} returns {keys}; pass output_key= "
                    "one of them."
                )
            outputs = outputs[key]
        return outputs

    def call(self, inputs, training=None):
        run_training = bool(training) and self.trainable and not self.inference_mode
        if self.input_kind == "image":
            inputs = tf.cast(inputs, self._input_dtype())
        outputs = self._run(inputs, run_training)
        return ops.cast(outputs, self.compute_dtype)

    def build(self, input_shape):
        self._output_dim = self._probe(input_shape)
        self.built = True

    def _probe(self, input_shape):
        if self.input_kind == "image":
            shape = [1] + [224 if dim is None else int(dim) for dim in list(input_shape)[1:]]
            sample = tf.zeros(shape, self._input_dtype())
            what = f"float images of shape {shape}"
        else:
            sample = tf.constant(["tftransfer probe"])
            what = "a batch of strings"
        try:
            outputs = self._run(sample, False)
        except _HubUsageError:
            raise
        except Exception as error:
            other = "strings" if self.input_kind == "image" else "images"
            raise ValueError(
                f"handle {self.handle!r}: the module does not take {what} ({type(error).__name__}"
                f": {str(error).splitlines()[0][:300]}). It may expect {other}: use "
                f"{'build_text_classifier' if other == 'strings' else 'build_classifier'} "
                "for it, or pick signature= / output_key=."
            ) from None
        if len(outputs.shape) != 2:
            raise ValueError(
                f"handle {self.handle!r}: the module returns shape {tuple(outputs.shape)}, not a "
                "feature vector [batch, features]. Use a feature-vector module (not a "
                "classification or feature-map one), or pick output_key=."
            )
        return int(outputs.shape[-1])

    def compute_output_shape(self, input_shape):
        if self._output_dim is None:
            self._output_dim = self._probe(input_shape)
        return (input_shape[0], self._output_dim)

    # --- config ------------------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config.update({
            "handle": self.handle,
            "signature": self.signature,
            "output_key": self.output_key,
            "input_kind": self.input_kind,
            "inference_mode": self.inference_mode,
        })
        return config

    @classmethod
    def from_config(cls, config):
        from keras.src.saving.serialization_lib import in_safe_mode

        handle = config.get("handle")
        if in_safe_mode() and not is_trusted_hub_handle(str(handle)):
            raise ValueError(
                f"HubBackbone: refusing to load the TF-Hub handle {handle!r} named inside this "
                "file under safe_mode=True: a SavedModel is graph code and this handle is not "
                "trusted. If you trust it, call tftransfer.backbones.trust_hub_handles("
                f"{handle!r}) (or a prefix of it), or add it to ${TRUST_ENV}, before loading; "
                "or load with safe_mode=False if you trust the whole file."
            )
        return cls(**config)


class _SharedVariable(keras.Variable):
    """A Keras variable that *is* an existing tf.Variable (no copy)."""

    def __init__(self, tf_variable, *, trainable, name):
        self._shared = tf_variable
        super().__init__(
            initializer=lambda shape, dtype: None,
            shape=tuple(tf_variable.shape),
            dtype=tf_variable.dtype.name,
            trainable=trainable,
            name=name,
        )

    def _initialize(self, value):
        self._value = self._shared
