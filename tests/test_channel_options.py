"""Channel options end to end: `mixgrpo train` rejects a bad kind or option in one line naming
``rewards.<name>.options.<field>``, before Ray starts."""

from __future__ import annotations

import pytest
import ray

from mixgrpo.orchestrator.cli import main


@pytest.mark.parametrize("overrides, message", [
    (["rewards.format.options.patern=x"],
     "rewards.format.options.patern: unknown option; allowed: fullmatch, pattern, strip"),
    (["rewards.format.options.pattern=("],
     "rewards.format.options.pattern: bad pattern '(': missing ), unterminated subpattern at position 0"),
    (["rewards.length.options.max_tokens=-1"],
     "rewards.length.options.max_tokens: Input should be greater than or equal to 0"),
    (["rewards.length.options.max_tokens='3'"],
     "rewards.length.options.max_tokens: Input should be a valid integer, got str '3'"),
    (["rewards.length.options={}"], "rewards.length.options: needs exactly one of target or max_tokens"),
    (["rewards.closeness.options={cap: 0, which: middle}"],
     "rewards.closeness.options.which: Input should be 'first' or 'last'; "
     "rewards.closeness.options.cap: Input should be greater than 0"),
    (["rewards.correct.kind=telepathy"], "rewards.correct.kind: unknown reward channel kind 'telepathy'; known: ["),
    (["rewards.format.kind=python", "rewards.format.options={callable: 'nope.mod:f'}"],
     "rewards.format.options.callable: callable 'nope.mod:f': cannot import 'nope.mod'"),
])
def test_bad_channel_options_name_the_field_path(overrides, message, tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "run")]
    for override in overrides:
        args += ["--set", override]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"mixgrpo: error: {message}") and len(error.splitlines()) == 1, error
    assert not ray.is_initialized()
    assert not (tmp_path / "run").exists()
