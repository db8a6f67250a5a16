"""A small ViT on the Fashion-MNIST transfer protocol: head only, LoRA, full fine-tuning.

The protocol of `bench/study.py`: pretrain on Fashion-MNIST classes 0-4 (tops),
transfer to classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), which the
backbone never saw; score on the 5,000 target images of the test split.

Backbone: the small KerasHub ViT that `scripts/pretrain_vit.py` pretrained on
the 30,000 source images and the project ships as a preset folder with its
image converter (`saved_models/vit_fashion/`; 0.14 M weights, 4 encoder layers
of width 64, 4 x 4 patches, a class token), loaded the way a user loads a
downloaded preset: `tftransfer.build_classifier("kerashub:<folder>", 5)`.

Methods, on the same labelled images (draws of `--labels` images a class;
seeds 0, 1, ...), with `tftransfer.fit`'s data-sized budgets:

- head only: the backbone frozen, the head trained (`fine_tune_epochs=0`);
- LoRA rank 8: the head phase, then rank-8 adapters on the attention's query
  and value projections of every encoder layer (`fit(..., lora_rank=8)`);
- full fine-tuning: the head phase, then every layer (`fit`'s defaults);
- scratch: the same architecture at random initialization, every layer
  trained at 1e-3 for as many steps as the full fine-tuning's two phases.

Figures: test accuracy (mean and std over draws), weights trained in the
fine-tuning phase (and their share of the backbone), seconds per epoch of the
fine-tuning phase. Writes bench/results/vit_study.json and .md.

Run: python bench/vit_study.py [--quick] [--labels 100,1000] [--draws 2]
Full run on 2 CPU cores: about 25 minutes; --quick: one draw of 20 labels a
class on a 2-epoch pretraining made in /tmp, about 4 minutes.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
METHODS = ("head only", "LoRA rank 8", "full fine-tuning", "scratch")


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from pretrain_vit import CONFIG, pretrain, read_idx  # noqa: E402

SHIPPED = os.path.join(ROOT, "saved_models", "vit_fashion")


def pretrained_preset(folder, epochs):
    """The preset folder and its metadata (pretrained by scripts/pretrain_vit.py if missing)."""
    if not os.path.exists(os.path.join(folder, "config.json")):
        pretrain(folder, epochs)
    with open(os.path.join(folder, "metadata.json")) as handle:
        return folder, json.load(handle)


def draw(x, y, per_class, seed):
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.choice(np.flatnonzero(y == label), per_class, replace=False)
                             for label in range(5)])
    return x[chosen], y[chosen]


def trained_weights(model):
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def run(method, preset, x, y, test_x, test_y, seed):
    import keras

    import tftransfer

    keras.utils.set_random_seed(seed)
    common = dict(seed=seed, verbose=0)
    start = time.time()
    if method == "scratch":
        model = tftransfer.build_classifier("kerashub:" + preset, 5, weights=None)
        reference = tftransfer.fit(tftransfer.build_classifier("kerashub:" + preset, 5),
                                   (x, y), **common)
        steps = sum(reference.budget[key] for key in ("head_epochs", "fine_tune_epochs"))
        result = tftransfer.fit(model, (x, y), head_epochs=0, fine_tune_epochs=steps,
                                unfreeze_blocks="all", fine_tune_learning_rate=1e-3, **common)
    else:
        model = tftransfer.build_classifier("kerashub:" + preset, 5)
        extra = {"head only": dict(fine_tune_epochs=0), "LoRA rank 8": dict(lora_rank=8),
                 "full fine-tuning": {}}[method]
        result = tftransfer.fit(model, (x, y), **common, **extra)
    seconds = time.time() - start
    model = result.model
    from tftransfer.training.freezing import is_lora_variable

    trained = trained_weights(model)
    backbone = tftransfer.training.find_backbone(model)
    backbone_weights = int(sum(np.prod(v.shape) for v in backbone.weights
                               if not is_lora_variable(v)))
    backbone_trained = int(sum(np.prod(v.shape) for v in backbone.trainable_weights))
    probabilities = model.predict(test_x.astype("float32"), batch_size=256, verbose=0)
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == test_y))
    phases = result.history.get("phase", [])
    epochs = max(1, len(phases))
    return {"accuracy": accuracy, "trained_weights": trained,
            "backbone_weights": backbone_weights, "backbone_weights_trained": backbone_trained, "seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / epochs, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--labels", default="100,1000")
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--pretrain-epochs", type=int, default=15,
                        help="when the preset folder has to be made")
    parser.add_argument("--preset", default=SHIPPED,
                        help="the pretrained ViT preset folder (made when missing)")
    args = parser.parse_args(argv)
    if not os.path.isdir(FASHION):
        raise SystemExit(f"{FASHION} is missing: apt-get install -y dataset-fashion-mnist")
    labels_list = [20] if args.quick else [int(v) for v in args.labels.split(",")]
    draws = 1 if args.quick else args.draws
    preset, pretraining = pretrained_preset(
        "/tmp/tftransfer_vit_quick" if args.quick else args.preset,
        2 if args.quick else args.pretrain_epochs)
    train_x, train_y = read_idx("train")
    test_x, test_y = read_idx("test")
    target, test_target = train_y >= 5, test_y >= 5
    pool_x, pool_y = train_x[target], train_y[target] - 5
    test_x, test_y = test_x[test_target], test_y[test_target] - 5
    results = {}
    for per_class in labels_list:
        row = {}
        for method in METHODS:
            runs = []
            for seed in range(draws):
                x, y = draw(pool_x, pool_y, per_class, seed)
                runs.append(run(method, preset, x, y, test_x, test_y, seed))
                print(per_class, method, seed, runs[-1], flush=True)
            accuracies = [r["accuracy"] for r in runs]
            row[method] = {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
                           "runs": runs}
        results[str(per_class)] = row
    figures = {"config": CONFIG, "pretraining": pretraining, "draws": draws,
               "quick": bool(args.quick), "results": results}
    table = []
    for per_class, row in results.items():
        for method in METHODS:
            cell = row[method]
            first = cell["runs"][0]
            share = first["backbone_weights_trained"] / max(1, first["backbone_weights"])
            table.append((f"{per_class} labels/class: {method}",
                          f"{cell['mean']:.3f} ± {cell['std']:.3f}; {first['trained_weights']:,} "
                          f"weights trained, head included ({100 * share:.1f} % of the "
                          "backbone's size in the backbone); "
                          f"{first['seconds_per_epoch']:.1f} s an epoch"))
    notes = ("Test accuracy on the 5,000 target test images, mean ± std over "
             f"{draws} draw(s). Weights trained: those trainable when fit ends (its last "
             f"phase). Backbone: {preset} ({pretraining['parameters']:,} weights, source "
             f"test accuracy {pretraining['source_test_accuracy']:.3f} on classes 0-4).")
    write_results("vit_study", figures, table, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
