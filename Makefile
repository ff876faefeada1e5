# Two commands do all set-up on a fresh machine:
#   make run    start the playground on the default model
#   make test   run the whole test suite (GPU tests skip without a GPU)
#   make bench-cpu   the CPU benchmarks at small sizes, JSON into benchmarks/results/small/
#                    (STAGES="decode kv" picks some: benchmarks/cpu_run.sh lists them)
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
STAGES ?=
BENCH_OUT ?= benchmarks/results/small

.PHONY: run test setup setup-test bench-cpu
setup:
	@scripts/bootstrap.sh app

setup-test:
	@scripts/bootstrap.sh test

run: setup
	$(VENV)/bin/playground $(ARGS)

test: setup-test
	$(PY) -m pytest $(ARGS)

bench-cpu: setup-test
	OUT=$(BENCH_OUT) PY=$(PY) bash benchmarks/cpu_run.sh $(STAGES)
