"""Data at scale: a folder of 60,000 and 600,000 JPEG files, tftransfer against Keras.

The folder holds the real Fashion-MNIST training images as JPEG files (28 px,
quality 90), one folder per class; past 60,000 files the images repeat under
new names. Each measurement runs in a fresh process (so that RSS is its own),
tftransfer and Keras alternating, with every default:

- tftransfer: `tftransfer.data.from_directory(folder, size)`, its `train`
  split (80 %);
- Keras: `keras.utils.image_dataset_from_directory(folder, image_size=(size,
  size), validation_split=0.2, subset="training", seed=1337)`.

Figures per library and folder: seconds to build the dataset, seconds from
the start to the first training batch, steady images/s (batches 10 to
`--batches`, or the whole epoch), and peak RSS growth over the process's
baseline after imports (sampled every 50 ms). The 60,000-file folder at 336 px
is read for a whole epoch (its decoded size, ~20 GB, is ten times the 2 GB
goal); the 600,000-file folder for `--batches` batches. Then (unless
`--no-second-epoch`) the rest of the first epoch is read unmeasured and
`--batches` batches of the second epoch are measured: on a first run,
tftransfer's first epoch is also its check of the files (it drops what
fails to decode, which costs tf.data its map-and-batch fusion), and from
the second epoch on it reads only the files that decoded.

Remembered file checks are cleared before each tftransfer run (a first run of
a folder is the one measured), unless `--second-run`.

Run: python bench/data_scale.py [--quick] [--sizes 60000,600000] [--image-size 336]
Full run on 2 CPU cores: about 35 minutes plus writing the folders once (kept
under --workdir); --quick: 2,000 files at 64 px, about 1 minute.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from common import RESULTS, write_results  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"


def fashion_train():
    with gzip.open(os.path.join(FASHION, "train-images-idx3-ubyte.gz")) as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(FASHION, "train-labels-idx1-ubyte.gz")) as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images, labels


def _write_range(args):
    from PIL import Image

    folder, start, stop = args
    images, labels = fashion_train()
    for index in range(start, stop):
        label = int(labels[index % len(labels)])
        path = os.path.join(folder, f"class_{label}", f"{index:07d}.jpg")
        Image.fromarray(images[index % len(images)]).save(path, quality=90)


def make_folder(workdir, count):
    """A folder of `count` JPEG files (written once; reused while complete)."""
    import multiprocessing

    folder = os.path.join(workdir, f"fashion_{count}")
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for label in range(10):
        os.makedirs(os.path.join(folder, f"class_{label}"))
    step = 20000
    with multiprocessing.Pool(os.cpu_count() or 2) as pool:
        pool.map(_write_range, [(folder, start, min(start + step, count))
                                for start in range(0, count, step)])
    open(marker, "w").close()
    return folder


def rss_mb():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _images_per_s(iterator, batches, whole_epoch):
    """Images/s over batches 10 to `batches` (or to the end of the epoch)."""
    seen, steady_start, count = 0, None, 0
    for batch, _ in iterator:
        seen += 1
        if seen == 10:
            steady_start = time.perf_counter()
        elif seen > 10:
            count += int(batch.shape[0])
        if not whole_epoch and seen >= batches:
            break
    steady = count / (time.perf_counter() - steady_start) if steady_start and count else None
    return steady, seen


def child(library, folder, size, batches, whole_epoch, second_epoch):
    """One measurement in this process; prints a JSON line."""
    import tensorflow as tf

    import keras
    import tftransfer

    tf.get_logger().setLevel("ERROR")
    baseline = rss_mb()
    peak = [baseline]
    running = [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if library == "tftransfer":
        bundle = tftransfer.data.from_directory(folder, size)
        dataset, extra = bundle.train, {"cache": bundle.cache, "cache_reason": bundle.cache_reason,
                                        "checked_while_read": bundle.file_check is not None}
    else:
        dataset = keras.utils.image_dataset_from_directory(
            folder, image_size=(size, size), validation_split=0.2, subset="training",
            seed=1337, verbose=False)
        extra = {}
    built = time.perf_counter() - start
    iterator = iter(dataset)
    next(iterator)
    first = time.perf_counter() - start
    steady, seen = _images_per_s(iterator, batches, whole_epoch)
    seen += 1
    if second_epoch:
        for _ in iterator:  # the rest of the first epoch, unmeasured
            seen += 1
        extra["second_epoch_images_per_s"] = round(
            _images_per_s(iter(dataset), batches, False)[0], 1)
    running[0] = False
    sampler.join()
    print(json.dumps({"library": library, "build_s": round(built, 3),
                      "first_batch_s": round(first, 3),
                      "steady_images_per_s": round(steady, 1) if steady else None,
                      "batches": seen, "peak_rss_growth_mb": round(peak[0] - baseline, 1),
                      **extra}), flush=True)


def run_child(library, folder, size, batches, whole_epoch, second_run, second_epoch):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if library == "tftransfer" and not second_run:
        cache_dir = env.setdefault("TFTRANSFER_CACHE_DIR", "/tmp/tftransfer_data_scale_cache")
        shutil.rmtree(os.path.join(cache_dir, "file_checks"), ignore_errors=True)
    command = [sys.executable, os.path.abspath(__file__), "--child", library, folder, str(size),
               str(batches), "1" if whole_epoch else "0", "1" if second_epoch else "0"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        raise RuntimeError(f"{library} on {folder}: exit {result.returncode}\n"
                           f"{result.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        library, folder, size, batches, whole, second = sys.argv[2:8]
        return child(library, folder, int(size), int(batches), whole == "1", second == "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="60000,600000")
    parser.add_argument("--image-size", type=int, default=336)
    parser.add_argument("--batches", type=int, default=300,
                        help="batches read from folders past the first size")
    parser.add_argument("--workdir", default="/tmp/tftransfer_data_scale")
    parser.add_argument("--no-second-epoch", action="store_true",
                        help="skip the second epoch (whose first --batches batches are "
                             "measured after a whole first epoch)")
    parser.add_argument("--second-run", action="store_true",
                        help="keep remembered file checks (a second run of each folder)")
    args = parser.parse_args(argv)
    if not os.path.isdir(FASHION):
        raise SystemExit(f"{FASHION} is missing: apt-get install -y dataset-fashion-mnist")
    sizes = [2000] if args.quick else [int(v) for v in args.sizes.split(",")]
    image_size = 64 if args.quick else args.image_size
    began = time.time()
    results = {}
    for index, count in enumerate(sizes):
        started = time.time()
        folder = make_folder(args.workdir, count)
        written = time.time() - started
        whole_epoch = index == 0
        row = {"files": count, "image_size": image_size, "whole_epoch": whole_epoch,
               "folder_written_s": round(written, 1)}
        for library in ("keras", "tftransfer"):
            row[library] = run_child(library, folder, image_size, args.batches, whole_epoch,
                                     args.second_run, not args.no_second_epoch)
            print(count, library, row[library], flush=True)
        row["first_batch_ratio"] = row["tftransfer"]["first_batch_s"] / row["keras"][
            "first_batch_s"]
        if row["tftransfer"]["steady_images_per_s"] and row["keras"]["steady_images_per_s"]:
            row["steady_ratio"] = (row["tftransfer"]["steady_images_per_s"]
                                   / row["keras"]["steady_images_per_s"])
        if row["keras"].get("second_epoch_images_per_s"):
            row["second_epoch_ratio"] = (row["tftransfer"]["second_epoch_images_per_s"]
                                         / row["keras"]["second_epoch_images_per_s"])
        results[str(count)] = row
    if not args.quick:
        # A run of some sizes keeps an earlier full run's rows for the others.
        earlier_path = os.path.join(RESULTS, "data_scale.json")
        if os.path.exists(earlier_path):
            with open(earlier_path) as handle:
                earlier = json.load(handle)["figures"]
            if not earlier.get("quick"):
                for key, row in earlier.get("results", {}).items():
                    if key not in results and row.get("image_size") == image_size:
                        print(f"keeping the earlier run's row for {key} files")
                        results[key] = row
        results = dict(sorted(results.items(), key=lambda item: int(item[0])))
    keys = list(results)
    growth = {}
    if len(keys) > 1:
        small, large = results[keys[0]], results[keys[-1]]
        for library in ("keras", "tftransfer"):
            growth[library] = {
                "first_batch_x": large[library]["first_batch_s"] / small[library][
                    "first_batch_s"],
                "peak_rss_growth_mb": [small[library]["peak_rss_growth_mb"],
                                       large[library]["peak_rss_growth_mb"]]}
    figures = {"results": results, "growth": growth, "quick": bool(args.quick),
               "first_batch_ratio_max": max(r["first_batch_ratio"] for r in results.values()),
               "steady_ratio_min": min((r.get("steady_ratio") for r in results.values()
                                        if r.get("steady_ratio")), default=None),
               "second_epoch_ratio_min": min((r.get("second_epoch_ratio")
                                              for r in results.values()
                                              if r.get("second_epoch_ratio")), default=None),
               "tftransfer_peak_rss_growth_mb_max": max(
                   r["tftransfer"]["peak_rss_growth_mb"] for r in results.values()),
               "seconds": round(time.time() - began, 1)}
    table = []
    for count, row in results.items():
        for library in ("keras", "tftransfer"):
            cell = row[library]
            table.append((f"{int(count):,} files at {image_size} px: {library}",
                          f"build {cell['build_s']:.1f} s, first batch {cell['first_batch_s']:.1f}"
                          f" s, {cell['steady_images_per_s'] or 0:,.0f} images/s, peak RSS +"
                          f"{cell['peak_rss_growth_mb']:,.0f} MB"))
        table.append((f"{int(count):,} files: first batch, tftransfer / Keras",
                      f"{row['first_batch_ratio']:.2f}x"))
        if row.get("steady_ratio"):
            table.append((f"{int(count):,} files: images/s in the first epoch, tftransfer / "
                          "Keras", f"{row['steady_ratio']:.2f}"))
        if row.get("second_epoch_ratio"):
            table.append((f"{int(count):,} files: images/s from the second epoch, tftransfer / "
                          "Keras", f"{row['second_epoch_ratio']:.2f} ("
                          f"{row['tftransfer']['second_epoch_images_per_s']:,.0f} / "
                          f"{row['keras']['second_epoch_images_per_s']:,.0f})"))
    notes = ("Fresh process per measurement; first run of each folder (remembered file checks "
             "cleared). The first size is read for a whole epoch of the training split, the "
             f"others for {args.batches} batches"
             + ("" if args.no_second_epoch else
                f"; then, after the rest of that epoch, {args.batches} batches of the second "
                "epoch (tftransfer's pipeline then reads only the files its first pass "
                "decoded, without dropping)") + ". tftransfer's cache choice: "
             + "; ".join(f"{k} files: {r['tftransfer'].get('cache_reason', '')}"
                         for k, r in results.items()) + ".")
    write_results("data_scale", figures, table, notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
