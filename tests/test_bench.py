"""The benchmark harness: result tables come from the results files."""

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _harness():
    spec = importlib.util.spec_from_file_location(
        "run_all", os.path.join(ROOT, "bench", "run_all.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_matches_the_committed_results():
    harness = _harness()
    with open(os.path.join(ROOT, "README.md")) as handle:
        readme = handle.read()
    table = harness.table_markdown(os.path.join(ROOT, "bench", "results"))
    start, end = "<!-- bench-table:start -->\n", "\n<!-- bench-table:end -->"
    assert readme.split(start, 1)[1].split(end, 1)[0] == table
    # Every committed results file shows in the table.
    names = {f[:-5] for f in os.listdir(os.path.join(ROOT, "bench", "results"))
             if f.endswith(".json")}
    assert names and all(f"`bench/{name}.py`" in table for name in names)


def test_headlines_and_readme_are_written_from_results(tmp_path):
    harness = _harness()
    record = {"name": "overhead", "date": "2026-01-02T00:00:00+00:00",
              "machine": {"cpu_count": 2, "memory_gb": 8, "gpus": [], "platform": "x"},
              "versions": {"tensorflow": "2.21.0", "keras": "3.15.1", "python": "3.11"},
              "figures": {"ratio": 1.0234}}
    (tmp_path / "overhead.json").write_text(json.dumps(record))
    (tmp_path / "overhead.md").write_text("### overhead\n")
    rows = harness.headline_rows(str(tmp_path))
    assert rows == [("overhead", "`tftransfer.fit` / hand-written Keras, per epoch", "1.023",
                     "<= 1.05", "2026-01-02")]
    harness.write_readmes(str(tmp_path), [("overhead", 12.3, 0)])
    written = (tmp_path / "README.md").read_text()
    assert "| `bench/overhead.py` |" in written and "| overhead | 12 | 0 |" in written
    assert "2 CPU cores" in written
