"""The pure workflow plan: DAG validation and templates."""

from __future__ import annotations

from shared.workflow_plan import find_cycle, references, render, topological, validate


def st(name: str, task: str = "t", deps: list[str] | None = None) -> dict:
    return {"name": name, "task": task, "depends_on": deps or []}


def test_valid_diamond_and_order() -> None:
    stages = [st("d", "{{stages.a.output}} {{ stages.b.output }}", ["b", "c"]), st("b", deps=["a"]),
              st("c", deps=["a"]), st("a")]
    assert validate(stages) == {}
    order = topological(stages)
    assert order.index("a") < order.index("b") < order.index("d") and order.index("c") < order.index("d")


def test_cycles_are_named() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) in (["a", "b", "c", "a"], ["b", "c", "a", "b"],
                                                                 ["c", "a", "b", "c"])
    assert find_cycle({"a": ["b"], "b": []}) is None
    errors = validate([st("x"), st("a", deps=["b"]), st("b", deps=["a"])])
    assert errors == {"stages": ["depends_on forms a cycle: a -> b -> a"]}


def test_unknown_duplicate_self_and_templates() -> None:
    assert "stages.a.depends_on" in validate([st("a", deps=["nope"])])
    assert validate([st("a", deps=["a"])])["stages.a.depends_on"] == ["A stage cannot depend on itself"]
    assert validate([st("a"), st("a")])["stages"] == ["Duplicate stage name(s): a"]
    errors = validate([st("a"), st("b", "{{stages.a.output}} {{stages.c.output}} {{x}}"), st("c")])
    assert len(errors["stages.b.task"]) == 3


def test_render_and_references() -> None:
    task = "A={{stages.a.output}} B={{ stages.b.output }} again {{stages.a.output}}"
    assert references(task) == ["a", "b"]
    assert render(task, {"a": "1", "b": None}) == "A=1 B= again 1"
