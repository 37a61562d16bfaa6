"""Workflow plans, pure: DAG validation and ``{{stages.<name>.output}}`` templates.

No I/O. The API validates a plan with :func:`validate`; the advancing worker renders a stage's
task with :func:`render` when it starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

# {{stages.<name>.output}}, spaces allowed inside the braces.
TEMPLATE = re.compile(r"\{\{\s*stages\.([A-Za-z0-9_-]+)\.output\s*\}\}")
# Anything else that looks like a template is an error, not text to pass through silently.
ANY_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")


def references(task: str) -> list[str]:
    """Stage names a task template refers to, in order of first appearance."""
    seen: dict[str, None] = {}
    for m in TEMPLATE.finditer(task):
        seen.setdefault(m.group(1))
    return list(seen)


def ancestors(deps: Mapping[str, Sequence[str]], name: str) -> set[str]:
    out: set[str] = set()
    stack = list(deps.get(name, ()))
    while stack:
        d = stack.pop()
        if d not in out:
            out.add(d)
            stack.extend(deps.get(d, ()))
    return out


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, …, a]`` (edges from a stage to what it depends on), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for d in deps.get(node, ()):
            if state.get(d) == 1:
                return [*path[path.index(d):], d]
            if d in deps and state.get(d) is None and (cycle := visit(d)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in deps:
        if state.get(node) is None and (cycle := visit(node)):
            return cycle
    return None


def validate(stages: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Field errors keyed like marshmallow's (``stages.<name>.depends_on``); empty when valid.

    Names are unique; ``depends_on`` names existing stages, not itself, and the edges form no
    cycle; a template may refer only to stages the stage depends on (directly or transitively),
    whose output exists by the time it starts.
    """
    errors: dict[str, list[str]] = {}
    names = [s["name"] for s in stages]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        errors["stages"] = [f"Duplicate stage name(s): {', '.join(dupes)}"]
    deps = {s["name"]: list(s.get("depends_on") or []) for s in stages}
    for s in stages:
        key = f"stages.{s['name']}"
        unknown = [d for d in deps[s["name"]] if d not in deps]
        if unknown:
            errors.setdefault(f"{key}.depends_on", []).append(f"Unknown stage(s): {', '.join(unknown)}")
        if s["name"] in deps[s["name"]]:
            errors.setdefault(f"{key}.depends_on", []).append("A stage cannot depend on itself")
    if not errors:
        cycle = find_cycle(deps)
        if cycle:
            errors["stages"] = [f"depends_on forms a cycle: {' -> '.join(cycle)}"]
    if errors:
        return errors
    for s in stages:
        key = f"stages.{s['name']}.task"
        bad = [m.group(0) for m in ANY_TEMPLATE.finditer(s["task"]) if not TEMPLATE.fullmatch(m.group(0))]
        if bad:
            errors.setdefault(key, []).append(
                f"Unsupported template(s) {', '.join(bad)}; use {{{{stages.<name>.output}}}}")
        upstream = ancestors(deps, s["name"])
        for ref in references(s["task"]):
            if ref not in deps:
                errors.setdefault(key, []).append(f"Template refers to unknown stage {ref!r}")
            elif ref not in upstream:
                errors.setdefault(key, []).append(
                    f"Template refers to stage {ref!r}, which this stage does not depend on")
    return errors


def render(task: str, outputs: Mapping[str, str | None]) -> str:
    """Substitute each ``{{stages.<name>.output}}`` with that stage's final output text."""
    return TEMPLATE.sub(lambda m: outputs.get(m.group(1)) or "", task)


def topological(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Stage names in a dependency-respecting order (ties keep the request's order)."""
    deps = {s["name"]: list(s.get("depends_on") or []) for s in stages}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        progressed = False
        for name, ds in deps.items():
            if name not in done and all(d in done for d in ds):
                order.append(name)
                done.add(name)
                progressed = True
        if not progressed:
            raise ValueError("cycle")
    return order
