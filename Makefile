# Two commands for a newcomer: `make run` (set up + default training job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The main install profile: torch and torchvision that load together (CPU or CUDA).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: run test install bench-mixer clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/mixgrpo train

test: install
	$(BIN)/python -m pytest -q

bench-mixer: install
	$(BIN)/python -m pip install -q multireward-grpo==0.1.1
	$(BIN)/python -m benchmarks.bench_mixer

clean:
	rm -rf $(VENV) runs
