"""Reward channels by kind. Kind modules are imported on first use (see ``base.KIND_MODULES``), not here:
a process that scores only rule channels never imports a model library."""

from mixgrpo.rewards.channels.base import (
    CHANNEL_KINDS,
    ChannelOptions,
    ChannelOptionsError,
    ScoringInput,
    all_kinds,
    build_channel,
    channel_options,
    known_kinds,
    register,
)

__all__ = [
    "CHANNEL_KINDS", "ChannelOptions", "ChannelOptionsError", "ScoringInput", "all_kinds", "build_channel",
    "channel_options", "known_kinds", "register",
]
