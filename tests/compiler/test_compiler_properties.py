"""Properties: determinism byte for byte, totality over any Unicode, purity of the package."""

from __future__ import annotations

import ast
import contextlib
import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import Compiled, CompileError, compile_intent, default_guardrails, evaluate_plan, validate_guardrails

NOTIFY = {"type": "notification"}
WORDS = [
    "alert",
    "me",
    "when",
    "AAPL",
    "price",
    "volume",
    "error rate",
    "latency",
    "heartbeat",
    "signups",
    "rises",
    "drops",
    "falls",
    "below",
    "above",
    "over",
    "more than",
    "significantly",
    "slightly",
    "a bit",
    "unusual",
    "stops",
    "goes silent",
    "within",
    "in",
    "for",
    "4 hours",
    "1h",
    "15m",
    "a day",
    "5%",
    "150",
    "$1,000",
    "3 sigma",
    "z-score",
    "or more",
    "daily",
    "-7",
    "0.5",
    "%",
    "by",
    "the",
    "past",
    "week",
    "changes",
]
intents = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join),
)
constraints = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "sensitivity": st.sampled_from(["low", "medium", "high"]),
            "namespace": st.sampled_from(["crypto", "fx", "infra", "unknown", ""]),
        },
    ),
)


def canonical(intent: str, entity: str, cons: dict | None) -> str:
    try:
        return json.dumps(compile_intent(intent, entity, NOTIFY, cons).to_dict(), sort_keys=True, allow_nan=False)
    except CompileError as exc:
        return json.dumps({"error": exc.to_dict()}, sort_keys=True, allow_nan=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(intent=intents, entity=st.text(max_size=20), cons=constraints)
def test_same_intent_twice_gives_identical_bytes(intent, entity, cons):
    assert canonical(intent, entity, cons) == canonical(intent, entity, cons)


@settings(max_examples=500, deadline=None)
@given(intent=intents, entity=st.text(max_size=20))
def test_any_unicode_intent_compiles_or_raises_compile_error(intent, entity):
    try:
        result = compile_intent(intent, entity, NOTIFY)
    except CompileError as exc:
        assert exc.code in {"no_primitive", "no_valid_strategy", "action_binding_failed"}
        assert exc.message
        return
    assert isinstance(result, Compiled) and result.validation["valid"]
    json.dumps(result.to_dict(), allow_nan=False)
    evaluate_plan(result.condition["plan"], [(0.0, 1.0), (60.0, 2.0)], 120.0)


@settings(max_examples=100, deadline=None)
@given(intent=st.lists(st.sampled_from(WORDS), max_size=12).map(" ".join))
def test_output_does_not_depend_on_earlier_calls(intent):
    first = canonical(intent, "AAPL", None)
    for other in ("price rises 5%", "heartbeat stops", "volume unusual"):
        canonical(other, "X", {"namespace": "crypto"})
    assert canonical(intent, "AAPL", None) == first


@settings(max_examples=200, deadline=None)
@given(
    path=st.sampled_from(["version", "severity", "priors", "ranges", "agent", "metrics", "plan", "bias_rules"]),
    value=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ),
)
def test_validate_guardrails_never_raises(path, value):
    doc = default_guardrails()
    doc[path] = value
    assert isinstance(validate_guardrails(doc), list)


NESTED = [
    ("severity", "levels"),
    ("severity", "vocabulary"),
    ("priors", "change.high"),
    ("priors", "anomaly.low"),
    ("ranges", "change.value"),
    ("ranges", "windows"),
    ("agent", "budget_cents"),
    ("agent", "aliases"),
    ("agent", "compliance_policies"),
    ("bias_rules", "namespaces"),
    ("bias_rules", "sensitivity"),
    ("plan", "tolerance"),
    ("plan", "threshold_lookback"),
    ("calibration", "change.value"),
    ("default_metric", "absence"),
    ("number_words", "comparators_read_as_amount"),
    ("directions", "above"),
    ("metrics", "price"),
]


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(NESTED),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=5),
        st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
        st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    ),
)
def test_validate_guardrails_never_raises_on_nested_garbage(path, value):
    doc = default_guardrails()
    doc[path[0]][path[1]] = value
    errors = validate_guardrails(doc)
    assert isinstance(errors, list)
    if not errors:  # whatever validation accepts, the compiler can load and use
        doc["version"] = "fuzz"
        with contextlib.suppress(CompileError):
            compile_intent("AAPL price rises significantly", "AAPL", NOTIFY, guardrails=doc)


STDLIB = set(sys.stdlib_module_names)
OPTIONAL = {"openai", "anthropic"}


def test_compiler_imports_only_stdlib_and_itself():
    root = Path(__file__).resolve().parents[2] / "compiler"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in STDLIB or top == "compiler" or top in OPTIONAL, f"{path.name} imports {name}"
                if top in OPTIONAL:  # only lazily, inside a function
                    assert node.col_offset > 0, f"{path.name} imports {name} at module level"
