"""Tests of the built-in reward channels and the python-callable channel, against hand-computed values."""

import sys

import pytest

from mixgrpo.rewards.channels import ChannelOptionsError, ScoringInput, build_channel, known_kinds, register
from mixgrpo.rewards.channels.base import ItemError
from mixgrpo.rewards.channels.math import last_number
from mixgrpo.rewards.channels.python import import_callable
from mixgrpo.rewards.channels.rules import RegexOptions

USER_MODULE = "mixgrpo_test_user_rewards"
USER_SOURCE = '''
calls = []

def per_sample(prompt, completion, metadata, bonus=0.0):
    """Length of the completion plus bonus; null for an empty completion."""
    calls.append((prompt, completion, metadata))
    return float(len(completion)) + bonus if completion else None

def batched(prompts, completions, metadata, scale=1.0):
    return [scale * int(md["answer"]) + len(p) for p, md in zip(prompts, metadata)]

class Holder:
    @staticmethod
    def inner(prompt, completion, metadata):
        return 0.5

NOT_CALLABLE = 3
'''


def batch(completions, tokens=None, metadata=None, prompts=None):
    n = len(completions)
    return ScoringInput(
        prompts=prompts if prompts is not None else ["1+2="] * n,
        completions=list(completions),
        metadata=metadata if metadata is not None else [{"answer": "7"}] * n,
        completion_tokens=tokens if tokens is not None else [1] * n,
    )


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / f"{USER_MODULE}.py").write_text(USER_SOURCE)
    (tmp_path / "mixgrpo_test_broken_syntax.py").write_text("def f(:\n")
    (tmp_path / "mixgrpo_test_raises_on_import.py").write_text("raise RuntimeError('import-time failure')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in (USER_MODULE, "mixgrpo_test_broken_syntax", "mixgrpo_test_raises_on_import"):
        sys.modules.pop(name, None)


def test_builtin_kinds_are_registered():
    assert {"regex", "length", "exact_match", "numeric_match", "numeric_distance", "python"} <= set(known_kinds())


def test_regex_fullmatch_after_strip_by_default():
    channel = build_channel("regex", {"pattern": r"-?\d+"})
    assert channel(batch(["7", " 12 \n", "it is 7", "-3", "", "7 8"])) == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_regex_search_and_no_strip():
    search = build_channel("regex", {"pattern": r"\d+", "fullmatch": False})
    assert search(batch(["it is 7", "none", "x9"])) == [1.0, 0.0, 1.0]
    raw = build_channel("regex", {"pattern": r"\d+", "strip": False})
    assert raw(batch([" 12 ", "12"])) == [0.0, 1.0]


def test_regex_bad_or_missing_pattern():
    with pytest.raises(ChannelOptionsError, match="^options.pattern: Field required$"):
        build_channel("regex", {})
    with pytest.raises(ChannelOptionsError, match="^options.pattern: bad pattern '\\(unclosed'"):
        build_channel("regex", {"pattern": "(unclosed"})


def test_length_penalty_mode():
    channel = build_channel("length", {"max_tokens": 3})
    assert channel(batch(["a"] * 5, tokens=[0, 1, 3, 4, 10])) == [0.0, 0.0, 0.0, -1.0, -7.0]
    scaled = build_channel("length", {"max_tokens": 3, "scale": 2})
    assert scaled(batch(["a"] * 3, tokens=[3, 4, 10])) == [0.0, -0.5, -3.5]


def test_length_target_mode():
    channel = build_channel("length", {"target": 5})
    assert channel(batch(["a"] * 4, tokens=[1, 3, 5, 10])) == [-4.0, -2.0, 0.0, -5.0]
    scaled = build_channel("length", {"target": 5, "scale": 4})
    assert scaled(batch(["a"] * 2, tokens=[1, 7])) == [-1.0, -0.5]


def test_length_option_errors():
    with pytest.raises(ChannelOptionsError, match="^options: needs exactly one of target or max_tokens$"):
        build_channel("length", {})
    with pytest.raises(ChannelOptionsError, match="^options: needs exactly one of target or max_tokens$"):
        build_channel("length", {"target": 2, "max_tokens": 3})
    with pytest.raises(ChannelOptionsError, match="^options.scale: Input should be greater than 0$"):
        build_channel("length", {"target": 2, "scale": 0})


def test_exact_match():
    channel = build_channel("exact_match", {})
    metadata = [{"answer": " Paris "}] * 4
    assert channel(batch(["paris", "  PARIS\n", "Paris!", "Lyon"], metadata=metadata)) == [1.0, 1.0, 0.0, 0.0]
    strict = build_channel("exact_match", {"case_sensitive": True, "answer_key": "city"})
    assert strict(batch(["paris", "Paris "], metadata=[{"city": "Paris"}] * 2)) == [0.0, 1.0]
    # a non-string gold answer is compared as text
    assert channel(batch(["12", "12.0"], metadata=[{"answer": 12}] * 2)) == [1.0, 0.0]


def test_exact_match_missing_gold_column_is_a_key_error_of_each_completion():
    channel = build_channel("exact_match", {"answer_key": "city"})
    [outcome] = channel(batch(["x"]))  # PerSample: the worker nulls it, counted item_errors
    assert isinstance(outcome, ItemError) and isinstance(outcome.error, KeyError)
    assert "no 'city' column" in str(outcome.error)


def test_last_number():
    assert last_number("1 then 2 then 3.5") == 3.5
    assert last_number("total 1,234") == 1234.0
    assert last_number("minus -4") == -4.0
    assert last_number("none") is None


def test_numeric_match_first_and_last():
    first = build_channel("numeric_match", {})
    texts = ["7", "it is 7", "7 or 8", "8 or 7", "no", "-7", "17"]
    assert first(batch(texts)) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    last = build_channel("numeric_match", {"which": "last"})
    assert last(batch(texts)) == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_numeric_match_tolerance_and_formats():
    channel = build_channel("numeric_match", {})
    metadata = [{"answer": "1234"}] * 3
    assert channel(batch(["1,234", "1234.0000001", "1234.01"], metadata=metadata)) == [1.0, 1.0, 0.0]
    loose = build_channel("numeric_match", {"tolerance": 0.1, "answer_key": "gold"})
    assert loose(batch(["1234.01", "1234.2"], metadata=[{"gold": 1234}] * 2)) == [1.0, 0.0]
    with pytest.raises(ChannelOptionsError, match="^options.which: Input should be 'first' or 'last'$"):
        build_channel("numeric_match", {"which": "middle"})


def test_numeric_distance_values_and_null_without_number():
    channel = build_channel("numeric_distance", {})
    values = channel(batch(["9", "it is 4", "7", "none", "", "7 or 10"]))
    assert values == [-2.0, -3.0, 0.0, None, None, 0.0]
    last = build_channel("numeric_distance", {"which": "last", "scale": 2})
    assert last(batch(["7 or 10", "x", "3.5"])) == [-1.5, None, -1.75]


def test_numeric_distance_option_values_checked():
    with pytest.raises(ChannelOptionsError, match="^options.which: Input should be 'first' or 'last'$"):
        build_channel("numeric_distance", {"which": "middle"})
    with pytest.raises(ChannelOptionsError, match="^options.scale: Input should be greater than 0$"):
        build_channel("numeric_distance", {"scale": 0})
    with pytest.raises(ChannelOptionsError, match="^options.cap: Input should be greater than 0$"):
        build_channel("numeric_distance", {"cap": -1})


def test_unknown_kind_names_it_and_the_known_kinds():
    with pytest.raises(ChannelOptionsError) as raised:
        build_channel("clipscorez", {})
    message = str(raised.value)
    assert message.startswith("kind: unknown reward channel kind 'clipscorez'")
    assert "'numeric_match'" in message and "'regex'" in message


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("regex", {"pattern": "x", "patern": "y"},
         "options.patern: unknown option; allowed: fullmatch, pattern, strip"),
        ("length", {"max_tokens": 3, "maxtokens": 3, "zzz": 1},
         "options.maxtokens: unknown option; allowed: max_tokens, scale, target; "
         "options.zzz: unknown option; allowed: max_tokens, scale, target"),
        ("exact_match", {"answer": "a"}, "options.answer: unknown option; allowed: answer_key, case_sensitive"),
        ("numeric_match", {"tol": 1}, "options.tol: unknown option; allowed: answer_key, tolerance, which"),
        ("numeric_distance", {"scaling": 2}, "options.scaling: unknown option; allowed: answer_key, cap, scale, which"),
        ("python", {"callable": "os:getcwd", "batch": True},
         "options.batch: unknown option; allowed: batched, callable, kwargs"),
    ],
)
def test_unknown_options_are_named_with_the_allowed_ones(kind, options, message):
    with pytest.raises(ChannelOptionsError) as raised:
        build_channel(kind, options)
    assert str(raised.value) == message


def test_option_types_are_strict_and_say_what_was_given():
    with pytest.raises(ChannelOptionsError) as raised:
        build_channel("length", {"max_tokens": "3"})
    assert str(raised.value) == "options.max_tokens: Input should be a valid integer, got str '3'"
    with pytest.raises(ChannelOptionsError, match="^options.fullmatch: Input should be a valid boolean"):
        build_channel("regex", {"pattern": "x", "fullmatch": "yes"})
    build_channel("length", {"max_tokens": 3, "scale": 2})  # an int is a valid float


def test_a_registered_kind_gets_its_options_typed():
    from pydantic import Field

    from mixgrpo.rewards.channels import CHANNEL_KINDS, ChannelOptions

    class CapOptions(ChannelOptions):
        cap: float = Field(default=1.0, gt=0)
        """Largest value."""

    received = []

    @register("test_cap", CapOptions)
    def cap_channel(options):
        received.append(options)
        return lambda batch: [min(n, options.cap) for n in batch.completion_tokens]

    try:
        assert build_channel("test_cap", {"cap": 2})(batch(["a"] * 2, tokens=[1, 5])) == [1, 2.0]
        assert received == [CapOptions(cap=2.0)] and isinstance(received[0].cap, float)
        assert "test_cap" in known_kinds()
        with pytest.raises(ChannelOptionsError, match="^options.cap: Input should be greater than 0$"):
            build_channel("test_cap", {"cap": 0})
    finally:
        CHANNEL_KINDS.pop("test_cap")


def test_register_twice_rejected():
    with pytest.raises(ValueError, match="channel kind 'regex' registered twice"):  # a built-in name, imported or not
        register("regex", RegexOptions)(lambda options: None)
    with pytest.raises(ValueError, match="channel kind 'length' registered twice"):
        register("length", RegexOptions)(lambda options: None)


def test_build_channel_does_not_mutate_options():
    options = {"max_tokens": 3}
    build_channel("length", options)
    assert options == {"max_tokens": 3}


def test_python_per_sample_with_kwargs(user_module):
    channel = build_channel("python", {"callable": f"{USER_MODULE}:per_sample", "kwargs": {"bonus": 0.5}})
    metadata = [{"answer": "3"}, {"answer": "4"}, {"answer": "5"}]
    values = channel(batch(["ab", "", "abcd"], metadata=metadata, prompts=["p0", "p1", "p2"]))
    assert values == [2.5, None, 4.5]
    module = sys.modules[USER_MODULE]
    assert module.calls == [("p0", "ab", {"answer": "3"}), ("p1", "", {"answer": "4"}), ("p2", "abcd", {"answer": "5"})]
    plain = build_channel("python", {"callable": f"{USER_MODULE}:per_sample"})
    assert plain(batch(["abc"])) == [3.0]


def test_python_batched_with_kwargs(user_module):
    channel = build_channel("python", {"callable": f"{USER_MODULE}:batched", "batched": True, "kwargs": {"scale": 10}})
    metadata = [{"answer": "1"}, {"answer": "2"}]
    assert channel(batch(["x", "y"], metadata=metadata, prompts=["abc", "de"])) == [13.0, 22.0]
    unscaled = build_channel("python", {"callable": f"{USER_MODULE}:batched", "batched": True})
    assert unscaled(batch(["x"], metadata=[{"answer": "4"}], prompts=[""])) == [4.0]


def test_python_nested_attribute(user_module):
    channel = build_channel("python", {"callable": f"{USER_MODULE}:Holder.inner"})
    assert channel(batch(["a", "b"])) == [0.5, 0.5]


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("mixgrpo_no_such_module_xyz:f", "cannot import 'mixgrpo_no_such_module_xyz'"),
        (f"{USER_MODULE}:missing", f"{USER_MODULE!r} has no attribute 'missing'"),
        (f"{USER_MODULE}:Holder.missing", f"{USER_MODULE!r} has no attribute 'Holder.missing'"),
        (f"{USER_MODULE}:NOT_CALLABLE", "is not callable"),
        (USER_MODULE, "is not of the form package.module:function"),
        (":per_sample", "is not of the form package.module:function"),
        (f"{USER_MODULE}:", "is not of the form package.module:function"),
        ("mixgrpo_test_broken_syntax:f", "cannot import 'mixgrpo_test_broken_syntax'"),
        ("mixgrpo_test_raises_on_import:f", "cannot import 'mixgrpo_test_raises_on_import' (import-time failure)"),
    ],
)
def test_python_callable_errors_name_the_spec(user_module, spec, fragment):
    with pytest.raises(ValueError) as raised:
        import_callable(spec)
    assert f"callable {spec!r}" in str(raised.value)
    assert fragment in str(raised.value)
    with pytest.raises(ChannelOptionsError) as raised:
        build_channel("python", {"callable": spec})
    assert str(raised.value).startswith(f"options.callable: callable {spec!r}")


def test_python_needs_a_callable():
    with pytest.raises(ChannelOptionsError, match="^options.callable: Field required$"):
        build_channel("python", {})
    with pytest.raises(ChannelOptionsError, match="^options.callable: String should have at least 1 character$"):
        build_channel("python", {"callable": ""})


def test_python_kwargs_are_free_form(user_module):
    options = {"callable": f"{USER_MODULE}:per_sample", "kwargs": {"bonus": 1, "anything": {"nested": [1]}}}
    with pytest.raises(TypeError):  # per_sample has no parameter 'anything': the function decides, not the schema
        build_channel("python", options).score_one("p", "ab", {}, 1)
