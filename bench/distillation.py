"""Distillation and L2-SP study on Fashion-MNIST 5-9, at 10 and 50 labels per class.

Distillation: a teacher (the embedded FashionCNN, pretrained on classes 0-4,
then head phase and fine-tuning on the labelled images) teaches a student of
the same architecture at half the input size (16x16: a quarter of the
FLOPs), trained from scratch. The student is trained (a) on the labels alone
and (b) with `tftransfer.distill` (T=4, alpha=0.9) on the same images, for
the same epochs. L2-SP: the demo's fine-tuning recipe with and without
`anchor_to_pretrained=0.01`. Mean ± standard deviation of test accuracy (the
5000 Fashion-MNIST test images of classes 5-9) over 3 draws of the labels.

Run: python bench/distillation.py [--quick] [--seeds 3] [--labels 10,50]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import write_results  # noqa: E402

EPOCHS = 30


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1 seed, 10 labels per class")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--labels", default="10,50")
    parser.add_argument("--anchor", type=float, default=0.01)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.labels = 1, "10"

    import keras

    import tftransfer

    start = time.time()
    (x_pool, y_pool), (x_test, y_test) = tftransfer.datasets.fashion_mnist(
        classes=[5, 6, 7, 8, 9])
    tests = {size: tftransfer.data.from_arrays(x_test, y_test, image_size=size,
                                               validation_split=0.0, batch_size=256).train
             for size in (16, 32)}
    common = dict(early_stopping_patience=None, verbose=0)
    results = {}
    for per_class in [int(v) for v in args.labels.split(",")]:
        scores = {name: [] for name in ("teacher", "student, labels only", "student, distilled",
                                        "fine-tune", f"fine-tune + L2-SP {args.anchor:g}")}
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            keep = np.concatenate([rng.permutation(np.flatnonzero(y_pool == c))[:per_class]
                                   for c in range(5)])
            data = {size: tftransfer.data.from_arrays(x_pool[keep], y_pool[keep],
                                                      image_size=size, validation_split=0.2,
                                                      seed=seed)
                    for size in (16, 32)}

            def transfer(anchor):
                keras.utils.set_random_seed(seed)
                model = tftransfer.build_classifier("FashionCNN", 5)
                return tftransfer.fit(model, data[32], head_epochs=5,
                                      fine_tune_epochs=EPOCHS - 5, unfreeze_blocks=3,
                                      head_learning_rate=3e-3, fine_tune_learning_rate=3e-3,
                                      anchor_to_pretrained=anchor, seed=seed, **common).model

            teacher = transfer(None)
            scores["teacher"].append(tftransfer.evaluate(teacher, tests[32]).accuracy)
            scores["fine-tune"].append(scores["teacher"][-1])
            anchored = transfer(args.anchor)
            scores[f"fine-tune + L2-SP {args.anchor:g}"].append(
                tftransfer.evaluate(anchored, tests[32]).accuracy)
            for name, distilled in (("student, labels only", False),
                                    ("student, distilled", True)):
                keras.utils.set_random_seed(seed)
                student = tftransfer.build_classifier("FashionCNN", 5, image_size=16,
                                                      weights=None)
                recipe = dict(head_epochs=0, fine_tune_epochs=EPOCHS, unfreeze_fraction=1.0,
                              fine_tune_learning_rate=3e-3, seed=seed, **common)
                model = (tftransfer.distill(teacher, student, data[16], temperature=4.0,
                                            alpha=0.9, **recipe).model if distilled
                         else tftransfer.fit(student, data[16], **recipe).model)
                scores[name].append(tftransfer.evaluate(model, tests[16]).accuracy)
            print(per_class, seed, {k: round(v[-1], 4) for k, v in scores.items()}, flush=True)
            keras.backend.clear_session()
        results[str(per_class)] = {
            name: {"mean": float(np.mean(v)), "std": float(np.std(v)),
                   "runs": [round(x, 4) for x in v]} for name, v in scores.items()}
    table = [(f"{n} labels/class, {name}", f"{row['mean']:.4f} ± {row['std']:.4f}")
             for n, rows in results.items() for name, row in rows.items()]
    write_results("distillation", {"labels_per_class": args.labels, "seeds": args.seeds,
                                   "epochs": EPOCHS, "anchor": args.anchor,
                                   "results": results,
                                   "seconds": round(time.time() - start, 1)}, table, notes=(
        "Test accuracy on the 5000 Fashion-MNIST test images of classes 5-9, mean ± standard "
        f"deviation over {args.seeds} draws of the labels. Teacher: FashionCNN pretrained on "
        "classes 0-4, fine-tuned at 32x32; students: the same architecture at 16x16 from "
        "scratch, trained on the labels alone or distilled (T=4, alpha=0.9)."))


if __name__ == "__main__":
    main()
