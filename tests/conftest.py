"""Shared fixtures: the builtin tiny model, built once per test session in a private cache."""

from __future__ import annotations

import os

import pytest

from mixgrpo.builtin import resolve_model_path


@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory) -> str:
    """Point MIXGRPO_CACHE at a session directory and build builtin:tiny-arith there once."""
    cache = tmp_path_factory.mktemp("mixgrpo-cache")
    os.environ["MIXGRPO_CACHE"] = str(cache)
    return resolve_model_path("builtin:tiny-arith", 0)


@pytest.fixture(scope="session")
def tiny_svg_model(tiny_model_cache) -> str:
    """builtin:tiny-svg (seed 0), built once per session in the same private cache."""
    return resolve_model_path("builtin:tiny-svg", 0)
