"""tftransfer.fit overhead against a hand-written Keras fit of the same model.

Both train the identical classifier (MobileNetV2 at 96x96, the top block
unfrozen, BatchNorm frozen) on the identical tf.data pipeline with the same
optimizer and loss; tftransfer.fit adds its callbacks, schedule and checks.
Compared: the median steady-state epoch time of the fine-tuning phase.
Goal: tftransfer / Keras <= 1.05.

Run: python bench/overhead.py [--images 2000] [--epochs 4]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import EpochTimer, write_results  # noqa: E402

SIZE = 96


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import keras

    import tftransfer

    (x_all, y_all), _ = tftransfer.datasets.fashion_mnist()
    pick = np.random.default_rng(0).choice(len(x_all), args.images, replace=False)
    data = tftransfer.data.from_arrays(x_all[pick], y_all[pick], image_size=SIZE,
                                       validation_split=0.1, batch_size=32)

    def model_for_phase_two():
        keras.utils.set_random_seed(0)
        model = tftransfer.build_classifier("MobileNetV2", 10, image_size=SIZE, weights=None)
        tftransfer.unfreeze(model, blocks=1)
        return model

    def by_hand():
        model = model_for_phase_two()
        model.compile(keras.optimizers.Adam(1e-5), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        timer = EpochTimer()
        model.fit(data.train, validation_data=data.validation, epochs=args.epochs, verbose=0,
                  callbacks=[timer])
        keras.backend.clear_session()
        return float(np.median(timer.times[1:]))

    def with_tftransfer():
        model = model_for_phase_two()
        timer = EpochTimer()
        tftransfer.fit(model, data, head_epochs=0, fine_tune_epochs=args.epochs,
                       unfreeze_blocks=1, fine_tune_learning_rate=1e-5, callbacks=[timer],
                       early_stopping_patience=args.epochs, verbose=0)
        keras.backend.clear_session()
        return float(np.median(timer.times[1:]))

    keras_times, tftransfer_times = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        keras_times.append(by_hand())
        tftransfer_times.append(with_tftransfer())
    keras_epoch, tftransfer_epoch = min(keras_times), min(tftransfer_times)
    ratio = tftransfer_epoch / keras_epoch
    figures = {
        "images": args.images, "image_size": SIZE, "epochs": args.epochs,
        "repeats": args.repeats,
        "keras_epoch_seconds": round(keras_epoch, 3),
        "tftransfer_epoch_seconds": round(tftransfer_epoch, 3),
        "all_keras_epoch_seconds": [round(t, 3) for t in keras_times],
        "all_tftransfer_epoch_seconds": [round(t, 3) for t in tftransfer_times],
        "ratio": round(ratio, 3), "goal": "ratio <= 1.05", "goal_met": ratio <= 1.05,
    }
    write_results("overhead", figures, [
        ("hand-written Keras fit, s/epoch", figures["keras_epoch_seconds"]),
        ("tftransfer.fit, s/epoch", figures["tftransfer_epoch_seconds"]),
        ("ratio (goal <= 1.05)", figures["ratio"]),
    ], notes=f"Fine-tuning phase (top block of MobileNetV2 unfrozen), {args.images} images at "
             f"{SIZE}x{SIZE}, median of epochs 2..{args.epochs}, best of {args.repeats} runs.")


if __name__ == "__main__":
    main()
