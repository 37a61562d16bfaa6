"""guard.display: what may be shown of a run outside its record."""

from __future__ import annotations

from guard import display, load_policy


def test_hipaa_and_phi_carrying_runs_show_strings_redacted() -> None:
    value = {"to": "dr.smith@example.com", "document_id": "doc_0123456789", "labels": ["phi"],
             "nested": [{"text": "Jane Doe is home"}], "n": 3}
    shown = display.shown(value, "hipaa", ("Jane Doe",), keep=("labels",))
    assert shown == {"to": "[REDACTED:EMAIL]", "document_id": "doc_0123456789", "labels": ["phi"],
                     "nested": [{"text": "[REDACTED:NAME] is home"}], "n": 3}
    assert display.shown(value, load_policy("default"), ("Jane Doe",)) is value  # nothing to hide
    assert display.shown(value, "default", ("Jane Doe",), labels=["phi"])["to"] == "[REDACTED:EMAIL]"
    assert display.redacts("no-such-policy")  # a record of a policy this build does not know: fail closed
    assert not display.redacts("sox", ["financial"])


def test_only_the_labels_that_follow_the_data() -> None:
    assert display.sensitive(["phi", "draft", "financial", "phi"]) == ["financial", "phi"]
    assert display.sensitive([]) == []
