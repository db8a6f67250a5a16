"""The README's claims table: each figure is the one its results file holds.

Between `<!-- claims:start -->` and `<!-- claims:end -->` the README has one
row a claim: `| area | claim | measured | evidence | source |`. The source
cell lists, in backticks, either JSON figures (`bench/results/<name>.json:
figures.a.b`, read with the bench harness' own lookup, `bench/run_all.py`'s
`_get`) or the test that checks the claim (`tests/<file>.py::<test>`). Each
bold figure of the measured cell (`**0.356** MB`) is the next JSON source's
value, rounded as shown; a test source must name a test that exists.
"""

import ast
import importlib.util
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- claims:start -->", "<!-- claims:end -->"
AREAS = {"speed", "memory", "parity", "resumability", "accuracy"}
NUMBER = re.compile(r"[+-]?\d[\d,]*(?:\.\d+)?")


def _lookup():
    """`bench/run_all.py`'s `_get`, the lookup the bench table is written with; a key
    that holds a dot itself (`"keras.io recipe, head"`) is matched whole."""
    spec = importlib.util.spec_from_file_location(
        "run_all", os.path.join(ROOT, "bench", "run_all.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def lookup(record, key):
        try:
            return module._get(record, key)
        except (KeyError, TypeError):
            parts, node = key.split("."), record
            while parts:  # the longest run of parts that is a key, at each level
                for end in range(len(parts), 0, -1):
                    name = ".".join(parts[:end])
                    if isinstance(node, dict) and name in node:
                        node, parts = node[name], parts[end:]
                        break
                else:
                    raise KeyError(key) from None
            return node

    return lookup


def claims_rows(readme):
    """`[(area, claim, measured, evidence, sources)]` from the README's claims table."""
    assert START in readme and END in readme, (
        f"README.md has no claims table between {START} and {END}")
    table = readme.split(START, 1)[1].split(END, 1)[0]
    rows = []
    for line in table.strip().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("area", "") or set(cells[0]) <= set("-: "):
            continue
        rows.append((*cells[:4], re.findall(r"`([^`]+)`", cells[4])))
    return rows


def shown_figures(measured):
    """The bold numbers of a measured cell, as shown: `[(text, value, decimals)]`."""
    figures = []
    for bold in re.findall(r"\*\*([^*]+)\*\*", measured):
        match = NUMBER.search(bold)
        assert match, f"a bold figure without a number: {bold!r}"
        text = match.group().replace(",", "")
        decimals = len(text.split(".")[1]) if "." in text else 0
        figures.append((bold, float(text), decimals))
    return figures


def check_row(row, lookup, root=ROOT):
    """The mismatches of one row (empty when its figures are its sources')."""
    area, claim, measured, _, sources = row
    problems = []
    json_sources = [s for s in sources if ".json:" in s]
    test_sources = [s for s in sources if "::" in s]
    if area.lower() not in AREAS:
        problems.append(f"{claim}: area {area!r} is none of {sorted(AREAS)}")
    if not json_sources and not test_sources:
        problems.append(f"{claim}: no source (a results figure or a test)")
    figures = shown_figures(measured)
    if len(figures) != len(json_sources):
        problems.append(f"{claim}: {len(figures)} bold figure(s) for {len(json_sources)} "
                        f"results source(s)")
    for (text, shown, decimals), source in zip(figures, json_sources):
        path, key = source.split(":", 1)
        with open(os.path.join(root, path)) as handle:
            value = lookup(json.load(handle), key)
        if abs(float(value) - shown) > 0.5 * 10 ** -decimals + 1e-9:
            problems.append(f"{claim}: shows {text!r}, {source} holds {value!r}")
    for source in test_sources:
        path, name = source.split("::", 1)
        name = name.split("[", 1)[0]
        full = os.path.join(root, path)
        tests = {node.name for node in ast.walk(ast.parse(open(full).read()))
                 if isinstance(node, ast.FunctionDef)} if os.path.exists(full) else set()
        if name not in tests:
            problems.append(f"{claim}: {source} names no test")
    return problems


def test_every_claim_in_the_readme_shows_its_measured_figure():
    with open(os.path.join(ROOT, "README.md")) as handle:
        rows = claims_rows(handle.read())
    lookup = _lookup()
    problems = [problem for row in rows for problem in check_row(row, lookup)]
    assert not problems, "\n".join(problems)
    assert {row[0].lower() for row in rows} == AREAS  # every kind of claim has a row


def test_a_figure_that_differs_from_its_results_file_is_caught(tmp_path):
    (tmp_path / "bench" / "results").mkdir(parents=True)
    record = {"figures": {"fit": {"growth_mb_per_epoch_head": 0.356, "growth": 32.63}}}
    (tmp_path / "bench" / "results" / "memory.json").write_text(json.dumps(record))
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("def test_resumes():\n    pass\n")
    source = ("`bench/results/memory.json:figures.fit.growth_mb_per_epoch_head`<br>"
              "`bench/results/memory.json:figures.fit.growth`")
    readme = "\n".join([
        "text", START, "| area | claim | measured | evidence | source |", "|---|---|---|---|---|",
        f"| memory | grows | **0.356 MB** an epoch, **32.6 MB** in all | bench | {source} |",
        f"| memory | grows | **0.36 MB** an epoch, **33 MB** in all | bench | {source} |",
        f"| memory | grows | **0.2 MB** an epoch, **32.6 MB** in all | bench | {source} |",
        f"| memory | grows | **0.356 MB** an epoch | bench | {source} |",
        "| resumability | resumes | exactly | test | `tests/test_x.py::test_resumes` |",
        "| resumability | resumes | exactly | test | `tests/test_x.py::test_gone` |",
        END, "more text"])
    rows = claims_rows(readme)
    lookup = _lookup()
    problems = [check_row(row, lookup, root=str(tmp_path)) for row in rows]
    assert problems[0] == problems[1] == problems[4] == []  # rounding as shown is equal
    assert problems[2] == ["grows: shows '0.2 MB', bench/results/memory.json:"
                           "figures.fit.growth_mb_per_epoch_head holds 0.356"]
    assert problems[3] == ["grows: 1 bold figure(s) for 2 results source(s)"]
    assert problems[5] == ["resumes: tests/test_x.py::test_gone names no test"]
