"""The error of a run stopped because a reward channel's actor is dead (``rewards.<name>.on_dead: stop``).

Its own small module so that the command line can catch it without importing Ray.
"""

from __future__ import annotations


class RewardChannelDead(RuntimeError):
    """A reward channel's actor used up cluster.max_actor_restarts and the channel has ``on_dead: stop``."""

    def __init__(self, channel: str, saved: str = "") -> None:
        super().__init__(f"reward channel {channel!r} is dead: its actor used up cluster.max_actor_restarts "
                         f"and rewards.{channel}.on_dead is 'stop'" + (f"; {saved}" if saved else ""))
        self.channel = channel
        """The channel's name."""
