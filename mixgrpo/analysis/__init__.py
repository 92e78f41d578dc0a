"""Offline analyses of rewards, advantages and gradients (Theorem 3, influence of channels)."""
