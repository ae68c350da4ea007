# Set-up on a fresh machine: `make run` and `make test` create the virtual
# environment, install the package (CPU torch wheel) and do their job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run test test-all lint bench bench-runs clean faults

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test,dask]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/icldyn run linreg --out data/linreg.h5

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check dynamics reduced_models sims tests

# Benchmarks (torch at 1 thread) -> benchmarks/results/*.json and BENCHMARKS.md; each ratio
# the median of interleaved repetitions with its quartiles (benchmarks/spread.py); 10 min
# here at load 1.3-3.3.
BENCHES := bench_sgd bench_ensemble bench_population bench_ode_vs_sgd bench_sweep_grid bench_startup \
	bench_gpt2
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	cd benchmarks && for b in $(BENCHES); do \
		OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(abspath $(BIN))/python $$b.py || exit 1; done
	cd benchmarks && $(abspath $(BIN))/python report.py

# The default run of every experiment as a whole process (wall and CPU time) -> the
# default_runs section of BENCHMARKS.md. Some take 10+ minutes; resumable: experiments
# already measured are skipped. RUNS="linreg induction" measures only those; FORCE=1 again.
bench-runs: $(STAMP)
	cd benchmarks && $(abspath $(BIN))/python bench_runs.py $(RUNS) $(if $(FORCE),--force)
	cd benchmarks && $(abspath $(BIN))/python report.py

faults: $(STAMP)
	$(BIN)/python tests/fault_injection.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""
