"""mixgrpo: multi-reward GRPO on Ray (Normalize-then-Aggregate advantages, LoRA learner)."""

__version__ = "0.1.0"
