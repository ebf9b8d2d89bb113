# modelyard: `make serve` starts the API, `make test` runs the suite.
# Both create .venv and install the project (pip, editable, with dev extras) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000
WORKSPACE ?= ./workspace
IMPORT_ROOT ?=
PYTEST_ARGS ?=
#: parallel test processes (pytest-xdist): one per core, at most 4 (each imports torch); 0 runs in this process.
#: --dist loadgroup keeps the tests of one xdist_group (the Ray cluster tests share one cluster) on one process
TEST_WORKERS ?= auto
#: first-party plugins packaged on their own: installed into the venv by `make test`, their tests run after the suite
CONTRIB_TIMM := contrib/modelyard-timm
CONTRIB_STAMP := $(VENV)/.installed-modelyard-timm
CONTRIB_TEST_WORKERS ?= 2

.PHONY: serve test test-contrib install demo demo-detection bench bench-quick fuzz fuzz-live load clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)  # IMPORT_ROOT=DIR allows local imports from DIR (the curl tour in README.md)
	$(BIN)/modelyard serve --host $(HOST) --port $(PORT) --workspace $(WORKSPACE) $(if $(IMPORT_ROOT),--import-root $(IMPORT_ROOT))

# contrib/modelyard-timm (timm architectures, the onnx_int8 format): its own package, installed editable with its
# dependencies (timm), so the server, its export workers and the suite's plugin contract tests see it
$(CONTRIB_STAMP): $(STAMP) $(CONTRIB_TIMM)/pyproject.toml
	$(BIN)/python -m pip install -e "$(CONTRIB_TIMM)"
	touch $(CONTRIB_STAMP)

test: $(STAMP) $(CONTRIB_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadgroup $(PYTEST_ARGS)
	$(BIN)/pytest -n $(CONTRIB_TEST_WORKERS) --dist loadfile $(CONTRIB_TIMM)/tests

test-contrib: $(CONTRIB_STAMP)  # the contrib package's tests alone (about a minute on 2 cores); its own pyproject configures pytest
	$(BIN)/pytest -n $(CONTRIB_TEST_WORKERS) --dist loadfile $(CONTRIB_TIMM)/tests

bench: $(STAMP)  # the benchmark table, side by side (benchmarks/results/latest.json); BENCH_ARGS="--threads 1" on a shared machine
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-quick: $(STAMP)  # smoke run of the same harness on tiny inputs, under 2 minutes (benchmarks/results/quick.json)
	$(BIN)/python -m benchmarks --quick $(BENCH_ARGS)

fuzz: $(STAMP)  # schemathesis on every operation: 300 random examples each (CI runs 15, fixed), longer stateful phase
	MODELYARD_FUZZ_EXAMPLES=$${MODELYARD_FUZZ_EXAMPLES:-300} MODELYARD_FUZZ_STATEFUL_EXAMPLES=$${MODELYARD_FUZZ_STATEFUL_EXAMPLES:-100} \
	MODELYARD_FUZZ_RANDOM=1 $(BIN)/pytest tests/reliability/test_schema_fuzz.py -q $(PYTEST_ARGS)

fuzz-live: $(STAMP)  # schemathesis --checks all on a real server in a fresh workspace (schemathesis.toml lists the data-dependent rules)
	rm -rf .fuzz-live && mkdir -p .fuzz-live/imports
	$(BIN)/modelyard serve --port 8765 --workspace .fuzz-live/workspace --import-root .fuzz-live/imports --warm-workers 0 \
		--log-level warning > .fuzz-live/serve.log 2>&1 & echo $$! > .fuzz-live/pid
	for i in $$(seq 60); do curl -sf http://127.0.0.1:8765/api/system/health > /dev/null && break; sleep 0.5; done
	$(BIN)/schemathesis run http://127.0.0.1:8765/schema/openapi.json --checks all \
		--max-examples $${MODELYARD_FUZZ_EXAMPLES:-25} --seed $${MODELYARD_FUZZ_SEED:-1}; \
		status=$$?; kill $$(cat .fuzz-live/pid); exit $$status

load: $(STAMP)  # 50 clients + 10 SSE subscribers for 30 s against a real server while it trains (docs/security.md)
	$(BIN)/python -m benchmarks.load_test $(LOAD_ARGS)

# The demo: generated shapes, then configs/demo.yaml end to end on the CPU (train, evaluate, export ONNX,
# verify it), ending with the summary table and the path of the verified .onnx file. One torch thread:
# the demo's tiny CNN gains nothing from more, and on a busy machine extra threads make it many times slower.
DEMO_DATA ?= $(WORKSPACE)/sample-data/shapes
DEMO_THREADS ?= 1
demo: $(STAMP)
	$(BIN)/modelyard sample-data shapes $(DEMO_DATA) --per-class 300 --size 64 --seed 0
	OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/modelyard run configs/demo.yaml --workspace $(WORKSPACE) --dataset $(DEMO_DATA)

# The detection demo: generated shapes-detection canvases (COCO JSON), then configs/detection-quick.yaml end to end
# on the CPU: the small detector trained, evaluated (mAP, per-image matches), exported to ONNX and verified.
DETECTION_DATA ?= $(WORKSPACE)/sample-data/shapes-detection
demo-detection: $(STAMP)
	$(BIN)/modelyard sample-data shapes-detection $(DETECTION_DATA) --images 1000 --size 96 --seed 0
	OMP_NUM_THREADS=$(DEMO_THREADS) $(BIN)/modelyard run configs/detection-quick.yaml --workspace $(WORKSPACE) --dataset $(DETECTION_DATA)

clean:
	rm -rf $(VENV) .pytest_cache
