# qmpd: make venv | make test | make demo | make bench
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv test lint demo bench

venv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'

lint:
	$(BIN)/ruff check qmpd tests
	$(BIN)/mypy --strict qmpd

test: lint
	$(BIN)/pytest -q

demo:
	$(BIN)/python -m qmpd.demo

bench:
	$(BIN)/python bench/qmp_throughput.py
