"""Tests of mixgrpo.config: loading, freezing, field docs, error paths, overrides, dumping."""

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from mixgrpo.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    default_config_path,
    dump_config,
    load_config,
)


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every config model reachable from ``model`` (fields whose annotation is, or lists, a model)."""
    found = [(prefix or "<root>", model)]
    for name, field in model.model_fields.items():
        candidates = [field.annotation, *getattr(field.annotation, "__args__", ())]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found.extend(_sections(candidate, f"{prefix}{name}."))
    return found


def test_default_config_is_the_packaged_local_tiny_yaml():
    config = load_config()
    assert default_config_path().name == "local-tiny.yaml"
    assert default_config_path().is_file()
    assert config.run.name == "local-tiny"
    assert config.run.steps == 150
    assert config.task.prompts_per_step == 32
    assert config.generator.group_size == 8
    assert config.learner.lr == 0.003
    assert config.channel_names == ["correct", "format", "length", "closeness"]
    assert config.channel_weights == [1.0, 0.5, 0.25, 0.25]
    assert config.rewards[1].options == {"pattern": r"-?\d+"}
    assert config.rewards[2].options == {"max_tokens": 3}
    assert config.rewards[0].weak_threshold == 0.5
    # defaults of fields the YAML does not set
    assert config.learner.weight_decay == 0.0
    assert config.algorithm.loss.eps_high == 0.28


def test_config_is_frozen_at_every_level():
    config = load_config()
    with pytest.raises(ValidationError):
        config.learner.lr = 1.0
    with pytest.raises(ValidationError):
        config.learner.lora.rank = 2
    with pytest.raises(ValidationError):
        config.rewards[0].weight = 3.0
    with pytest.raises(ValidationError):
        config.run = config.run
    assert config.learner.lr == 0.003


def test_every_field_of_every_section_has_a_docstring():
    sections = _sections(Config)
    names = {name for name, _ in sections}
    # the walk really reaches the nested and list-item sections
    assert {"<root>", "learner.", "learner.lora.", "rewards.", "algorithm.loss.", "cluster."} <= names
    missing = [
        f"{prefix}{field_name}"
        for prefix, model in sections
        for field_name, field in model.model_fields.items()
        if not (field.description and field.description.strip())
    ]
    assert missing == []
    assert Config.model_fields["learner"].description == "Policy optimisation."


@pytest.mark.parametrize(
    "override, path",
    [
        ("learner.lrr=1", "learner.lrr"),
        ("learner.lora.rnk=2", "learner.lora.rnk"),
        ("rewards.0.wieght=2", "rewards.0.wieght"),
        ("rewards.closeness.wieght=2", "rewards.3.wieght"),
        ("nonsense.key=1", "nonsense"),
    ],
)
def test_unknown_key_error_names_the_dotted_path(override, path):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    assert f"config error at {path}: unknown key" in str(raised.value)


@pytest.mark.parametrize(
    "override, path",
    [
        ("learner.lr=abc", "learner.lr"),
        ("generator.group_size=many", "generator.group_size"),
        ("learner.lora.rank=[1,2]", "learner.lora.rank"),
        ("rewards.format.timeout_s=soon", "rewards.1.timeout_s"),
        ("model.dtype=float8", "model.dtype"),
        ("run.tensorboard=maybe", "run.tensorboard"),
        ("learner.lr=-1", "learner.lr"),
    ],
)
def test_wrong_type_or_value_names_the_path(override, path):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    assert str(raised.value).startswith(f"config error at {path}: ")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_overrides_parse_yaml_values():
    config = load_config(
        None,
        [
            "learner.lr=2e-5",
            "learner.lora.target_modules=[a,b]",
            "run.tensorboard=false",
            "generator.max_new_tokens=4",
            "run.out_dir=null",
            "run.name=my run",
        ],
    )
    assert config.learner.lr == 2e-5
    assert type(config.learner.lr) is float
    assert config.learner.lora.target_modules == ["a", "b"]
    assert config.run.tensorboard is False
    assert config.generator.max_new_tokens == 4
    assert config.run.out_dir is None
    assert config.run.name == "my run"


def test_apply_overrides_on_raw_dict():
    data = {"learner": {"lr": 1.0}, "rewards": [{"name": "a", "kind": "regex"}, {"name": "b", "kind": "length"}]}
    out = apply_overrides(
        data, ["learner.lora.rank=4", "rewards.b.weight=2", "rewards.0.options={pattern: x}", "learner.lr=0.5"]
    )
    assert out is data
    assert data == {
        "learner": {"lr": 0.5, "lora": {"rank": 4}},
        "rewards": [
            {"name": "a", "kind": "regex", "options": {"pattern": "x"}},
            {"name": "b", "kind": "length", "weight": 2},
        ],
    }
    assert apply_overrides({"run": {}}, ["run.name="]) == {"run": {"name": ""}}
    assert apply_overrides({}, ["run.note=a=b"]) == {"run": {"note": "a=b"}}


def test_overrides_address_list_items_by_index_and_by_name():
    config = load_config(None, ["rewards.correct.weight=2", "rewards.2.options.max_tokens=5"])
    assert config.rewards[0].weight == 2.0
    assert config.rewards[2].options == {"max_tokens": 5}
    assert config.channel_weights == [2.0, 0.5, 0.25, 0.25]
    # overrides are applied in order: the later one wins
    assert load_config(None, ["learner.lr=1", "learner.lr=2"]).learner.lr == 2.0


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("no_equals", "'no_equals' is not of the form dotted.key=value"),
        ("=3", "'=3' has an empty key"),
        ("rewards.nope.weight=2", "override rewards.nope: no item named 'nope'"),
        ("rewards.4.weight=2", "override rewards.4: index 4 out of range (4 items)"),
        ("learner.lr.x=1", "override learner.lr.x: learner.lr is not a section"),
    ],
)
def test_bad_override_forms_raise_config_error(override, fragment):
    with pytest.raises(ConfigError) as raised:
        load_config(None, [override])
    assert fragment in str(raised.value)


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run:\n  name: [unclosed\n  steps: 3\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"malformed YAML in {path}: ")
    assert "\n" not in str(raised.value)


def test_missing_file_and_non_mapping_top_level(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as raised:
        load_config(listing)
    assert str(raised.value) == f"{listing}: top level must be a mapping of sections"


def test_empty_yaml_says_the_file_is_empty(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError) as raised:
        load_config(empty)
    assert str(raised.value) == (f"config file {empty} is empty "
                                 "(config error at rewards: at least one reward channel is required)")
    one = load_config(empty, ["rewards=[{name: a, kind: regex}]"])
    assert one.channel_names == ["a"]
    assert one.run.steps == 40  # RunConfig default


def test_algorithm_weights_must_match_channels():
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["algorithm.weights=[1,2]"])
    assert "algorithm.weights has 2 values for 4 reward channels" in str(raised.value)
    with pytest.raises(ConfigError, match="must be non-negative and not all zero"):
        load_config(None, ["algorithm.weights=[0,0,0,0]"])
    config = load_config(None, ["algorithm.weights=[1,0,0,3]"])
    assert config.channel_weights == [1.0, 0.0, 0.0, 3.0]
    assert [c.weight for c in config.rewards] == [1.0, 0.5, 0.25, 0.25]


def test_duplicate_channel_names_rejected():
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["rewards.1.name=correct"])
    assert str(raised.value) == "config error at rewards: duplicate channel names: ['correct']"


def test_all_zero_channel_weights_rejected():
    zeros = [f"rewards.{name}.weight=0" for name in ("correct", "format", "length", "closeness")]
    with pytest.raises(ConfigError) as raised:
        load_config(None, zeros)
    assert str(raised.value) == "config error at rewards: channel weights must not all be zero"
    assert load_config(None, zeros[:3]).channel_weights == [0.0, 0.0, 0.0, 0.25]


def test_group_size_one_needs_batch_scope():
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["generator.group_size=1"])
    assert "generator.group_size=1" in str(raised.value) and "algorithm.scope=batch" in str(raised.value)
    assert load_config(None, ["generator.group_size=1", "algorithm.scope=batch"]).generator.group_size == 1
    with pytest.raises(ConfigError, match="greater than or equal to 1"):
        load_config(None, ["generator.group_size=0"])


def test_file_task_needs_path():
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["task.kind=file"])
    assert str(raised.value) == "config error at task: task.kind=file needs task.path"
    assert load_config(None, ["task.kind=file", "task.path=p.jsonl"]).task.path == "p.jsonl"


def test_several_errors_are_reported_together():
    with pytest.raises(ConfigError) as raised:
        load_config(None, ["learner.lrr=1", "run.steps=0"])
    message = str(raised.value)
    assert "config error at learner.lrr: unknown key" in message
    assert "config error at run.steps: " in message


def test_dump_config_round_trips(tmp_path):
    config = load_config(
        None, ["algorithm.weights=[1,2,3,4]", "learner.lora.target_modules=[q_proj]", "rewards.length.timeout_s=5"]
    )
    text = dump_config(config)
    assert yaml.safe_load(text)["learner"]["lr"] == 0.003
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again = load_config(path)
    assert again == config
    assert dump_config(again) == text
    assert config_from_dict(yaml.safe_load(text)) == config


def test_dump_of_default_round_trips(tmp_path):
    config = load_config()
    path = tmp_path / "default.yaml"
    path.write_text(dump_config(config))
    assert load_config(Path(path)) == config
