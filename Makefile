# qmpd: make venv | make setup | make test | make demo | make bench | make guest
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv setup test lint demo bench guest

# A fresh clone needs nothing but `make demo` or `make test`: both create the venv first.
STAMP := $(VENV)/.installed

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check qmpd tests
	$(BIN)/mypy --strict qmpd
	$(BIN)/lint-imports --no-logo

# System packages the tests need (QEMU 7.2, binutils, openssl): installed when run as root.
setup:
	scripts/setup-system

test: setup $(STAMP) lint
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python -m qmpd.testing.demo

bench: $(STAMP)
	$(BIN)/python bench/qmp_throughput.py

# After editing qmpd/machine/guest/counter.S: re-assemble the shipped counter.bin (binutils).
guest: $(STAMP)
	$(BIN)/python -m qmpd.machine.guest.build
