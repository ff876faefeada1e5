# Two commands do all set-up on a fresh machine:
#   make run    start the playground on the default model
#   make test   run the whole test suite (GPU tests skip without a GPU)
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test setup setup-test
setup:
	@scripts/bootstrap.sh app

setup-test:
	@scripts/bootstrap.sh test

run: setup
	$(VENV)/bin/playground $(ARGS)

test: setup-test
	$(PY) -m pytest $(ARGS)
