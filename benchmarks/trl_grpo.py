"""Hugging Face TRL's GRPOTrainer on a job exported by ``bench_vs_trl`` (runs inside the TRL venv, never mixgrpo's).

Usage (the benchmark calls it): ``.venv-trl/bin/python benchmarks/trl_grpo.py JOB.json RESULT.json``.

The job file carries the resolved model path, the exact prompt sequence mixgrpo's task gives for the run's
seed (step-major, P prompts per step), the reward channels (kind, weight, options) and the optimiser and
sampling settings. The rewards are mixgrpo's own channel code (``mixgrpo.rewards.channels``, imported from
the repository root on ``sys.path``), wrapped as TRL reward functions. The result file has one wall time
per optimizer step (on_step_end to on_step_end) and each channel's mean reward per step.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # mixgrpo's reward channels, without installing mixgrpo here

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from benchmarks.trl_rewards import reward_function, trl_prompts


class StepClock(TrainerCallback):
    """Wall seconds of each optimizer step, from the previous step's end (or train begin) to this one's."""

    def __init__(self) -> None:
        self.step_s: list[float] = []
        self._last = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        self.step_s.append(now - self._last)
        self._last = now


def grpo_config(job: dict[str, Any], out_dir: Path) -> GRPOConfig:
    """GRPOConfig matching the exported mixgrpo job (one generation batch per optimizer step)."""
    prompts, group = job["prompts_per_step"], job["group_size"]
    return GRPOConfig(
        output_dir=str(out_dir),
        max_steps=job["steps"],
        seed=job["seed"],
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,  # TRL's default is True; mixgrpo's learner does not checkpoint
        model_init_kwargs={"dtype": torch.float32},
        per_device_train_batch_size=prompts * group,
        gradient_accumulation_steps=1,
        num_generations=group,
        max_completion_length=job["max_new_tokens"],
        temperature=job["temperature"],
        top_p=job["top_p"],
        top_k=0,
        learning_rate=job["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=job["weight_decay"],
        max_grad_norm=job["max_grad_norm"],
        beta=job["kl_coef"],
        epsilon=job["eps_low"],
        epsilon_high=job["eps_high"],
        loss_type="dapo",
        scale_rewards="group",
        multi_objective_aggregation="normalize_then_sum",
        reward_weights=[c["weight"] for c in job["rewards"]],
        shuffle_dataset=False,
        use_vllm=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def main() -> None:
    """Train with TRL on the job file and write the result file."""
    job_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    started = time.monotonic()
    job = json.loads(job_path.read_text())
    torch.set_num_threads(job["threads"])
    tokenizer = AutoTokenizer.from_pretrained(job["model_path"])
    tokenizer.padding_side = "left"
    dataset = Dataset.from_dict({"prompt": trl_prompts(tokenizer, job), "answer": job["answers"]})
    means: dict[str, list[float]] = {c["name"]: [] for c in job["rewards"]}
    lora = job["lora"]
    clock = StepClock()
    trainer = GRPOTrainer(
        model=job["model_path"],
        reward_funcs=[reward_function(c, means[c["name"]]) for c in job["rewards"]],
        args=grpo_config(job, result_path.parent / "trl-output"),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                               target_modules=lora["target_modules"], task_type="CAUSAL_LM"),
        callbacks=[clock],
    )
    trainer.train()
    result = {
        "step_s": clock.step_s,
        "reward": means,
        "wall_s": time.monotonic() - started,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "trl": sys.modules["trl"].__version__},
    }
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
