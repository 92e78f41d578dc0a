"""`mixgrpo config`: the reference walks every config field and channel option; the README holds its output."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from mixgrpo.config import Config
from mixgrpo.orchestrator.cli import main
from mixgrpo.orchestrator.commands.config import (
    END,
    START,
    markdown,
    readme_section,
    reference,
    walk,
    write_readme,
)
from mixgrpo.rewards.channels import all_kinds

README = Path(__file__).parent.parent / "README.md"


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every scalar field's dotted path, found independently of the command's walker."""
    paths = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        item = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths |= _leaf_paths(annotation, f"{prefix}{name}.")
        elif isinstance(item, type) and issubclass(item, BaseModel):
            paths |= _leaf_paths(item, f"{prefix}{name}.<name>.")
        else:
            paths.add(f"{prefix}{name}")
    return paths


def test_readme_reference_is_the_generated_markdown(capsys):
    """Fails when a field, type, default or docstring changed without `make config-docs`."""
    assert main(["config", "--markdown"]) == 0
    generated = capsys.readouterr().out
    assert readme_section(README.read_text()) == generated, "README config reference is stale: run make config-docs"


def test_every_field_and_channel_option_is_listed_with_a_docstring():
    groups = reference()
    rows = {row.path: row for group in groups for row in group.fields}
    expected = _leaf_paths(Config) | {f"rewards.<name>.options.{field}" for kind in all_kinds()
                                      for field in kind.options.model_fields}
    assert expected <= set(rows)
    for path in ["run.output_uri", "run.max_all_null_steps", "learner.max_restarts", "algorithm.async_steps",
                 "algorithm.loss.eps_high", "learner.lora.rank", "rewards.<name>.replicas"]:
        assert path in rows
    undocumented = sorted(path for path, row in rows.items() if not row.doc)
    assert not undocumented, f"fields without a one-line docstring: {undocumented}"
    titles = [group.title for group in groups]
    for kind in ["regex", "length", "numeric_match", "python", "clipscore", "http"]:
        assert f"`rewards.<name>.options` for `kind: {kind}`" in titles


def test_types_defaults_and_constraints_are_rendered():
    rows = {row.path: row for row in walk(Config)}
    assert (rows["run.steps"].type, rows["run.steps"].default) == ("int, >= 1", "40")
    assert (rows["run.out_dir"].type, rows["run.out_dir"].default) == ("str | null", "null")
    assert rows["learner.lora.dropout"].type == "float, >= 0, < 1"
    assert rows["learner.lora.target_modules"].default == '["q_proj", "k_proj", "v_proj", "o_proj"]'
    assert rows["rewards.<name>.kind"].default == "required"
    assert rows["algorithm.loss"].type == "section"
    options = {row.path: row for row in walk(next(k for k in all_kinds() if k.name == "regex").options)}
    assert options["pattern"].default == "required" and options["pattern"].type == "str, min length 1"
    assert options["fullmatch"].default == "true"
    numeric = {row.path: row for row in walk(next(k for k in all_kinds() if k.name == "numeric_distance").options)}
    assert (numeric["which"].type, numeric["which"].default) == ('"first" | "last"', '"first"')
    assert (numeric["cap"].type, numeric["cap"].default) == ("float | null, > 0", "null")


def test_text_output_names_every_section(capsys):
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    for section in Config.model_fields:
        assert f"\n{section}: " in f"\n{out}"
    assert "  run.steps  (int, >= 1) = 40\n      Number of GRPO steps" in out
    assert "rewards.<name>.options for kind: regex: 1.0 when the completion matches" in out


def test_markdown_escapes_what_would_break_a_table():
    table = markdown(reference())
    assert "| `run.out_dir` | `str \\| null` | `null` |" in table
    assert "runs/&lt;date-time>" in table  # not swallowed as an HTML tag


def test_write_readme_replaces_only_the_marked_section(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    assert main(["config", "--write-readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert readme_section(text) == markdown(reference())
    assert not write_readme(readme, markdown(reference()))  # second run: nothing to change
    readme.write_text("no markers\n")
    assert main(["config", "--write-readme", str(readme)]) == 2
    assert "no <!-- config-reference:start -->" in capsys.readouterr().err


def test_help(capsys):
    with pytest.raises(SystemExit):
        main(["config", "--help"])
    assert "--markdown" in capsys.readouterr().out
