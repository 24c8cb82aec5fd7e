# The two commands a new user runs (as root, on a Debian/Ubuntu host):
#   make run    set up everything, measure (quick preset), write the report
#   make test   set up everything (Podman too), run the test suite against the real engines
# Each is idempotent: set-up steps that are done already change nothing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PRESET ?= quick
OUT    ?= runs/$(PRESET)-$(shell date -u +%Y%m%dT%H%M%S)
PYTEST_ARGS ?=

.PHONY: run test setup host podman venv kernel bench lint notebooks-clean

run: setup
	$(BIN)/shlib run --preset $(PRESET) --out $(OUT)
	$(BIN)/shlib report $(OUT)

test: setup podman
	$(BIN)/pytest $(PYTEST_ARGS)

setup: host venv kernel
	$(BIN)/shlib setup

host:
	bash scripts/setup-host.sh

# Podman as a second engine (its Docker API on /run/shlib-podman.sock): the tests exercise it.
podman: host
	bash scripts/setup-podman.sh

venv: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The notebooks name the kernel "shlib": register this environment under that name.
kernel: venv
	$(BIN)/python -m ipykernel install --sys-prefix --name shlib --display-name "Python (shlib)" >/dev/null

bench: setup
	$(BIN)/python -m benchmarks.run

# Notebooks are committed without outputs (tests/test_notebooks.py checks it).
notebooks-clean: venv
	$(BIN)/python -m shlib.present.notebooks strip

lint: venv
	$(BIN)/ruff check shlib tests benchmarks
