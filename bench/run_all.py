"""`make bench`: runs every benchmark, then writes bench/results/README.md and the README table.

Each script runs in its own process (so that one's memory and threads do not
touch the next) and writes `bench/results/<name>.json` (figures, machine,
versions, date) and `<name>.md`. The harness then collects the headline
figure of each into `bench/results/README.md` and into the project README,
between the `bench-table` markers. `--quick` runs smaller versions of every
benchmark into `bench/results/quick/`, leaving the committed results alone.
The GPU benchmark (mixed precision, XLA) runs only where TensorFlow sees a GPU.

Run: python bench/run_all.py [--quick] [--only tuning,study]
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# name -> (full arguments, quick arguments)
BENCHMARKS = {
    "pipeline": ([], ["--images", "400", "--epochs", "2"]),
    "feature_cache": ([], ["--images", "400", "--epochs", "4"]),
    "overhead": ([], ["--images", "400", "--epochs", "2", "--repeats", "1"]),
    "tuning": ([], ["--images", "400", "--trials", "3", "--memory-trials", "4"]),
    "latency": ([], ["--quick"]),
    "roofline": ([], ["--quick"]),
    "study": ([], ["--quick"]),
    "recipes": ([], ["--quick", "--protocols", "cnn-a"]),
    "recipes_ablations": (["--protocols", "cnn-a,cnn-b"], ["--seeds", "1", "--protocols",
                                                            "cnn-a"]),
    "backbone_throughput": ([], ["--quick"]),
    "distillation": ([], ["--quick"]),
    "memory": ([], ["--quick"]),
    "mixed_precision": ([], ["--steps", "5"]),
    "text_study": ([], ["--quick"]),
    "text_throughput": ([], ["--quick"]),
    "data_scale": ([], ["--quick"]),
    "vit_study": ([], ["--quick"]),
    "selection": ([], ["--quick"]),
    "backbone_search": ([], ["--quick"]),
}


def _get(figures, path):
    for key in path.split("."):
        figures = figures[key]
    return figures


# name -> [(label, figure path, format, goal)]
HEADLINES = {
    "pipeline": [("fit from a JPEG folder / from in-memory tensors", "ratio_files_over_memory",
                  "{:.3f}", ">= 0.9")],
    "feature_cache": [("head phase, naive / cached features", "speedup", "{:.2f}x", ">= 6x")],
    "overhead": [("`tftransfer.fit` / hand-written Keras, per epoch", "ratio", "{:.3f}",
                  "<= 1.05")],
    "tuning": [("plain keras-tuner / `tftransfer.tune`, wall time", "speedup", "{:.2f}x",
                ">= 2x"),
               ("the same searches' best validation accuracy: plain keras-tuner (10 classes)",
                "plain_best_val_accuracy", "{:.3f}", "well above chance (0.1)"),
               ("the same: `tftransfer.tune`", "tftransfer_best_val_accuracy", "{:.3f}",
                ">= plain"),
               ("RSS growth per isolated trial", "rss_growth_mb_per_trial_isolated",
                "{:.2f} MB", "<= 20 MB")],
    "latency": [("SavedModel / `model.predict`, batch 1", "batch_1.saved_model_over_predict",
                 "{:.3f}", "report"),
                ("SavedModel / `model.predict`, batch 32", "batch_32.saved_model_over_predict",
                 "{:.3f}", "report")],
    "roofline": [("MobileNetV2 frozen forward / matmul FLOP/s",
                  "backbones.MobileNetV2.fraction_of_matmul", "{:.3f}", "report"),
                 ("ResNet50 frozen forward / matmul FLOP/s",
                  "backbones.ResNet50.fraction_of_matmul", "{:.3f}", "report")],
    "study": [("10 labels/class: head + fine-tune / scratch (test accuracy)",
               "results.10", "study", "report")],
    "recipes": [("mean over the study's cells (3 protocols): `fit` defaults - keras.io "
                 "recipe (its better phase), test accuracy", "summary.mean_fit_minus_keras_io",
                 "{:+.4f}", ">= +0.02"),
                ("mean over the cells tune ran: `tune` (8 trials) - `fit` defaults",
                 "summary.mean_tune_minus_fit", "{:+.4f}", ">= 0"),
                ("ImageNet EfficientNet-Lite0 -> Fashion-MNIST, 10 labels/class: `fit` defaults "
                 "/ linear probe / keras.io recipe (test accuracy)",
                 "protocols.lite0.results.10", "recipes", "report")],
    "recipes_ablations": [("FashionCNN 0-4 -> 5-9, 10 labels/class: `fit` defaults / the "
                           "previous defaults (5 + 5 epochs, top block, 1e-3 / 1e-5)",
                           "protocols.cnn-a.results", "ablations", "report"),
                          ("FashionCNN 5-9 -> 0-4, 10 labels/class: `fit` defaults / the "
                           "previous defaults", "protocols.cnn-b.results", "ablations",
                           "report")],
    "backbone_throughput": [("EfficientNet-Lite0 pooled features, tftransfer / hand-built "
                             "Keras, images/s (worst of 96 and 224 px)", "ratio_min", "{:.3f}",
                             ">= 0.95")],
    "distillation": [("10 labels/class: student distilled / on labels only",
                      "results.10", "distillation", "report"),
                     ("10 labels/class: fine-tune + L2-SP / fine-tune",
                      "results.10", "anchor", "report")],
    "memory": [("`tftransfer.fit`, 50 epochs with checkpoints: RSS growth per head-phase "
                "epoch", "fit.growth_mb_per_epoch_head", "{:.3f} MB",
                "< 1 MB/epoch (bound in test_memory.py)"),
               ("the same, per fine-tuning epoch", "fit.growth_mb_per_epoch_fine_tune",
                "{:.3f} MB", "< 1 MB/epoch"),
               ("the same, over the 47 epochs after warm-up (plain `model.fit`: 0.026 "
                "MB/epoch)", "fit.growth_mb_after_warmup", "{:.1f} MB", "< 80 MB"),
               ("`tftransfer.tune`, 20 trials in one process: RSS growth per trial",
                "tune_in_process.growth_mb_per_trial", "{:.1f} MB", "report")],
    "mixed_precision": [("ResNet50 batch 256, XLA off: mixed / float32 images/s",
                         "results.ResNet50_b256_xlaoff.ratio", "{:.2f}x", "~2.6x on A100"),
                        ("EfficientNetB0 batch 256, XLA off: mixed / float32 images/s",
                         "results.EfficientNetB0_b256_xlaoff.ratio", "{:.2f}x",
                         "~2.85x on A100")],
    "text_study": [("fortune topics, 20 labels/class: frozen MiniLM + head - TF-IDF + logistic "
                    "regression (test accuracy)", "headline.probe_minus_tfidf", "{:+.3f}",
                    "far above (> +0.15)"),
                   ("fortune topics, 20 labels/class: best fine-tuned MiniLM - frozen probe",
                    "headline.fine_tuned_minus_probe", "{:+.3f}", "> 0")],
    "text_throughput": [("MiniLM, tftransfer / hand-written KerasHub, examples/s (worst of "
                         "feature extraction and fine-tuning)", "ratio_min", "{:.3f}",
                         ">= 0.91 (within 1.1x)")],
    "vit_study": [("pretrained ViT (shipped), Fashion-MNIST 0-4 -> 5-9, 100 labels/class: full "
                   "fine-tuning (test accuracy)", "results.100.full fine-tuning.mean", "{:.3f}",
                   "> scratch"),
                  ("the same: LoRA rank 8", "results.100.LoRA rank 8.mean", "{:.3f}", "report"),
                  ("the same: head only", "results.100.head only.mean", "{:.3f}", "report"),
                  ("the same: the ViT from scratch", "results.100.scratch.mean", "{:.3f}",
                   "report")],
    "data_scale": [("60,000 / 600,000 JPEG files at 336 px, every default: first batch, "
                    "tftransfer / Keras `image_dataset_from_directory` (worst)",
                    "first_batch_ratio_max", "{:.2f}x", "<= 2x"),
                   ("the same: images/s in the first epoch of a first run (the files' check),"
                    " tftransfer / Keras (worst)", "steady_ratio_min", "{:.2f}", "-"),
                   ("the same: steady images/s from the second epoch, tftransfer / Keras "
                    "(worst)", "second_epoch_ratio_min", "{:.2f}", ">= 1"),
                   ("the same: peak RSS growth of tftransfer (a whole epoch of 60,000 at 336 px"
                    " is ~20 GB decoded)", "tftransfer_peak_rss_growth_mb_max", "{:,.0f} MB",
                    "< 2,048 MB")],
    "selection": [("ranking before fine-tuning, LogME (the default): mean Kendall's tau with "
                   "the fine-tuned accuracy over the study's targets",
                   "summary.logme.mean_kendall_tau", "{:+.2f}", ">= 0.6"),
                  ("the same: top-ranked candidate within 2 points of the best fine-tuned "
                   "one (share of targets)", "summary.logme.top1_hit_rate", "{:.2f}",
                   ">= 0.8"),
                  ("the same: time to rank all candidates / to fine-tune them all",
                   "summary.logme.rank_over_fine_tune", "{:.3f}", "<= 0.1")],
    "backbone_search": [("`tune` over five backbones / the best single-backbone search, test "
                         "accuracy", "accuracy_ratio", "{:.3f}", ">= 0.98"),
                        ("the same, time / the five single-backbone searches",
                         "time_over_all_singles", "{:.3f}", "<= 0.5"),
                        ("the same, time / the best candidate's search alone",
                         "time_over_best_single", "{:.3f}", "report")],
}


def _study_cell(row):
    transfer, scratch = row["head + fine-tune"], row["scratch"]
    return (f"{transfer['mean']:.3f} ± {transfer['std']:.3f} / {scratch['mean']:.3f} ± "
            f"{scratch['std']:.3f}")


def _recipes_cell(row):
    keras_io = max((row[k] for k in ("keras.io recipe, head", "keras.io recipe, fine-tuned")),
                   key=lambda cell: cell["mean"])
    return " / ".join(f"{cell['mean']:.3f} ± {cell['std']:.3f}"
                      for cell in (row["fit defaults"], row["linear probe"], keras_io))


def _pair(row, first, second):
    return (f"{row[first]['mean']:.3f} ± {row[first]['std']:.3f} / {row[second]['mean']:.3f} "
            f"± {row[second]['std']:.3f}")


def headline_rows(results_dir):
    """`(benchmark, label, value, goal, date)` rows from the JSON files present."""
    rows = []
    for name, headlines in HEADLINES.items():
        path = os.path.join(results_dir, f"{name}.json")
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            record = json.load(handle)
        for label, key, form, goal in headlines:
            try:
                value = _get(record["figures"], key)
            except (KeyError, TypeError):
                continue
            text = (_study_cell(value) if form == "study" else _recipes_cell(value)
                    if form == "recipes" else _pair(value, "fit defaults", next(
                        k for k in value if k.startswith("previous defaults")))
                    if form == "ablations" else _pair(
                value, "student, distilled", "student, labels only") if form == "distillation"
                else _pair(value, next(k for k in value if "L2-SP" in k), "fine-tune")
                if form == "anchor" else form.format(value))
            rows.append((name, label, text, goal, record["date"][:10]))
    return rows


def machine_line(results_dir):
    for name in HEADLINES:
        path = os.path.join(results_dir, f"{name}.json")
        if os.path.exists(path):
            with open(path) as handle:
                record = json.load(handle)
            m, v = record["machine"], record["versions"]
            gpus = ", ".join(m.get("gpus") or []) or "no GPU"
            return (f"{m.get('cpu_count')} CPU cores, {m.get('memory_gb')} GB, {gpus}; "
                    f"{m.get('platform')}; TensorFlow {v.get('tensorflow')}, Keras "
                    f"{v.get('keras')}, Python {v.get('python')}")
    return "no results yet"


def table_markdown(results_dir):
    rows = headline_rows(results_dir)
    lines = [f"Machine: {machine_line(results_dir)}.", "",
             "| benchmark | figure | value | goal | date |", "|---|---|---|---|---|"]
    lines += [f"| `bench/{name}.py` | {label} | {value} | {goal} | {date} |"
              for name, label, value, goal, date in rows]
    return "\n".join(lines)


def write_readmes(results_dir, log):
    """bench/results/README.md (all tables) and the project README's table."""
    parts = ["# Benchmark results", "", "Written by `make bench` (bench/run_all.py) on "
             f"{datetime.date.today().isoformat()}.", "", table_markdown(results_dir), "",
             "## Runs", "", "| benchmark | seconds | exit code |", "|---|---|---|"]
    parts += [f"| {name} | {seconds:.0f} | {code} |" for name, seconds, code in log]
    for name in HEADLINES:
        md = os.path.join(results_dir, f"{name}.md")
        if os.path.exists(md):
            with open(md) as handle:
                parts += ["", handle.read().strip()]
    if os.path.exists(os.path.join(results_dir, "study.png")):
        parts += ["", "![Transfer study](study.png)"]
    if os.path.exists(os.path.join(results_dir, "recipes.png")):
        parts += ["", "![Recipes study](recipes.png)"]
    with open(os.path.join(results_dir, "README.md"), "w") as handle:
        handle.write("\n".join(parts) + "\n")
    readme = os.path.join(ROOT, "README.md")
    if os.path.abspath(results_dir) != os.path.join(HERE, "results"):
        return
    with open(readme) as handle:
        text = handle.read()
    start, end = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + start + "\n" + table_markdown(results_dir) + "\n" + end + after
        with open(readme, "w") as handle:
            handle.write(text)


def _merged_log(results_dir, log):
    """This run's (name, seconds, exit code) over the earlier runs' (`--only` reruns a few)."""
    path = os.path.join(results_dir, "runs.jsonl")  # not .json: those are results files
    merged = {}
    if os.path.exists(path):
        with open(path) as handle:
            merged = {row[0]: tuple(row[1:]) for row in map(json.loads, handle) if row}
    merged.update({name: (seconds, code) for name, seconds, code in log})
    ordered = [(name, *merged[name]) for name in BENCHMARKS if name in merged]
    os.makedirs(results_dir, exist_ok=True)
    with open(path, "w") as handle:
        handle.writelines(json.dumps(list(row)) + "\n" for row in ordered)
    return ordered


def has_gpu():
    code = "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1:] not in ([], ["0"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller runs, into bench/results/quick/")
    parser.add_argument("--only", default=None, help="comma-separated benchmark names")
    parser.add_argument("--tables-only", action="store_true",
                        help="only rewrite the READMEs from the results present")
    args = parser.parse_args(argv)
    results_dir = os.path.join(HERE, "results", "quick") if args.quick else os.path.join(
        HERE, "results")
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
    log = []
    if not args.tables_only:
        gpu = has_gpu()
        env = {**os.environ, "TFTRANSFER_BENCH_RESULTS": results_dir,
               "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        for name in names:
            if name == "mixed_precision" and not gpu:
                print(f"== {name}: skipped (no GPU)", flush=True)
                continue
            full, quick = BENCHMARKS[name]
            command = [sys.executable, os.path.join(HERE, f"{name}.py")] + (
                quick if args.quick else full)
            print(f"== {name}: {' '.join(command[1:])}", flush=True)
            start = time.time()
            code = subprocess.call(command, env=env)
            log.append((name, time.time() - start, code))
            print(f"== {name}: exit {code} after {time.time() - start:.0f} s", flush=True)
    write_readmes(results_dir, _merged_log(results_dir, log))
    print(table_markdown(results_dir))
    failed = [name for name, _, code in log if code != 0]
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
