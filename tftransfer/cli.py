"""The `tftransfer` command: backbones, train, tune, distill, evaluate, export, predict, demo.

Built on argparse (the standard library's CLI parser, so the command adds no
dependency). Every subcommand has `--help`. A user mistake (a missing
folder, an unknown backbone, a bad config file) prints one line,
`tftransfer: error: ...`, and exits with code 2; tracebacks are for bugs.

Every flag's help shows its default (`tftransfer train --help`). Warnings are
one line each, `tftransfer: warning: ...`, on stderr. When stdout is not a
terminal (a pipe, a log file), training prints one plain line per epoch
instead of progress bars.

Options of `train` and `tune` can also come from a YAML or JSON file
(`--config run.yaml`, parsed with `yaml.safe_load` / `json.load`, never
executed); flags given on the command line win over the file.
"""

import argparse
import json
import os
import sys
import time
import warnings

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


class UsageError(Exception):
    """A user mistake: reported as one line, exit code 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, unless its help already says it or it has none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default:" in text or "%(default)" in text or not action.option_strings:
            return text
        if action.default is argparse.SUPPRESS or action.default is None:
            return text
        if action.default is False:  # a switch
            return f"{text} (default: off)"
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse, with its own errors reported as one line and defaults in the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` for the command: one `tftransfer: warning:` line, no source."""
    text = " ".join(str(message).split())
    text = text[len("tftransfer: "):] if text.startswith("tftransfer: ") else text
    print(f"tftransfer: warning: {text}", file=sys.stderr, flush=True)


def _epoch_lines():
    """A Keras callback that prints one plain line per epoch (for a pipe or a log file)."""
    import keras

    class EpochLines(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.announce = True

        def on_epoch_begin(self, epoch, logs=None):
            if self.announce:
                self.announce = False
                print(f"{_phase_name(self.model)}: epochs {epoch + 1}-{self.params['epochs']}",
                      flush=True)
            self.start = time.time()

        def on_epoch_end(self, epoch, logs=None):
            figures = ", ".join(f"{name} {float(value):.4f}" for name, value in (logs or {}).items()
                                if name != "learning_rate" and _is_number(value))
            print(f"epoch {epoch + 1}/{self.params['epochs']}: {figures} "
                  f"({time.time() - self.start:.1f} s)", flush=True)

    return EpochLines()


def _is_number(value):
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _phase_name(model):
    """The phase's name: the head phase while the backbone is frozen, else fine-tuning."""
    import tftransfer

    try:
        backbone = tftransfer.find_backbone(model)
    except (TypeError, ValueError):  # the head alone, on cached backbone features
        return "head phase"
    return "fine-tuning" if backbone.trainable_weights else "head phase"


def _progress():
    """`(verbose, callbacks)` for fit: Keras' bars on a terminal, plain lines elsewhere."""
    if sys.stdout.isatty():
        return 1, []
    return 0, [_epoch_lines()]


def chance_warning(evaluation, split="validation"):
    """A warning when an evaluation is near chance, saying what to change; else None.

    Near chance: below the majority class's share plus a quarter of the way from there
    to 1 (0.40 for five balanced classes).

    Example:

    >>> import numpy as np, tftransfer
    >>> from tftransfer.cli import chance_warning
    >>> model = tftransfer.build_classifier("FashionCNN", 5, weights=None)
    >>> x, y = np.zeros((10, 32, 32, 3)), np.arange(10) % 5
    >>> print(chance_warning(tftransfer.evaluate(model, (x, y)))[:45])
    validation accuracy 0.200 is near chance (0.2
    """
    supports = [row["support"] for row in evaluation.per_class.values()]
    chance = max(supports) / max(sum(supports), 1)
    if evaluation.accuracy >= chance + 0.25 * (1.0 - chance):
        return None
    return (f"{split} accuracy {evaluation.accuracy:.3f} is near chance ({chance:.3f}, the "
            f"largest class's share of {len(supports)} classes): the model learned little. "
            "Try more epochs (--head-epochs, --fine-tune-epochs), pretrained weights "
            "(--weights imagenet), a lower learning rate if the loss rose "
            "(--head-learning-rate, --fine-tune-learning-rate), and check that each class "
            "folder holds its own images.")


# --- config files --------------------------------------------------------------------------

TRAIN_OPTIONS = {
    "backbone": "FashionCNN", "weights": "imagenet", "image_size": None, "batch_size": 32,
    "validation_split": 0.2, "test_split": 0.0, "augmentation": None,
    # fit()'s own defaults: budgets sized by the data, the whole backbone fine-tuned.
    "head_epochs": "auto", "fine_tune_epochs": "auto", "unfreeze_blocks": "all",
    "head_learning_rate": 3e-3, "fine_tune_learning_rate": "auto", "dropout_rate": 0.2,
    "label_smoothing": 0.0, "mixed_precision": "auto", "output": "tftransfer_run",
    "export": None, "checkpoint_dir": None, "path_column": "path", "label_column": "label",
    "tfds_data_dir": None, "seed": 1337,
}
DISTILL_OPTIONS = {
    "student": "FashionCNN", "weights": "imagenet", "image_size": None, "batch_size": 32,
    "validation_split": 0.2, "test_split": 0.0, "augmentation": None, "temperature": 4.0,
    "alpha": 0.9, "head_epochs": 3, "fine_tune_epochs": 5, "unfreeze_blocks": 1,
    "head_learning_rate": 1e-3, "fine_tune_learning_rate": 1e-4, "output": "tftransfer_run",
    "path_column": "path", "label_column": "label", "tfds_data_dir": None, "seed": 1337,
}
TUNE_OPTIONS = {
    "backbone": "FashionCNN", "weights": "imagenet", "image_size": None, "batch_size": 32,
    "validation_split": 0.2, "max_trials": 10, "tuner": "random", "head_epochs": "auto",
    "fine_tune_epochs": "auto", "folds": "auto", "refit": "auto", "directory": "tuning",
    "project_name": None,
    "path_column": "path", "label_column": "label", "tfds_data_dir": None,
    "role": None, "oracle": None, "tuner_id": None, "isolate_trials": False,
}


def load_config(path, allowed):
    """Reads a YAML or JSON config file into a dict, safely, checking its keys.

    Args:
        path: str. A `.yaml`, `.yml` or `.json` file of `option: value`
            lines; option names as the flags', with `_` or `-`.
        allowed: iterable of str. The options the subcommand knows.

    Returns:
        A dict of options.

    Example:

    >>> import json, tempfile
    >>> from tftransfer.cli import load_config
    >>> path = tempfile.mktemp(suffix=".json")
    >>> _ = open(path, "w").write(json.dumps({"head-epochs": 2}))
    >>> load_config(path, ["head_epochs"])
    {'head_epochs': 2}
    """
    if not os.path.isfile(path):
        raise UsageError(f"--config: no file at {path!r}")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        if path.endswith(".json"):
            config = json.loads(text)
        elif path.endswith((".yaml", ".yml")):
            import yaml

            config = yaml.safe_load(text)  # plain data only: no tags, no code
        else:
            raise UsageError(f"--config: expected a .yaml, .yml or .json file; received {path!r}")
    except UsageError:
        raise
    except Exception as error:  # yaml.YAMLError, json.JSONDecodeError
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"--config: {path!r} does not parse: {first}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise UsageError(f"--config: {path!r} must hold a mapping of option: value")
    config = {str(key).replace("-", "_"): value for key, value in config.items()}
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise UsageError(f"--config: unknown option(s) {unknown} in {path!r}; known: "
                         f"{sorted(allowed)}")
    return config


def _settings(args, defaults):
    """Defaults, then the config file, then the flags given on the command line."""
    settings = dict(defaults)
    if getattr(args, "config", None):
        settings.update(load_config(args.config, defaults))
    settings.update({key: value for key, value in vars(args).items()
                     if key in defaults and value is not None})
    return settings


# --- shared helpers ------------------------------------------------------------------------


def _check_backbone(name):
    import tftransfer

    if str(name).startswith("tfhub:"):
        return
    try:
        tftransfer.backbones.get_backbone_spec(name)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _image_size(settings):
    import tftransfer

    if settings.get("image_size"):
        return int(settings["image_size"])
    if str(settings["backbone"]).startswith("tfhub:"):
        return 224
    return tftransfer.backbones.get_backbone_spec(settings["backbone"]).default_size


def load_data(source, settings, *, image_size):
    """A `DatasetBundle` from a folder, a CSV file of image paths, or `tfds:<name>`."""
    import tftransfer

    common = dict(batch_size=int(settings.get("batch_size", 32)),
                  validation_split=float(settings.get("validation_split", 0.2)))
    try:
        if source.startswith("tfds:"):
            return tftransfer.data.tfds.from_tfds(source[5:], image_size=image_size,
                                                  data_dir=settings.get("tfds_data_dir"),
                                                  **common)
        if source.endswith(".csv"):
            if not os.path.isfile(source):
                raise UsageError(f"data: no CSV file at {source!r}")
            return tftransfer.data.from_csv(source, settings.get("path_column", "path"),
                                            settings.get("label_column", "label"), image_size,
                                            test_split=float(settings.get("test_split", 0.0)),
                                            augmentation=settings.get("augmentation"), **common)
        if not os.path.isdir(source):
            raise UsageError(f"data: {source!r} does not exist or is not a folder (expected a "
                             "folder of class folders, a .csv file or tfds:<name>)")
        return tftransfer.data.from_directory(
            source, image_size, test_split=float(settings.get("test_split", 0.0)),
            augmentation=settings.get("augmentation"), **common)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error).splitlines()[0]) from None


def _classes_path(model_path):
    return os.path.splitext(model_path)[0] + ".classes.json"


def _load_keras(path):
    import tftransfer

    try:
        model = tftransfer.load_model(path)
    except ValueError as error:
        raise UsageError(str(error)) from None
    names = None
    if os.path.isfile(_classes_path(path)):
        with open(_classes_path(path)) as handle:
            names = json.load(handle)
    return model, names


def _exported_classes(path):
    from tftransfer.export.saved_model import _existing_versions

    folder = path
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        versions = _existing_versions(path)
        folder = os.path.join(path, str(versions[-1])) if versions else path
    manifest = os.path.join(folder, "export_manifest.json")
    if os.path.isfile(manifest):
        with open(manifest) as handle:
            return json.load(handle).get("class_names")
    return None


def _load_any(path):
    """`(model, class_names)`: a Keras model, or an exported SavedModel's serving signature."""
    import tftransfer

    if not os.path.exists(path):
        raise UsageError(f"model: {path!r} does not exist (expected a .keras file or an export "
                         "folder)")
    if path.endswith(".keras"):
        return _load_keras(path)
    try:
        loaded = tftransfer.load_model(path)
    except ValueError as error:
        raise UsageError(str(error)) from None
    return loaded, _exported_classes(path)


# --- subcommands ---------------------------------------------------------------------------


def _cmd_backbones(args):
    import tftransfer

    if args.action == "list":
        for name in tftransfer.list_backbones():
            print(name)
        return 0
    if not args.name:
        raise UsageError("backbones info: name a backbone, e.g. `tftransfer backbones info "
                         "ResNet50`")
    try:
        info = tftransfer.backbone_info(args.name)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"{info.name} ({info.source}, family {info.family})")
    print(f"  preprocessing: {info.preprocessing}")
    print(f"  default size: {info.default_size}, smallest: {info.min_size}")
    print(f"  feature dimension: {info.feature_dim}")
    print(f"  blocks ({info.num_blocks}, bottom to top): {', '.join(info.blocks)}")
    return 0


def _cmd_train(args):
    import tftransfer

    settings = _settings(args, TRAIN_OPTIONS)
    _check_backbone(settings["backbone"])
    size = _image_size(settings)
    data = load_data(args.data, settings, image_size=size)
    weights = None if str(settings["weights"]).lower() == "none" else settings["weights"]
    verbose, callbacks = _progress()
    try:
        model = tftransfer.build_classifier(settings["backbone"], data.num_classes,
                                            image_size=size, weights=weights,
                                            dropout_rate=float(settings["dropout_rate"]))
        result = tftransfer.fit(
            model, data, head_epochs=_auto_int(settings["head_epochs"], "head_epochs"),
            fine_tune_epochs=_auto_int(settings["fine_tune_epochs"], "fine_tune_epochs"),
            unfreeze_blocks=_auto_int(settings["unfreeze_blocks"], "unfreeze_blocks", "all"),
            head_learning_rate=float(settings["head_learning_rate"]),
            fine_tune_learning_rate=_auto_rate(settings["fine_tune_learning_rate"],
                                               "fine_tune_learning_rate"),
            label_smoothing=float(settings["label_smoothing"]),
            mixed_precision=settings["mixed_precision"],
            checkpoint_dir=settings["checkpoint_dir"], seed=int(settings["seed"]),
            verbose=verbose, callbacks=callbacks)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    output = settings["output"]
    os.makedirs(output, exist_ok=True)
    model_path = os.path.join(output, "model.keras")
    result.model.save(model_path)
    with open(_classes_path(model_path), "w") as handle:
        json.dump(list(data.class_names), handle)
    print(f"saved {model_path}")
    held_out = data.test if data.test is not None else data.validation
    export_result = None
    if settings["export"]:
        export_result = tftransfer.export(result.model, settings["export"],
                                          class_names=data.class_names)
        print(f"exported {export_result.path}")
    if held_out is not None:
        evaluation = tftransfer.evaluate(result.model, data)
        report_dir = os.path.join(os.path.dirname(export_result.path),
                                  f"report_v{export_result.version}") if export_result \
            else os.path.join(output, "report")
        card = tftransfer.evaluation.write_report(
            report_dir, evaluation, training=result, export=export_result,
            backbone=settings["backbone"], data_description=args.data)
        split = "test" if data.test is not None else "validation"
        print(f"evaluation ({split} split): {evaluation}")
        print(f"report {card}")
        note = chance_warning(evaluation, split)
        if note:
            print(f"tftransfer: warning: {note}", file=sys.stderr)
    return 0


def _cmd_distill(args):
    import tftransfer

    settings = _settings(args, DISTILL_OPTIONS)
    _check_backbone(settings["student"])
    if not args.teacher.endswith(".keras") or not os.path.isfile(args.teacher):
        raise UsageError(f"teacher: no .keras file at {args.teacher!r}")
    teacher, _ = _load_keras(args.teacher)
    size = _image_size({**settings, "backbone": settings["student"]})
    data = load_data(args.data, settings, image_size=size)
    weights = None if str(settings["weights"]).lower() == "none" else settings["weights"]
    verbose, callbacks = _progress()
    try:
        student = tftransfer.build_classifier(settings["student"], data.num_classes,
                                              image_size=size, weights=weights)
        result = tftransfer.distill(
            teacher, student, data, temperature=float(settings["temperature"]),
            alpha=float(settings["alpha"]), head_epochs=int(settings["head_epochs"]),
            fine_tune_epochs=int(settings["fine_tune_epochs"]),
            unfreeze_blocks=int(settings["unfreeze_blocks"]),
            head_learning_rate=float(settings["head_learning_rate"]),
            fine_tune_learning_rate=float(settings["fine_tune_learning_rate"]),
            seed=int(settings["seed"]), verbose=verbose, callbacks=callbacks)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    os.makedirs(settings["output"], exist_ok=True)
    model_path = os.path.join(settings["output"], "student.keras")
    result.model.save(model_path)
    with open(_classes_path(model_path), "w") as handle:
        json.dump(list(data.class_names), handle)
    print(f"saved {model_path}")
    if data.test is not None or data.validation is not None:
        evaluation = tftransfer.evaluate(result.model, data)
        print(f"student evaluation: {evaluation}")
        note = chance_warning(evaluation, "test" if data.test is not None else "validation")
        if note:
            print(f"tftransfer: warning: {note}", file=sys.stderr)
    return 0


def _cmd_evaluate(args):
    import tftransfer

    model, names = _load_any(args.model)
    size = None
    if hasattr(model, "input_shape"):
        size = int(model.input_shape[1])
    data = load_data(args.data, {"batch_size": args.batch_size, "validation_split": 0.0},
                     image_size=size or args.image_size)
    split = next(d for d in (data.test, data.validation, data.train) if d is not None)
    evaluation = tftransfer.evaluate(model, split, class_names=names or data.class_names,
                                     top_k=args.top_k)
    if args.json:
        print(json.dumps(evaluation.to_dict()))
    else:
        print(evaluation)
        for name, row in evaluation.per_class.items():
            print(f"  {name}: precision {row['precision']:.3f} recall {row['recall']:.3f} "
                  f"F1 {row['f1']:.3f} ({row['support']})")
    if args.report:
        print(f"report {tftransfer.evaluation.write_report(args.report, evaluation)}")
    return 0


def _cmd_export(args):
    import tftransfer

    if not args.model.endswith(".keras"):
        raise UsageError(f"model: expected a .keras file to export; received {args.model!r}")
    if not os.path.isfile(args.model):
        raise UsageError(f"model: no file at {args.model!r}")
    model, names = _load_keras(args.model)
    if args.class_names:
        names = [name.strip() for name in args.class_names.split(",")]
    tflite = [v.strip() for v in args.tflite.split(",")] if args.tflite else None
    try:
        result = tftransfer.export(model, args.output, version=args.version, class_names=names,
                                   tflite=tflite, overwrite=args.overwrite)
    except ValueError as error:
        raise UsageError(str(error).splitlines()[0]) from None
    print(f"exported {result.path} (signatures: {', '.join(result.signatures)}; largest "
          f"difference from Keras in a fresh process: {result.parity_max_abs_diff:.2e})")
    model_dir = os.path.dirname(result.path)
    print("serve it: " + tftransfer.evaluation.serving_command(model_dir,
                                                               os.path.basename(model_dir)))
    return 0


def predict_files(model, names, paths, top_k=3):
    """Predictions for image files: a list of `{"file", "classes", "scores"}`."""
    import numpy as np
    import tensorflow as tf

    from tftransfer.data.images import decode_image

    contents = []
    for path in paths:
        if not os.path.isfile(path):
            raise UsageError(f"images: no file at {path!r}")
        with open(path, "rb") as handle:
            contents.append(handle.read())
    if hasattr(model, "signatures") and "predict_images" in model.signatures:
        signature = model.signatures["predict_images"]
        try:
            outputs = signature(image_bytes=tf.constant(contents))
        except tf.errors.InvalidArgumentError:
            # An export made before `valid` existed: one bad image fails the whole batch.
            _refuse_undecodable([path for path, content in zip(paths, contents)
                                 if not _signature_answers(signature, content)] or paths)
        probabilities = outputs["probabilities"].numpy()
        valid = outputs["valid"].numpy() if "valid" in outputs else [True] * len(paths)
        _refuse_undecodable(path for path, ok in zip(paths, valid) if not ok)
    else:
        size = tuple(int(v) for v in model.input_shape[1:3])
        images, failed = [], []
        for path, content in zip(paths, contents):
            try:
                images.append(tf.cast(decode_image(content, size), tf.float32))
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, ValueError):
                failed.append(path)
        _refuse_undecodable(failed)
        probabilities = np.asarray(model.predict_on_batch(tf.stack(images)))
    return _ranked("file", paths, probabilities, names, top_k)


def _signature_answers(signature, content):
    import tensorflow as tf

    try:
        signature(image_bytes=tf.constant([content]))
    except tf.errors.InvalidArgumentError:
        return False
    return True


def _refuse_undecodable(paths):
    paths = list(paths)
    if paths:
        raise UsageError(f"images: {len(paths)} file(s) do not decode as images (PNG, JPEG, "
                         f"GIF or BMP): {', '.join(repr(path) for path in paths)}")


def _ranked(key, inputs, probabilities, names, top_k):
    """`[{key: input, "classes", "scores"}]`: each row's `top_k` classes, best first."""
    import numpy as np

    names = names or [str(i) for i in range(probabilities.shape[1])]
    results = []
    for item, row in zip(inputs, probabilities):
        order = np.argsort(-row)[:top_k]
        results.append({key: item, "classes": [names[i] for i in order],
                        "scores": [round(float(row[i]), 6) for i in order]})
    return results


def predict_texts(model, names, texts, top_k=3):
    """Predictions for strings: a list of `{"text", "classes", "scores"}`.

    Example:

    >>> import numpy as np
    >>> class Model:  # anything with predict_on_batch, as a .keras text model
    ...     def predict_on_batch(self, texts):
    ...         return np.array([[0.2, 0.8]] * len(texts))
    >>> predict_texts(Model(), ["ham", "spam"], ["win money now"], top_k=1)
    [{'text': 'win money now', 'classes': ['spam'], 'scores': [0.8]}]
    """
    import numpy as np
    import tensorflow as tf

    batch = tf.constant([str(text) for text in texts])
    if hasattr(model, "signatures"):
        signature = model.signatures["serving_default"]
        (input_name,) = signature.structured_input_signature[1]
        if signature.structured_input_signature[1][input_name].dtype != tf.string:
            raise UsageError("--text: this export takes images; pass image files instead")
        probabilities = signature(**{input_name: batch})["probabilities"].numpy()
    else:
        if getattr(model, "inputs", None) and model.inputs[0].dtype != "string":
            raise UsageError("--text: this model takes images; pass image files instead")
        probabilities = np.asarray(model.predict_on_batch(batch))
    return _ranked("text", texts, probabilities, names, top_k)


def _cmd_predict(args):
    if bool(args.images) == bool(args.text):
        raise UsageError("predict: pass image files, or --text \"...\" (once per text) for a "
                         "text model")
    model, names = _load_any(args.model)
    if args.text:
        for entry in predict_texts(model, names, args.text, top_k=args.top_k):
            if args.json:
                print(json.dumps(entry))
            else:
                best = ", ".join(f"{c} {s:.3f}" for c, s in zip(entry["classes"],
                                                                 entry["scores"]))
                print(f"{entry['text'][:60]!r}: {best}")
        return 0
    for entry in predict_files(model, names, args.images, top_k=args.top_k):
        if args.json:
            print(json.dumps(entry))
        else:
            best = ", ".join(f"{c} {s:.3f}" for c, s in zip(entry["classes"], entry["scores"]))
            print(f"{entry['file']}: {best}")
    return 0


def distributed_tuning_env(role, oracle, tuner_id=None):
    """The keras-tuner environment variables for `--role chief|worker --oracle host:port`."""
    if role is None:
        return {}
    if not oracle or ":" not in oracle:
        raise UsageError("--oracle: expected host:port of the chief, e.g. 10.0.0.1:8000")
    host, port = oracle.rsplit(":", 1)
    if not port.isdigit():
        raise UsageError(f"--oracle: the port must be a number; received {port!r}")
    if role == "chief":
        tuner_id = "chief"
    elif not tuner_id or tuner_id == "chief":
        raise UsageError("--tuner-id: a worker needs its own id, e.g. --tuner-id worker0")
    return {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host,
            "KERASTUNER_ORACLE_PORT": port}


def _cmd_tune(args):
    import tftransfer

    settings = _settings(args, TUNE_OPTIONS)
    env = distributed_tuning_env(settings["role"], settings["oracle"], settings["tuner_id"])
    if not (args.data.startswith("tfds:") or os.path.exists(args.data)):
        raise UsageError(f"data: {args.data!r} does not exist or is not a folder")
    _check_backbone(settings["backbone"])
    data = load_data(args.data, settings, image_size=_image_size(settings))
    os.environ.update(env)
    weights = None if str(settings["weights"]).lower() == "none" else settings["weights"]
    result = tftransfer.tune(settings["backbone"], data, max_trials=int(settings["max_trials"]),
                             tuner=settings["tuner"], directory=settings["directory"],
                             project_name=settings["project_name"],
                             head_epochs=_auto_int(settings["head_epochs"], "head_epochs"),
                             fine_tune_epochs=_auto_int(settings["fine_tune_epochs"],
                                                        "fine_tune_epochs"),
                             folds=_folds(settings["folds"]), refit=_refit(settings["refit"]),
                             weights=weights, isolate_trials=bool(settings["isolate_trials"]))
    print(f"trials finished here: {len(result.trials)} (chosen by {result.selection})")
    if result.best_hyperparameters:
        print(f"best hyperparameters: {result.best_hyperparameters}")
    return 0


def _cmd_demo(args):
    if args.text:
        from tftransfer.text_demo import run_text_demo

        try:
            run_text_demo(args.output_dir, export_dir=args.export_dir or os.path.join(
                "saved_models", "demo_text"))
        except (ImportError, ValueError) as error:
            raise UsageError(str(error).splitlines()[0]) from None
        return 0
    from tftransfer.demo import run_demo

    run_demo(args.output_dir, export_dir=args.export_dir or os.path.join("saved_models", "demo"))
    return 0


def _auto_rate(value, name):
    """A float, or "auto" kept as it is; for flags and config files."""
    return _auto_int(value, name, kind=float, what="a number")


def _folds(value):
    """`--folds`: auto, none, or an int."""
    if isinstance(value, str) and value.strip().lower() == "none" or value is None:
        return None
    return _auto_int(value, "folds")


def _refit(value):
    """`--refit`: auto, yes or no."""
    if isinstance(value, bool) or value == "auto":
        return value
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    if text == "auto":
        return "auto"
    raise UsageError(f"refit: expected auto, yes or no; received {value!r}.")


# --- the parser ----------------------------------------------------------------------------


def _auto_int(value, name, word="auto", *, kind=int, what="an int"):
    """An int (or `kind`), or `word` ("auto", "all") kept as it is; for flags and config
    files."""
    if isinstance(value, str) and value.strip().lower() == word:
        return word
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: expected {what} or '{word}'; received {value!r}.") from None


# Numeric flags shared by train, tune and distill: name -> type.
NUMBER_FLAGS = {
    "test-split": float, "head-epochs": int, "fine-tune-epochs": int, "unfreeze-blocks": int,
    "head-learning-rate": float, "fine-tune-learning-rate": float, "dropout-rate": float,
    "label-smoothing": float, "max-trials": int, "temperature": float, "seed": int,
}


NUMBER_HELP = {
    "test-split": "fraction of the images held out for the final evaluation (a folder with "
                  "train/ and test/ sub-folders uses its test/ instead)",
    "head-epochs": "epochs of the head phase on the frozen backbone; auto: sized by the data "
                   "(at least 300 optimizer steps and 2 epochs, at most 100)",
    "fine-tune-epochs": "epochs of fine-tuning; auto: sized by the data (at least 100 "
                        "optimizer steps and 2 epochs, at most 100)",
    "unfreeze-blocks": "backbone blocks to fine-tune, counted from the top, or all "
                       "(BatchNorm stays frozen)",
    "head-learning-rate": "learning rate of the head phase",
    "fine-tune-learning-rate": "learning rate of fine-tuning; auto: 1e-3 on image backbones, "
                               "5e-5 on text encoders",
    "dropout-rate": "dropout before the output layer",
    "label-smoothing": "label smoothing of the cross-entropy",
    "max-trials": "trials (configurations) to train",
    "temperature": "how much the teacher's probabilities are softened (> 0)",
    "seed": "random seed: data split, initialization, shuffling",
}


def _numbers(parser, options, *names, words=None):
    """Adds numeric flags, their defaults from `options`; `words` maps a flag to a word it
    also takes ("auto", "all")."""
    words = words or {}
    for name in names:
        kind = NUMBER_FLAGS[name]
        if name in words:
            word = words[name]
            kind = (lambda text, kind=kind, word=word:
                    word if text.strip().lower() == word else kind(text))
            kind.__name__ = f"{NUMBER_FLAGS[name].__name__} or '{word}'"
        default = options[name.replace("-", "_")]
        parser.add_argument(f"--{name}", type=kind,
                            help=f"{NUMBER_HELP[name]} (default: {default})")


def _data_options(parser, options, *, backbone_flag="--backbone"):
    name = backbone_flag.lstrip("-")
    parser.add_argument(backbone_flag, help="a registry name (`tftransfer backbones list`) or "
                        f"tfhub:<handle> (default: {options[name]}, the embedded one)")
    parser.add_argument("--weights", help="imagenet (the backbone's pretrained weights; for "
                        "FashionCNN its own embedded ones), none (random), or a weights file "
                        f"(default: {options['weights']})")
    parser.add_argument("--image-size", type=int, help="input size in pixels (default: the "
                        "backbone's own size)")
    parser.add_argument("--batch-size", type=int,
                        help=f"images per batch (default: {options['batch_size']})")
    parser.add_argument("--validation-split", type=float,
                        help="fraction of the training images held out to watch training and "
                             f"stop early (default: {options['validation_split']})")
    parser.add_argument("--path-column", help="CSV data: the image path column "
                        f"(default: {options['path_column']})")
    parser.add_argument("--label-column", help="CSV data: the label column "
                        f"(default: {options['label_column']})")
    parser.add_argument("--tfds-data-dir", help="tfds:<name> data: the TFDS data_dir "
                        "(default: TFDS's own, ~/tensorflow_datasets)")
    parser.add_argument("--config", help="a YAML or JSON file of options; flags given on the "
                        "command line win (default: none)")


def build_parser():
    """The argparse parser of the `tftransfer` command."""
    # --verbose is read before TensorFlow loads (tftransfer/_startup.py); here it is only
    # accepted, before or after the subcommand.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show TensorFlow's start-up and log lines (default: off)")
    parser = _Parser(prog="tftransfer", parents=[verbose],
                     description="Transfer learning on Keras 3 and TensorFlow.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    backbones = commands.add_parser("backbones", parents=[verbose],
                                    help="list backbones or describe one")
    backbones.add_argument("action", choices=("list", "info"))
    backbones.add_argument("name", nargs="?", help="a backbone name, for `info`")
    backbones.set_defaults(handler=_cmd_backbones)

    train = commands.add_parser(
        "train", parents=[verbose], help="train a classifier: head phase, then fine-tuning",
        description="Train a classifier on a folder of class folders, a CSV of image paths or "
                    "tfds:<name>; save OUTPUT/model.keras, evaluate on the test split (else "
                    "validation) and write a report; with --export, a SavedModel for TF "
                    "Serving.")
    train.add_argument("data", help="a folder of class folders, a .csv file, or tfds:<name>")
    _data_options(train, TRAIN_OPTIONS)
    _numbers(train, TRAIN_OPTIONS, "test-split", "head-epochs", "fine-tune-epochs",
             "unfreeze-blocks",
             "head-learning-rate", "fine-tune-learning-rate", "dropout-rate", "label-smoothing",
             "seed", words={"head-epochs": "auto", "fine-tune-epochs": "auto",
                            "unfreeze-blocks": "all", "fine-tune-learning-rate": "auto"})
    train.add_argument("--augmentation", choices=("light", "medium", "heavy"),
                       help="random flips, crops and colour changes inside the model, in "
                            "training only (default: none)")
    train.add_argument("--mixed-precision", choices=("auto", "float32", "mixed_float16",
                                                      "mixed_bfloat16"),
                       help="auto: mixed on GPUs that gain from it, float32 on CPUs "
                            f"(default: {TRAIN_OPTIONS['mixed_precision']})")
    train.add_argument("--checkpoint-dir", help="resumable checkpoints: run the same command "
                       "again to resume (default: none)")
    train.add_argument("--output", help="folder for model.keras and the report "
                       f"(default: {TRAIN_OPTIONS['output']})")
    train.add_argument("--export", help="also export a SavedModel for TF Serving to this model "
                       "folder (default: none)")
    train.set_defaults(handler=_cmd_train)

    tune = commands.add_parser(
        "tune", parents=[verbose], help="search freeze depth and learning rates (keras-tuner)",
        description="Search unfreeze depth, learning rates and dropout over a folder of class "
                    "folders. Across machines: start one chief (--role chief --oracle "
                    "HOST:PORT) and any number of workers (--role worker --oracle HOST:PORT "
                    "--tuner-id worker0), all with the same --directory on shared storage.")
    tune.add_argument("data", help="a folder of class folders, a .csv file, or tfds:<name>")
    _data_options(tune, TUNE_OPTIONS)
    _numbers(tune, TUNE_OPTIONS, "max-trials", "head-epochs", "fine-tune-epochs",
             words={"head-epochs": "auto", "fine-tune-epochs": "auto"})
    tune.add_argument("--folds", help="k-fold selection: auto (3 folds below 1,000 labelled "
                      "images), none (the validation split) or a number (default: auto)")
    tune.add_argument("--refit", choices=("auto", "yes", "no"),
                      help="train the best configuration again on train + validation "
                           "(auto: when cross-validated) (default: auto)")
    tune.add_argument("--tuner", choices=("random", "bayesian", "hyperband"),
                      help=f"how the next trial is chosen (default: {TUNE_OPTIONS['tuner']})")
    tune.add_argument("--directory", help="where trials are kept; a killed search resumes from "
                      f"it (default: {TUNE_OPTIONS['directory']})")
    tune.add_argument("--project-name", help="the search's folder inside --directory "
                      "(default: <backbone>_search)")
    tune.add_argument("--isolate-trials", action="store_true", default=None,
                      help="run each trial in its own process (default: off)")
    tune.add_argument("--role", choices=("chief", "worker"),
                      help="distributed search: this process's role (default: none, a search "
                           "on this machine alone)")
    tune.add_argument("--oracle", help="HOST:PORT of the chief's oracle (default: none)")
    tune.add_argument("--tuner-id", help="a worker's id; the chief's is 'chief' (default: "
                      "none)")
    tune.set_defaults(handler=_cmd_tune)

    distill = commands.add_parser(
        "distill", parents=[verbose],
        help="train a small student on a trained teacher's soft targets",
        description="Knowledge distillation: train a student classifier (any backbone) on a "
                    "teacher .keras model's soft targets and the labels; save "
                    "OUTPUT/student.keras.")
    distill.add_argument("teacher", help="the trained teacher, a .keras file")
    distill.add_argument("data", help="a folder of class folders, a .csv file, or tfds:<name>")
    _data_options(distill, DISTILL_OPTIONS, backbone_flag="--student")
    _numbers(distill, DISTILL_OPTIONS, "test-split", "temperature", "head-epochs",
             "fine-tune-epochs",
             "unfreeze-blocks", "head-learning-rate", "fine-tune-learning-rate", "seed")
    distill.add_argument("--alpha", type=float, help="weight of the soft targets, in [0, 1] "
                         f"(default: {DISTILL_OPTIONS['alpha']})")
    distill.add_argument("--augmentation", choices=("light", "medium", "heavy"),
                         help="random flips, crops and colour changes in training "
                              "(default: none)")
    distill.add_argument("--output", help="folder for student.keras "
                         f"(default: {DISTILL_OPTIONS['output']})")
    distill.set_defaults(handler=_cmd_distill)

    evaluate = commands.add_parser(
        "evaluate", parents=[verbose],
        help="accuracy, top-k, per-class figures, calibration of a model",
        description="Evaluate a .keras file or an export folder on a folder of class folders "
                    "(its test/ split when it has one, else all of it).")
    evaluate.add_argument("model", help="a .keras file or an export folder")
    evaluate.add_argument("data", help="a folder of class folders, a .csv file, or tfds:<name>")
    evaluate.add_argument("--image-size", type=int, default=224,
                          help="for export folders (they resize inside)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="images per batch")
    evaluate.add_argument("--top-k", type=int, default=5,
                          help="k of the top-k accuracy, reported only when below the number "
                               "of classes")
    evaluate.add_argument("--report", help="write a model card and plots to this folder "
                          "(default: none)")
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")
    evaluate.set_defaults(handler=_cmd_evaluate)

    export = commands.add_parser(
        "export", parents=[verbose], help="export a .keras model for TF Serving (and TFLite)",
        description="Export a .keras classifier to OUTPUT/<version>/ (a SavedModel with "
                    "serving_default and predict_images signatures), check it in a fresh "
                    "process, and print the TF Serving command.")
    export.add_argument("model", help="a .keras file")
    export.add_argument("output", help="the model folder, e.g. saved_models/flowers")
    export.add_argument("--version", type=int, help="the version folder's number "
                        "(default: one above the highest there)")
    export.add_argument("--class-names", help="comma-separated (default: those of "
                        "<model>.classes.json)")
    export.add_argument("--tflite", help="TFLite variants too, comma-separated: "
                        "float32,float16,dynamic (default: none)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace an existing version folder")
    export.set_defaults(handler=_cmd_export)

    predict = commands.add_parser(
        "predict", parents=[verbose],
        help="classify image files (or texts) with a .keras file or an export",
        description="Print the top classes of each image file, or of each --text for a text "
                    "model.")
    predict.add_argument("model", help="a .keras file or an export folder")
    predict.add_argument("images", nargs="*", help="image files")
    predict.add_argument("--text", action="append",
                         help="a text to classify (text models; repeat for several) "
                              "(default: none, classify image files)")
    predict.add_argument("--top-k", type=int, default=3, help="classes to print per input")
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.set_defaults(handler=_cmd_predict)

    demo = commands.add_parser(
        "demo", parents=[verbose], help="run the offline demo",
        description="Transfer the embedded backbone to the embedded target set (Fashion-MNIST "
                    "classes 5-9), next to the same network trained from scratch; evaluate, "
                    "plot, export and check the export.")
    demo.add_argument("--output-dir", default="demo_output",
                      help="folder for the plots and the .keras file")
    demo.add_argument("--export-dir", help="the TF Serving model folder (default: "
                      "saved_models/demo, or saved_models/demo_text with --text)")
    demo.add_argument("--text", action="store_true",
                      help="the text demo instead: all-MiniLM-L6-v2 (KerasHub) transferred "
                           "to 300 shipped fortune(6) quotes on six topics")
    demo.set_defaults(handler=_cmd_demo)

    from tftransfer.selection.cli import add_rank_parser

    add_rank_parser(commands, parents=[verbose])
    return parser


def main(argv=None):
    """Runs the command; returns its exit code (2 for user mistakes)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.handler(args)
    except UsageError as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else "usage error"
        print(f"tftransfer: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
