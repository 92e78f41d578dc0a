"""Reward channels, registered by kind. Importing this package registers the built-in kinds."""

from mixgrpo.rewards.channels import (  # noqa: F401  (registration side effects)
    clipscore,
    http,
    math,
    ocr,
    python,
    renders,
    reward_model,
    rules,
)
from mixgrpo.rewards.channels.base import (
    CHANNEL_KINDS,
    ScoringInput,
    build_channel,
    register,
)

__all__ = ["CHANNEL_KINDS", "ScoringInput", "build_channel", "register"]
