# Two commands from a fresh machine: `make demo` and `make test`. Each creates .venv on first use and
# reinstalls only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo
export OPENBLAS_NUM_THREADS := 1

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/persona-engine generate --out $(DEMO_DATA)
	$(BIN)/persona-engine train --config training/configs/demo.toml
	$(BIN)/persona-engine evaluate --artifact artifacts/latest
	$(BIN)/persona-engine summary --artifact artifacts/latest
	$(BIN)/python -m serving.demo --artifact artifacts/latest

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check engine training serving benchmarks tests
	$(BIN)/ruff format --check engine training serving benchmarks tests
	$(BIN)/mypy

# Regenerate serving/generated/ from proto/ after editing a .proto file (tests fail while it is stale).
# Phony: without it make would take the proto/ directory itself for the target and do nothing.
.PHONY: proto
proto: $(STAMP)
	$(BIN)/python -m serving.proto_codegen

bench: $(STAMP)
	$(BIN)/python -m benchmarks.training_cost

clean:
	rm -rf $(VENV) artifacts data .pytest_cache .mypy_cache .ruff_cache *.egg-info
