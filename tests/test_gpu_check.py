"""benchmarks/gpu_check.py: a CPU smoke run of the whole script with Ray, vLLM and the other extras blocked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
NOT_NEEDED = ["ray", "vllm", "matplotlib", "tensorboard", "open_clip", "torchvision", "sklearn", "cairosvg",
              "pytesseract", "rapidfuzz", "runpod"]
"""Packages this project installs that the GPU check must not need (it needs torch, transformers, peft,
numpy, pyarrow, pyyaml, pydantic and mixgrpo)."""
RUN_BLOCKED = (
    "import runpy, sys\n"
    f"for name in {NOT_NEEDED!r}:\n"
    "    sys.modules[name] = None  # any import of it raises ImportError\n"
    "sys.argv = ['gpu_check', *sys.argv[1:]]\n"
    "runpy.run_module('benchmarks.gpu_check', run_name='__main__')\n"
)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", RUN_BLOCKED, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _figure(output: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}: (\S+)", output, re.MULTILINE)
    assert match, f"no '{name}:' line in:\n{output}"
    return match.group(1)


def test_cpu_smoke_run_prints_every_figure():
    done = _run("--allow-cpu", "--shape", "tiny", "--threads", "1", "--steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert float(_figure(out, "generation tokens/s")) > 0
    assert float(_figure(out, "learner tokens/s")) > 0
    assert _figure(out, "MFU") == "n/a" and "cpu: no peak" in out
    assert _figure(out, "peak GPU memory GiB") == "n/a"
    assert float(_figure(out, "adapter load ms")) > 0
    assert "served minus trained: max |diff| 0," in out  # the generator serves exactly the learner's adapter
    assert float(re.search(r"max \|lora_B\| (\S+)\)", out).group(1)) > 0  # the steps changed the adapter
    assert len(re.findall(r"^learner step \d/2:", out, re.MULTILINE)) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_in_one_line_without_cuda():
    done = _run()
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in done.stderr and "--allow-cpu" in done.stderr
