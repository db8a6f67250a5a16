"""A table of wrong types, shapes, ranges and paths for every public function.

Each row calls one public function with one bad argument and expects a
ValueError or TypeError whose message names that argument, so a user reads
what to fix instead of a traceback from deep inside TensorFlow.
"""

import re
import types

import numpy as np
import pytest

import tftransfer
from tftransfer import backbones, checkpoints, evaluation, heads, layers, training
from tftransfer import data as tdata

# (function, call, argument the message must name). `c` holds a small valid
# model, data, arrays and a temporary folder; every call changes one thing.
CASES = [
    # --- models ---
    ("build_classifier", lambda c: tftransfer.build_classifier(123, 3), "backbone"),
    ("build_classifier", lambda c: tftransfer.build_classifier("NoSuchNet", 3), "backbone"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 0), "num_classes"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 2.5),
     "num_classes"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", "3"),
     "num_classes"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", True),
     "num_classes"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 3, image_size=-5),
     "image_size"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 3,
                                                               image_size="big"), "image_size"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 3,
                                                               image_size=(32,)), "image_size"),
    ("build_classifier", lambda c: tftransfer.build_classifier(
        "FashionCNN", 3, weights=str(c.tmp / "missing.weights.h5")), "weights"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 3,
                                                               dropout_rate=1.5), "dropout_rate"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 3,
                                                               dropout_rate="x"), "dropout_rate"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 3,
                                                               head_units=(-3,)), "head_units"),
    ("build_classifier", lambda c: tftransfer.build_classifier("FashionCNN", 3,
                                                               task="segmentation"), "task"),
    ("build_text_classifier", lambda c: tftransfer.build_text_classifier(5, 3), "backbone"),
    ("heads.classification_head", lambda c: heads.classification_head(c.features, 0),
     "num_classes"),
    ("layers.ImagePreprocessing", lambda c: layers.ImagePreprocessing(mode="bogus"), "mode"),
    # --- freezing ---
    ("freeze", lambda c: tftransfer.freeze("not a model"), "model"),
    ("unfreeze", lambda c: tftransfer.unfreeze(c.model, blocks=-1), "blocks"),
    ("unfreeze", lambda c: tftransfer.unfreeze(c.model, blocks=99), "blocks"),
    ("unfreeze", lambda c: tftransfer.unfreeze(c.model, fraction=1.5), "fraction"),
    ("unfreeze", lambda c: tftransfer.unfreeze(c.model, blocks=1, fraction=0.5), "fraction"),
    ("find_backbone", lambda c: tftransfer.find_backbone(c.model, backbone="nope"), "backbone"),
    ("backbone_blocks", lambda c: tftransfer.backbone_blocks("not a model"), "model"),
    # --- training ---
    ("fit", lambda c: tftransfer.fit("not a model", c.bundle), "model"),
    ("fit", lambda c: tftransfer.fit(c.model, None), "data"),
    ("fit", lambda c: tftransfer.fit(c.model, (c.x,)), "data"),
    ("fit", lambda c: tftransfer.fit(c.model, (c.x, c.y[:-1])), "data"),
    ("fit", lambda c: tftransfer.fit(c.model, (c.x, c.y + 7)), "data"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, head_epochs=-1), "head_epochs"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, head_epochs=1.5), "head_epochs"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, fine_tune_epochs="3"),
     "fine_tune_epochs"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, head_learning_rate=0),
     "head_learning_rate"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, fine_tune_learning_rate="fast"),
     "fine_tune_learning_rate"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, unfreeze_blocks=-1), "unfreeze_blocks"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, unfreeze_fraction=2.0),
     "unfreeze_fraction"),
    ("fit", lambda c: tftransfer.fit(c.model, (c.x, c.y), batch_size=0), "batch_size"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, mixed_precision="float128"),
     "mixed_precision"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, checkpoint_dir=123), "checkpoint_dir"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, epochs=3), "epochs"),
    ("fit", lambda c: tftransfer.fit(c.model, c.bundle, anchor_to_pretrained=-1.0),
     "anchor_to_pretrained"),
    ("find_learning_rate", lambda c: tftransfer.find_learning_rate(
        c.model, c.bundle, min_learning_rate=0), "min_learning_rate"),
    ("find_learning_rate", lambda c: tftransfer.find_learning_rate(
        c.model, c.bundle, min_learning_rate=1.0, max_learning_rate=0.1), "max_learning_rate"),
    ("find_learning_rate", lambda c: tftransfer.find_learning_rate(c.model, c.bundle, steps=0),
     "steps"),
    ("find_learning_rate", lambda c: tftransfer.find_learning_rate(c.model, c.bundle,
                                                                   smoothing=1.5), "smoothing"),
    ("distill", lambda c: tftransfer.distill("teacher", c.model, c.bundle), "teacher"),
    ("distill", lambda c: tftransfer.distill(c.model, c.model, c.bundle, temperature=0),
     "temperature"),
    ("distill", lambda c: tftransfer.distill(c.model, c.model, c.bundle, alpha=1.5), "alpha"),
    ("Distiller", lambda c: tftransfer.Distiller(c.model, c.model, temperature=-1),
     "temperature"),
    ("training.WarmupCosine", lambda c: training.WarmupCosine(-1.0, 10), "learning_rate"),
    ("training.WarmupCosine", lambda c: training.WarmupCosine(1e-3, 0), "total_steps"),
    ("training.L2SP", lambda c: training.L2SP(np.zeros(2), -1.0), "strength"),
    ("training.enable_lora", lambda c: training.enable_lora(c.model, rank=0), "rank"),
    ("training.enable_lora", lambda c: training.enable_lora(c.model, rank=4), "model"),
    ("training.lora_parameter_count", lambda c: training.lora_parameter_count("x"), "model"),
    ("training.anchor_to_pretrained", lambda c: training.anchor_to_pretrained(c.model, -1.0),
     "strength"),
    ("training.resolve_mixed_precision", lambda c: training.resolve_mixed_precision("fp8"),
     "mode"),
    # --- search ---
    ("tune", lambda c: tftransfer.tune("NoSuchNet", c.bundle, directory=c.tmp), "backbone"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", (c.x, c.y[:-1]), directory=c.tmp), "data"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, max_trials=0, directory=c.tmp),
     "max_trials"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, tuner="grid", directory=c.tmp),
     "tuner"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, objective="auc",
                                       directory=c.tmp), "objective"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, search_space={"bogus": [1]},
                                       directory=c.tmp), "search_space"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle,
                                       search_space={"unfreeze_blocks": (3, 1)},
                                       directory=c.tmp), "unfreeze_blocks"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, head_epochs=-1,
                                       directory=c.tmp), "head_epochs"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, activation_cache_mb=-1,
                                       directory=c.tmp), "activation_cache_mb"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, directory=123), "directory"),
    ("tune", lambda c: tftransfer.tune("FashionCNN", c.bundle, directory=c.tmp,
                                       project_name="../../escape"), "project_name"),
    # --- data ---
    ("data.from_arrays", lambda c: tdata.from_arrays(np.zeros((10, 5)), np.zeros(10)), "x"),
    ("data.from_arrays", lambda c: tdata.from_arrays(c.x, c.y[:-2]), "y"),
    ("data.from_arrays", lambda c: tdata.from_arrays(c.x, c.y, validation_split=1.0),
     "validation_split"),
    ("data.from_arrays", lambda c: tdata.from_arrays(c.x, c.y, batch_size=0), "batch_size"),
    ("data.from_arrays", lambda c: tdata.from_arrays(c.x, c.y, image_size=-1), "image_size"),
    ("data.from_arrays", lambda c: tdata.from_arrays(c.x, c.y, class_names=["a"]),
     "class_names"),
    ("data.from_arrays", lambda c: tdata.from_arrays(c.x, c.y - 5), "y"),
    ("data.from_arrays", lambda c: tdata.from_arrays(c.x, c.y, augmentation="spin"),
     "augmentation"),
    ("data.from_directory", lambda c: tdata.from_directory(c.tmp / "missing", 32), "path"),
    ("data.from_directory", lambda c: tdata.from_directory(c.file, 32), "path"),
    ("data.from_directory", lambda c: tdata.from_directory(c.folder, 0), "image_size"),
    ("data.from_directory", lambda c: tdata.from_directory(c.folder, 32,
                                                           validation_split=-0.1),
     "validation_split"),
    ("data.from_directory", lambda c: tdata.from_directory(c.folder, 32, batch_size="32"),
     "batch_size"),
    ("data.from_directory", lambda c: tdata.from_directory(c.folder, 32, class_names=["zzz"]),
     "class_names"),
    ("data.from_csv", lambda c: tdata.from_csv(c.tmp / "missing.csv", "path", "label", 32),
     "csv_path"),
    ("data.from_csv", lambda c: tdata.from_csv(c.csv, "nope", "label", 32), "path_column"),
    ("data.from_csv", lambda c: tdata.from_csv(c.csv, "path", "nope", 32), "label_columns"),
    ("data.from_texts", lambda c: tdata.from_texts([1, 2, 3], [0, 1, 0]), "texts"),
    ("data.from_texts", lambda c: tdata.from_texts(["a", "b"], [0]), "labels"),
    ("data.from_text_csv", lambda c: tdata.from_text_csv("/no/such/file.csv"), "csv_path"),
    ("data.read_fortunes", lambda c: tdata.read_fortunes("law"), "categories"),
    ("data.read_fortunes", lambda c: tdata.read_fortunes(["no_such_topic"], folder="/no/such"),
     "categories"),
    ("data.from_text_directory", lambda c: tdata.from_text_directory(c.tmp / "missing"),
     "path"),
    ("data.from_tfds", lambda c: tdata.from_tfds("", image_size=32), "name"),
    ("data.from_tfds", lambda c: tdata.from_tfds("mnist", image_size=0), "image_size"),
    ("data.decode_image", lambda c: tdata.decode_image(c.png, (0, 0)), "image_size"),
    ("data.augmentation_layer", lambda c: tdata.augmentation_layer("spin"), "augmentation"),
    ("data.find_unreadable", lambda c: tdata.find_unreadable("one/path.png"), "paths"),
    ("data.from_directory", lambda c: tdata.from_directory(c.folder, 32, validate="yes"),
     "validate"),
    ("data.write_tfrecords", lambda c: tdata.write_tfrecords("bundle", c.tmp / "shards"),
     "bundle"),
    ("data.write_tfrecords", lambda c: tdata.write_tfrecords(c.bundle, c.tmp / "s", shards=0),
     "shards"),
    ("data.from_tfrecords", lambda c: tdata.from_tfrecords(c.tmp / "missing"), "folder"),
    ("data.distribute_bundle", lambda c: tdata.distribute_bundle(c.bundle, "localhost"),
     "service"),
    ("data.start_data_service", lambda c: tdata.start_data_service(workers=-1), "workers"),
    ("data.start_data_workers", lambda c: tdata.start_data_workers("localhost:5050"),
     "service"),
    ("data.shard_policy_for", lambda c: tdata.shard_policy_for([1, 2]), "dataset"),
    ("data.with_auto_shard", lambda c: tdata.with_auto_shard([1, 2]), "data"),
    ("datasets.fashion_mnist", lambda c: tftransfer.datasets.fashion_mnist(c.tmp / "missing"),
     "path"),
    ("datasets.fashion_mnist", lambda c: tftransfer.datasets.fashion_mnist(classes=[11]),
     "classes"),
    ("datasets.demo_target_folder", lambda c: tftransfer.datasets.demo_target_folder("valid"),
     "split"),
    # --- evaluation ---
    ("evaluate", lambda c: tftransfer.evaluate(c.model, None), "data"),
    ("evaluate", lambda c: tftransfer.evaluate("model", c.bundle.validation), "model"),
    ("evaluate", lambda c: tftransfer.evaluate(c.model, c.bundle.validation, top_k=-1),
     "top_k"),
    ("evaluate", lambda c: tftransfer.evaluate(c.model, c.bundle.validation, bins=0), "bins"),
    ("evaluate", lambda c: tftransfer.evaluate(c.model, c.bundle.validation,
                                               class_names=["a"]), "class_names"),
    ("evaluation.plot_history", lambda c: evaluation.plot_history("x", c.tmp / "h.png"),
     "history"),
    ("evaluation.write_report", lambda c: evaluation.write_report(c.tmp / "r", "not a result"),
     "evaluation"),
    ("evaluation.serving_command", lambda c: evaluation.serving_command(123, "m"),
     "model_dir"),
    # --- export ---
    ("export", lambda c: tftransfer.export(c.model, 123), "path"),
    ("export", lambda c: tftransfer.export(c.model, "../outside"), "path"),
    ("export", lambda c: tftransfer.export(c.model, "m", root=c.tmp, version=-1), "version"),
    ("export", lambda c: tftransfer.export(c.model, "m", root=c.tmp, version="1"), "version"),
    ("export", lambda c: tftransfer.export(c.model, "m", root=c.tmp, top_k=-1), "top_k"),
    ("export", lambda c: tftransfer.export(c.model, "m", root=c.tmp, tflite="int4"), "tflite"),
    ("export", lambda c: tftransfer.export(c.model, "m", root=c.tmp, class_names=["a"]),
     "class_names"),
    ("export", lambda c: tftransfer.export("model", "m", root=c.tmp), "model"),
    ("load_model", lambda c: tftransfer.load_model(c.tmp / "missing.keras"), "path"),
    ("load_model", lambda c: tftransfer.load_model(c.file), "path"),
    ("rest_request_body", lambda c: tftransfer.rest_request_body([1, 2]), "images"),
    ("tflite_predict", lambda c: tftransfer.tflite_predict("not bytes", c.x), "model_bytes"),
    # --- backbones ---
    ("backbone_info", lambda c: tftransfer.backbone_info("NoSuchNet"), "name"),
    ("list_backbones", lambda c: tftransfer.list_backbones(source="cloud"), "source"),
    ("backbones.register_backbone", lambda c: backbones.register_backbone("spec"), "spec"),
    ("backbones.create_backbone", lambda c: backbones.create_backbone("FashionCNN",
                                                                      image_size=-1),
     "image_size"),
    ("backbones.trust_hub_handles", lambda c: backbones.trust_hub_handles(5), "prefixes"),
    ("backbones.resolve_handle", lambda c: backbones.resolve_handle(""), "handle"),
    ("backbones.get_backbone_spec", lambda c: backbones.get_backbone_spec("NoSuchNet"),
     "backbone"),
    ("backbones.normalize_image_size", lambda c: backbones.normalize_image_size(-1),
     "image_size"),
    ("backbones.parse_backbone_name", lambda c: backbones.parse_backbone_name(5), "backbone"),
    ("backbones.as_backbone", lambda c: backbones.as_backbone("x"), "model"),
    ("backbones.text_checkpoint_path", lambda c: backbones.text_checkpoint_path("nope"),
     "name"),
    ("backbones.assign_blocks", lambda c: backbones.assign_blocks(["a"], 5), "pattern"),
    ("backbones.assign_blocks", lambda c: backbones.assign_blocks(["a"], "a", "middle"),
     "boundary"),
    ("heads.validate_task", lambda c: heads.validate_task("segmentation", 3), "task"),
    ("training.apply_policy", lambda c: training.apply_policy(c.model, "fp8"), "policy"),
    ("training.anchor_penalty", lambda c: training.anchor_penalty("x"), "model"),
    ("evaluation.plot_confusion_matrix",
     lambda c: evaluation.plot_confusion_matrix("x", c.tmp / "p.png"), "evaluation"),
    ("evaluation.plot_reliability", lambda c: evaluation.plot_reliability("x", c.tmp / "p.png"),
     "evaluation"),
    ("evaluation.plot_top_losses", lambda c: evaluation.plot_top_losses("x", c.tmp / "p.png"),
     "evaluation"),
    # --- checkpoints ---
    ("checkpoints.load_pytorch_checkpoint",
     lambda c: checkpoints.load_pytorch_checkpoint(c.tmp / "absent.pth"), "path"),
    ("checkpoints.load_safetensors", lambda c: checkpoints.load_safetensors(c.tmp / "absent"),
     "path"),
    ("checkpoints.load_state_dict", lambda c: checkpoints.load_state_dict(c.tmp / "absent"),
     "path"),
    ("checkpoints.save_safetensors",
     lambda c: checkpoints.save_safetensors({"x": np.array(["text"], object)}, c.tmp / "s"),
     "tensors"),
    ("checkpoints.load_pytorch_weights",
     lambda c: checkpoints.load_pytorch_weights(c.model, [1, 2], {}), "state_dict"),
    ("evaluation.plot_learning_rate_finder",
     lambda c: evaluation.plot_learning_rate_finder("x", c.tmp / "p.png"), "result"),
    ("explain", lambda c: tftransfer.explain("not a model", c.x), "model"),
    ("evaluation.explain", lambda c: evaluation.explain(c.model, c.x, method="magic"),
     "method"),
    ("evaluation.plot_explanations",
     lambda c: evaluation.plot_explanations(c.x, "x", c.tmp / "p.png"), "explanation"),
    ("rank_backbones", lambda c: tftransfer.rank_backbones(c.bundle, []), "candidates"),
    ("rank_backbones", lambda c: tftransfer.rank_backbones(c.bundle, ["FashionCNN"],
                                                           method="magic"), "method"),
    ("training.merge_lora", lambda c: training.merge_lora(c.model), "model"),
    ("training.save_lora_weights",
     lambda c: training.save_lora_weights(c.model, c.tmp / "adapter.npz"), "model"),
    ("training.load_lora_weights",
     lambda c: training.load_lora_weights(c.model, c.tmp / "absent.npz"), "path"),
    ("backbones.register_backbone_handle",
     lambda c: backbones.register_backbone_handle("kerashub:x", source="pypi"), "source"),
]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    import keras
    import tensorflow as tf

    tmp = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (12, 32, 32, 3)).astype("float32")
    y = np.arange(12) % 3
    folder = tmp / "images"
    png = tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8))
    for index in range(6):
        path = folder / "abc"[index % 3] / f"{index}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png.numpy())
    csv = tmp / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}\n"
                                            for p in sorted(folder.rglob("*.png"))))
    (tmp / "a_file.txt").write_text("not a folder or a model")
    model = tftransfer.build_classifier("FashionCNN", 3)
    return types.SimpleNamespace(
        tmp=tmp, x=x, y=y, folder=folder, csv=csv, file=tmp / "a_file.txt", png=png,
        model=model, features=keras.Input((8,)),
        bundle=tdata.from_arrays(x, y, validation_split=0.25, batch_size=4))


@pytest.mark.parametrize("function, call, argument",
                         [pytest.param(*case, id=f"{case[0]}-{case[2]}-{i}")
                          for i, case in enumerate(CASES)])
def test_bad_input_raises_a_clear_error_naming_the_argument(context, function, call, argument):
    with pytest.raises((ValueError, TypeError)) as raised:
        call(context)
    # The name as a word: "x" must not pass on the x of "expected".
    assert re.search(rf"\b{re.escape(argument)}\b", str(raised.value)), (
        f"{function}: the error does not name {argument!r}: "
        f"{type(raised.value).__name__}: {raised.value}")


def test_every_public_function_is_in_the_table():
    import inspect

    covered = {case[0] for case in CASES}
    namespaces = {"": tftransfer, "data.": tdata, "evaluation.": evaluation,
                  "training.": training, "backbones.": backbones, "heads.": heads,
                  "datasets.": tftransfer.datasets, "checkpoints.": checkpoints}
    missing = []
    for prefix, module in namespaces.items():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if not inspect.isfunction(obj) or name in SKIPPED:
                continue
            if f"{prefix}{name}" not in covered and name not in covered:
                missing.append(f"{prefix}{name}")
    assert not missing, f"public functions without a bad-input row: {missing}"


# Functions with nothing to get wrong: no arguments, or every value has an answer
# (a handle is trusted or not; a model name has a spec or None).
SKIPPED = {"all_specs", "hub_cache_dir", "is_trusted_hub_handle", "find_spec_for_model_name",
           "allowed_globals"}
