# Two commands from a fresh machine: `make demo` and `make test`. Each creates .venv on first use and
# reinstalls only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DATA := data/demo
export OPENBLAS_NUM_THREADS := 1

.PHONY: install demo test lint bench clean report

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
	$(BIN)/persona-engine report artifacts/latest --out reports/report.html
	$(BIN)/persona-engine drift --artifact artifacts/latest --limit 5
	$(BIN)/python -m serving.demo --artifact artifacts/latest

# A self-contained HTML report on the latest artifact (and its numbers in report.json beside it).
report: $(STAMP)
	$(BIN)/persona-engine report artifacts/latest --out reports/report.html

# The Redis state store is tested against a real redis-server; the script installs it (Debian
# package, needs root) when it is missing.
test: $(STAMP)
	./scripts/install-redis.sh
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check engine training serving benchmarks tests cli
	$(BIN)/ruff format --check engine training serving benchmarks tests cli
	$(BIN)/mypy

# Regenerate serving/generated/ from proto/ after editing a .proto file (tests fail while it is stale).
# Phony: without it make would take the proto/ directory itself for the target and do nothing.
.PHONY: proto
proto: $(STAMP)
	$(BIN)/python -m serving.proto_codegen

bench: $(STAMP)
	$(BIN)/python -m benchmarks.training_cost
	$(BIN)/python -m benchmarks.serving_latency $(BENCH_SERVING_ARGS)

# Serving latency and throughput of the real gRPC server against the gRPC floor (the same server with
# --benchmark-floor: Personalize without the engine), in-process and numpy top-k baselines, with the
# mixed read/write workload; prints the floor, the ratios and the targets' verdicts (benchmarks/README.md).
# Personalize runs open loop at 300/s (--rate) and 1,000/s (--personalize-extra-rates, default).
# Extra flags through BENCH_SERVING_ARGS, e.g. BENCH_SERVING_ARGS=--profile (needs py-spy in the venv),
# BENCH_SERVING_ARGS=--json or BENCH_SERVING_ARGS=--no-floor.
BENCH_SERVING_MIXED := --mixed-write-share 0.1
.PHONY: bench-serving bench-serving-large
bench-serving: $(STAMP)
	$(BIN)/python -m benchmarks.serving_latency $(BENCH_SERVING_MIXED) $(BENCH_SERVING_ARGS)

bench-serving-large: $(STAMP)
	$(BIN)/python -m benchmarks.serving_latency --customers 1000000 --items 100000 --events 10000000 \
		--config benchmarks/configs/serving_large.toml --workers 1 2 --concurrency 16 \
		--duration 10 --warmup 2 --rate 300 --personalize-extra-rates 1000 $(BENCH_SERVING_MIXED) \
		$(BENCH_SERVING_ARGS)

clean:
	rm -rf $(VENV) artifacts data reports .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Soak: a 2-worker server with an event log under open-loop mixed load (200 calls/s) for 30 minutes,
# a hot reload every minute and a worker SIGKILLed every 10 minutes; failed calls and their retries,
# RSS slope per worker, p99 per minute (benchmarks/soak.py). Flags through BENCH_SOAK_ARGS, e.g.
# BENCH_SOAK_ARGS="--duration 300 --rate 100".
.PHONY: bench-soak
bench-soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(BENCH_SOAK_ARGS)
