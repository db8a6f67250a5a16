"""Every notebook runs offline, top to bottom; outputs are stripped in git."""

import glob
import importlib.util
import os
import re

import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))

# The stderr lines a notebook may print; any other line fails the test. Keep it short: a
# line that belongs here is usually one for tftransfer/_startup.py's KNOWN_NOISE instead.
ALLOWED_STDERR = (
)


def unexpected_stderr(notebook):
    """The stderr lines of an executed notebook that are not on the allowed list."""
    lines = [line for cell in notebook.cells if cell.cell_type == "code"
             for output in cell.get("outputs", [])
             if output.get("output_type") == "stream" and output.get("name") == "stderr"
             for line in output.get("text", "").splitlines() if line.strip()]
    return [line for line in lines
            if not any(re.fullmatch(pattern, line) for pattern in ALLOWED_STDERR)]


def test_the_notebooks_are_there_stripped_and_generated():
    names = [os.path.basename(path) for path in NOTEBOOKS]
    assert names == ["01_quickstart.ipynb", "02_fine_tuning_and_freezing.ipynb",
                     "03_search_with_keras_tuner.ipynb", "04_export_and_serving.ipynb",
                     "05_distillation_and_l2sp.ipynb", "06_text_classification.ipynb",
                     "07_modern_backbones.ipynb"]
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", os.path.join(ROOT, "scripts", "make_notebooks.py"))
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path
        # The committed notebook is what scripts/make_notebooks.py writes.
        expected = generator.build(generator.NOTEBOOKS[os.path.basename(path)])
        assert [c.source for c in notebook.cells] == [c.source for c in expected.cells]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path, tmp_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.get("output_type") == "error"]
    assert not errors
    assert unexpected_stderr(notebook) == []
    images = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if "image/png" in output.get("data", {})]
    if os.path.basename(path).startswith(("01_", "02_", "03_")):
        assert images  # curves, confusion matrix, top losses, LR finder, trials plot
    # What the notebook writes stays in its git-ignored outputs/ folder.
    assert sorted(os.listdir(tmp_path)) == ["outputs"]
    # A sentence after each result: no code cell that shows something ends the notebook
    # or is followed directly by another code cell.
    cells = notebook.cells
    for index, cell in enumerate(cells):
        if cell.cell_type == "code" and cell.get("outputs"):
            follower = cells[index + 1] if index + 1 < len(cells) else None
            assert follower is not None and follower.cell_type == "markdown", cell.source[:80]


def test_stderr_lines_off_the_allowed_list_are_reported():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("import tensorflow")]
    notebook.cells[0].outputs = [nbformat.v4.new_output(
        "stream", name="stderr", text="E0000 00:00:1.2  7 loader.cc:1] SavedModel load failed\n")]
    assert unexpected_stderr(notebook) == [
        "E0000 00:00:1.2  7 loader.cc:1] SavedModel load failed"]
    notebook.cells[0].outputs[0]["name"] = "stdout"
    assert unexpected_stderr(notebook) == []
