# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
# `make test ORGPIPELINE_NODE=kubelet` (or demo): the stack runs a real node (README, "Real node").
SHELL := /bin/bash
export ORGPIPELINE_NODE
VENV := .venv
BIN := $(VENV)/bin

.PHONY: bootstrap test unit lint stack-up stack-down stack-status demo demo-down bench bench-operator

bootstrap:
	@hack/bootstrap

# Lint first: ruff, mypy and the import layers clean is part of passing.
test: bootstrap lint
	@hack/stack up
	$(BIN)/pytest $(PYTEST_ARGS)

unit: bootstrap
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api jobs operator cli console
	$(BIN)/lint-imports
	$(BIN)/python -m orgpipeline_api.crd --check

stack-up: bootstrap
	@hack/stack up

stack-down:
	@hack/stack down

stack-status:
	@hack/stack status

demo: bootstrap
	@hack/demo up

demo-down:
	@hack/demo down

bench: bootstrap
	$(BIN)/pip install -q -e '.[test,bench]'
	@hack/stack up
	$(BIN)/python bench/dataplane.py $(BENCH_ARGS)

bench-operator: bootstrap
	$(BIN)/pip install -q -e '.[test,bench]'
	@hack/stack up
	$(BIN)/python bench/operator_scale.py $(BENCH_ARGS)
