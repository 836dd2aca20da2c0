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
	@echo "installing persona-engine and its dependencies (numpy, implicit, lightfm, grpcio, ...) into $(VENV):"
	@echo "about 2-6 minutes the first time, seconds afterwards; pip lists each package as it goes"
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/persona-engine generate --out $(DEMO_DATA)
	$(BIN)/persona-engine train --config training/configs/demo.toml
	$(BIN)/persona-engine evaluate --artifact artifacts/latest
	$(BIN)/persona-engine summary --artifact artifacts/latest
	$(BIN)/persona-engine report --artifact artifacts/latest --out reports/report.html
	$(BIN)/persona-engine drift --artifact artifacts/latest --limit 5
	$(BIN)/python -m serving.demo --artifact artifacts/latest

# A self-contained HTML report on the latest artifact (and its numbers in report.json beside it).
report: $(STAMP)
	$(BIN)/persona-engine report --artifact artifacts/latest --out reports/report.html

# The Redis state store is tested against a real redis-server, the Spark training engine against a
# real local-mode Spark (a JVM); the scripts install them (Debian packages, need root) when missing.
test: $(STAMP)
	./scripts/install-redis.sh
	./scripts/install-java.sh
	./scripts/check-numba-cache.sh
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
	$(BIN)/python -m benchmarks.training_cost --latency
	$(BIN)/python -m benchmarks.serving_latency $(BENCH_SERVING_ARGS)

# Serving latency and throughput of the real gRPC server against the gRPC floor (the same server with
# --benchmark-floor: Personalize without the engine), in-process and numpy top-k baselines, with the
# mixed read/write workload; prints the floor, the ratios and the targets' verdicts (benchmarks/README.md).
# Personalize runs open loop at 300/s (--rate) and 1,000/s (--personalize-extra-rates, default).
# Extra flags through BENCH_SERVING_ARGS, e.g. BENCH_SERVING_ARGS=--profile (needs py-spy in the venv),
# BENCH_SERVING_ARGS=--json or BENCH_SERVING_ARGS=--no-floor.
BENCH_SERVING_MIXED := --mixed-write-share 0.1
# Training cost at shop scale (benchmarks/training_cost.py --serving-build): the serving benchmark's
# artifact build, stage by stage (wall, CPU, peak RSS), next to the raw ALS fit on the same matrix.
# One large build at a time on a shared machine; TRAINING_EVENTS=50000000 for the 50M-event build.
.PHONY: bench-training bench-training-large
TRAINING_CUSTOMERS ?= 1000000
TRAINING_ITEMS ?= 100000
TRAINING_EVENTS ?= 10000000
bench-training: $(STAMP)
	nice -n 10 $(BIN)/python -m benchmarks.training_cost
bench-training-large: $(STAMP)
	nice -n 10 $(BIN)/python -m benchmarks.training_cost --serving-build --customers $(TRAINING_CUSTOMERS) \
		--items $(TRAINING_ITEMS) --events $(TRAINING_EVENTS)

.PHONY: bench-serving bench-serving-large
bench-serving: $(STAMP)
	$(BIN)/python -m benchmarks.serving_latency $(BENCH_SERVING_MIXED) $(BENCH_SERVING_ARGS)

bench-serving-large: $(STAMP)
	$(BIN)/python -m benchmarks.serving_latency --customers 1000000 --items 100000 --events 10000000 \
		--config benchmarks/configs/serving_large.toml --workers 1 2 --concurrency 16 \
		--duration 10 --warmup 2 --rate 300 --personalize-extra-rates 1000 $(BENCH_SERVING_MIXED) \
		$(BENCH_SERVING_ARGS)

# 100,000 generated requests (valid, field-fuzzed, mutated, random, empty, oversized, 1 MiB and 4 MB
# messages) over every RPC of a real 2-worker server with the event log and admin token on; counts by
# status code, health and per-worker memory after (benchmarks/fuzz.py). Flags through BENCH_FUZZ_ARGS,
# e.g. BENCH_FUZZ_ARGS="--requests 5000 --warmup 1000".
.PHONY: bench-fuzz
bench-fuzz: $(STAMP)
	$(BIN)/python -m benchmarks.fuzz $(BENCH_FUZZ_ARGS)

# Model quality on ml-100k, the synthetic shop and Online Retail: `compare --json` on each (engine vs raw
# libraries tuned with the same trial budget, persona ablations, paired bootstrap intervals), results in
# benchmarks/results/model_quality-<timestamp>.json and the README table between the model-quality
# markers. Real data sets are skipped with the reason when ../shared is absent. MODEL_QUALITY_ARGS, e.g.
# MODEL_QUALITY_ARGS="--trials 10" or "--sets demo".
.PHONY: model-quality
model-quality: $(STAMP)
	$(BIN)/python -m benchmarks.model_quality $(MODEL_QUALITY_ARGS)

# Known customers' live sessions folded into their vectors against the mix-only path, per page and per
# batch of 32, first page after an event and later ones (benchmarks/live_fold_in.py) on the demo's
# artifact (run make demo first). Flags through BENCH_LIVE_FOLD_IN_ARGS, e.g. "--session-events 12".
.PHONY: bench-live-fold-in
bench-live-fold-in: $(STAMP)
	$(BIN)/python -m benchmarks.live_fold_in artifacts/latest $(BENCH_LIVE_FOLD_IN_ARGS)

# Start-up with a 1M-event log (snapshot + tail) to health SERVING, against an empty-log start; the
# full-replay cost per event (benchmarks/startup.py). Flags through BENCH_STARTUP_ARGS.
.PHONY: bench-startup bench-crash
bench-startup: $(STAMP)
	$(BIN)/python -m benchmarks.startup $(BENCH_STARTUP_ARGS)

# 20 rounds of RecordEvents bursts, SIGKILL of a 2-worker server, restart: acknowledged events lost
# (must be 0), duplicates stored (must be 0), restart time (benchmarks/crash.py). Flags: BENCH_CRASH_ARGS.
bench-crash: $(STAMP)
	$(BIN)/python -m benchmarks.crash $(BENCH_CRASH_ARGS)

# 20 rounds of two servers sharing one Redis Streams event log (appendfsync always), RecordEvents
# bursts, SIGKILL of either server mid-burst, restart: acknowledged events lost (must be 0), duplicates
# stored or read by training (must be 0), per-round times (benchmarks/fleet_event_log.py). Needs
# redis-server (scripts/install-redis.sh). Flags through BENCH_FLEET_ARGS, e.g. "--rounds 3".
.PHONY: bench-fleet-log
bench-fleet-log: $(STAMP)
	$(BIN)/python -m benchmarks.fleet_event_log $(BENCH_FLEET_ARGS)

clean:
	rm -rf $(VENV) artifacts data reports .pytest_cache .mypy_cache .ruff_cache *.egg-info .numba-sources.sha256
	find engine training serving -name '*.nbi' -delete -o -name '*.nbc' -delete

# Soak: a 2-worker server with an event log under open-loop mixed load (200 calls/s) for 30 minutes,
# a hot reload every minute and a worker SIGKILLed every 10 minutes; failed calls and their retries,
# RSS slope per worker, p99 per minute (benchmarks/soak.py). Flags through BENCH_SOAK_ARGS, e.g.
# BENCH_SOAK_ARGS="--duration 300 --rate 100".
.PHONY: bench-soak
bench-soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(BENCH_SOAK_ARGS)
