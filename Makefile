# One-command set-up: `make demo` and `make test` create .venv, install adstack and
# check Java before doing anything else.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_SCALE ?= 1

.PHONY: setup java demo test test-all lint bench bench-quick clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "adstack needs Python 3.11; set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) java

java:
	@command -v java >/dev/null 2>&1 || { echo "Java 17 or newer is needed for Spark: install a JDK (e.g. apt-get install openjdk-17-jre-headless) and put java on PATH"; exit 1; }
	@major=$$(java -version 2>&1 | awk -F'"' '/version/ {split($$2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'); \
	if [ "$$major" -lt 17 ]; then echo "Java $$major found; Spark needs Java 17 or newer (17 and 21 are tested)"; exit 1; fi

demo: setup
	DEMO_SCALE=$(DEMO_SCALE) $(BIN)/adstack demo

test: setup
	$(BIN)/python -m pytest -m "not slow" --durations=25 tests

test-all: setup
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core artifact serving training adstack

# Every benchmark at full size, then BENCHMARKS.md and the README summary regenerated
# from bench/results/. Expect about 5 hours on 2 cores (the soak alone is 30 minutes,
# batch_features up to 50M events and the model-quality runs about an hour each);
# run it on a machine with nothing else going on.
bench: setup
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.simulator
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.materialize
	$(BIN)/python -m bench.batch_features
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.quality --workdir /tmp/adstack-bench-quality
	$(BIN)/python -m bench.leakage --reuse /tmp/adstack-bench-quality
	$(BIN)/python -m bench.calibration_noise --reuse /tmp/adstack-bench-quality
	$(BIN)/python -m bench.byol
	$(BIN)/python -m bench.serving --workdir /tmp/adstack-bench-serving
	$(BIN)/python -m bench.soak --seconds 1800
	$(BIN)/python -m bench.validation
	$(BIN)/python -m bench.first_run
	$(BIN)/python -m bench.report

# A small version of each benchmark, a smoke check that they all still run: under 10
# minutes on 2 cores. Results go to bench/results/quick/; BENCHMARKS.md is untouched.
bench-quick: setup
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.simulator --quick
	$(BIN)/python -m bench.ingest --quick
	$(BIN)/python -m bench.materialize --quick
	$(BIN)/python -m bench.batch_features --quick
	$(BIN)/python -m bench.validation --quick
	$(BIN)/python -m bench.stream --quick
	rm -rf /tmp/adstack-quick-quality /tmp/serving-bench-quick
	$(BIN)/python -m bench.quality --quick --workdir /tmp/adstack-quick-quality
	$(BIN)/python -m bench.leakage --quick --reuse /tmp/adstack-quick-quality
	$(BIN)/python -m bench.calibration_noise --quick --reuse /tmp/adstack-quick-quality
	$(BIN)/python -m bench.serving --quick
	$(BIN)/python -m bench.soak --quick

clean:
	rm -rf data reports .adstack
