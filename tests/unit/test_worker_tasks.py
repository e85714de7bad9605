"""The @task decorator, the registry, argument mapping and spec building."""

from __future__ import annotations

import json
import types
from typing import Any

import pytest

from engine.lifecycle.records import JobSpec, RetryPolicy
from engine.worker import (
    BadArgumentsError,
    DuplicateTaskError,
    JobContext,
    Task,
    TaskLoadError,
    TaskRegistry,
    UnknownTaskError,
    task,
)
from engine.worker.tasks import bind_arguments, decode_args, encode_args, takes_context


@task
def plain(a: int, b: int = 2) -> int:
    return a + b


@task(name="renamed", queue="render", retries=2, timeout=1.5, retry_on=[ValueError, "timeout"])
def with_options(ctx: JobContext, frame: int) -> int:
    return frame


def test_bare_decorator_uses_function_name_and_defaults() -> None:
    assert isinstance(plain, Task)
    assert plain.name == "plain"
    assert plain.options.queue == "default"
    assert plain.options.retry == RetryPolicy()
    assert plain.options.timeout_ms == 0
    assert not plain.wants_context
    assert plain(1) == 3  # still callable directly
    assert plain.__doc__ == plain.fn.__doc__


def test_decorator_options_map_to_job_defaults() -> None:
    assert with_options.name == "renamed"
    assert with_options.options.queue == "render"
    assert with_options.options.retry.max_attempts == 3
    assert with_options.options.retry.retry_on == ("ValueError", "timeout")
    assert with_options.options.timeout_ms == 1500
    assert with_options.wants_context


@pytest.mark.parametrize("retries", [-1])
def test_negative_retries_rejected(retries: int) -> None:
    with pytest.raises(TaskLoadError, match="retries"):
        task(retries=retries)


class TestContextRule:
    def test_first_parameter_named_ctx(self) -> None:
        def f(ctx, x):  # type: ignore[no-untyped-def]
            return x

        assert takes_context(f)

    def test_first_parameter_annotated_job_context(self) -> None:
        def f(context: JobContext, x: int) -> int:
            return x

        assert takes_context(f)

    def test_string_annotation(self) -> None:
        def f(c: "JobContext") -> None:  # noqa: UP037 - the string form is what is tested
            return None

        assert takes_context(f)

    def test_ctx_elsewhere_or_keyword_only_does_not_count(self) -> None:
        def later(x: int, ctx: JobContext) -> int:
            return x

        def keyword(*, ctx: JobContext) -> None:
            return None

        def nothing() -> None:
            return None

        assert not takes_context(later)
        assert not takes_context(keyword)
        assert not takes_context(nothing)


class TestArguments:
    def test_round_trip(self) -> None:
        raw = encode_args([1, "two", [3]], {"four": {"x": 4.5}})
        assert json.loads(raw) == {"args": [1, "two", [3]], "kwargs": {"four": {"x": 4.5}}}
        assert decode_args(raw) == ([1, "two", [3]], {"four": {"x": 4.5}})

    @pytest.mark.parametrize("raw", ["", "{}", "  "])
    def test_empty_means_no_arguments(self, raw: str) -> None:
        assert decode_args(raw) == ([], {})

    def test_unencodable_argument(self) -> None:
        with pytest.raises(BadArgumentsError, match="JSON"):
            encode_args([object()], {})
        with pytest.raises(BadArgumentsError):
            encode_args([float("nan")], {})

    @pytest.mark.parametrize(
        ("raw", "match"),
        [
            ("not json", "not valid JSON"),
            ("[1, 2]", "JSON object"),
            ('{"args": {}}', "array"),
            ('{"kwargs": []}', "object"),
            ('{"args": [], "extra": 1}', "unknown fields"),
        ],
    )
    def test_malformed(self, raw: str, match: str) -> None:
        with pytest.raises(BadArgumentsError, match=match):
            decode_args(raw)

    def test_bind_puts_context_first(self) -> None:
        marker = object()
        args, kwargs = bind_arguments(with_options, marker, [7], {})
        assert args == (marker, 7)
        assert kwargs == {}
        args, kwargs = bind_arguments(plain, marker, [1], {"b": 5})
        assert args == (1,)
        assert kwargs == {"b": 5}

    @pytest.mark.parametrize(
        ("args", "kwargs"), [([], {}), ([1, 2, 3], {}), ([1], {"c": 1}), ([1], {"a": 1})]
    )
    def test_bind_rejects_what_does_not_fit(self, args: list[Any], kwargs: dict[str, Any]) -> None:
        with pytest.raises(BadArgumentsError, match="do not fit task 'plain'"):
            bind_arguments(plain, None, args, kwargs)


class TestSpec:
    def test_spec_carries_task_defaults_and_arguments(self) -> None:
        spec = with_options.spec("frame-12", 12)
        assert spec == JobSpec(
            job_id="frame-12",
            task="renamed",
            args='{"args":[12],"kwargs":{}}',
            queue="render",
            retry=with_options.options.retry,
            timeout_ms=1500,
        )

    def test_spec_keyword_arguments_are_task_arguments(self) -> None:
        spec = plain.spec("j", 1, b=4)
        assert decode_args(spec.args) == ([1], {"b": 4})

    def test_spec_with_overrides(self) -> None:
        spec = plain.spec_with(
            "j",
            args=[1],
            depends_on=["a", "b"],
            parent="p",
            queue="gpu",
            priority=5,
            idempotency_key="k",
            labels={"team": "x"},
        )
        assert spec.depends_on == ("a", "b")
        assert spec.parent == "p"
        assert spec.queue == "gpu"
        assert spec.priority == 5
        assert spec.idempotency_key == "k"
        assert spec.labels == (("team", "x"),)


class TestRegistry:
    def test_register_get_and_unknown(self) -> None:
        registry = TaskRegistry([plain, with_options])
        assert registry.get("plain") is plain
        assert registry.names() == ["plain", "renamed"]
        assert "renamed" in registry
        assert len(registry) == 2
        registry.register(plain)  # the same task again is harmless
        with pytest.raises(UnknownTaskError, match=r"no task named 'nope'.*plain, renamed"):
            registry.get("nope")

    def test_duplicate_name_of_another_function(self) -> None:
        @task(name="plain")
        def impostor() -> None:
            return None

        registry = TaskRegistry([plain])
        with pytest.raises(DuplicateTaskError, match="plain"):
            registry.register(impostor)

    def test_load_module_finds_top_level_tasks(self) -> None:
        registry = TaskRegistry.from_modules(["tests.integration.sample_tasks"])
        assert {"add", "count", "hold", "boom", "shell"} <= set(registry.names())

    def test_load_module_object(self) -> None:
        module = types.ModuleType("generated")
        module.first = task(name="first")(lambda: 1)  # type: ignore[attr-defined]
        module.not_a_task = 3  # type: ignore[attr-defined]
        assert [t.name for t in TaskRegistry().load_module(module)] == ["first"]

    def test_missing_module(self) -> None:
        with pytest.raises(TaskLoadError, match="cannot import task module 'no_such_mod'"):
            TaskRegistry.from_modules(["no_such_mod"])

    def test_module_without_tasks(self) -> None:
        with pytest.raises(TaskLoadError, match="defines no task"):
            TaskRegistry.from_modules(["json"])
