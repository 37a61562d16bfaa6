"""Detectors and redaction, including property tests (redacted text never trips the detector)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from guard import Guard, ToolCall, VerifyContext, find_phi, find_secrets, load_policy, redact

NOTE = (
    "Patient: Jane Doe, DOB 03/14/1961, MRN: A1234567, SSN 123-45-6789. Call (617) 555-0199 or "
    "jane.doe@example.com. Lives at 42 Elm Street, Boston, MA 02115. Admitted March 3, 2024; "
    "discharged 2024-03-09. Ms. Doe is 93 years old. Member ID: XZ99812. IP 10.0.0.12."
)


def test_redact_replaces_every_identifier_with_typed_placeholders():
    text, findings = redact(NOTE, names=["Jane Doe"])
    for raw in [
        "Jane",
        "Doe",
        "1961",
        "A1234567",
        "123-45-6789",
        "555-0199",
        "jane.doe@",
        "42 Elm",
        "02115",
        "March 3",
        "2024-03-09",
        "XZ99812",
        "10.0.0.12",
    ]:
        assert raw not in text, raw
    for kind in [
        "NAME",
        "DATE",
        "MRN",
        "SSN",
        "PHONE",
        "EMAIL",
        "ADDRESS",
        "ZIP",
        "AGE",
        "HEALTH_PLAN_ID",
        "IP_ADDRESS",
    ]:
        assert f"[REDACTED:{kind}]" in text, kind
    assert text.startswith("Patient: [REDACTED:NAME]")  # labels are kept
    assert "MRN: [REDACTED:MRN]" in text
    assert find_phi(text, ["Jane Doe"]) == []
    assert {f.type for f in findings} >= {"NAME", "SSN", "MRN"}
    assert all(set(f.to_dict()) == {"type", "start", "end"} for f in findings)


def test_clinical_text_without_identifiers_is_untouched():
    text = "Community-acquired pneumonia treated with ceftriaxone 1 g daily and azithromycin 500 mg for 5 days in 2024."
    assert redact(text) == (text, [])
    assert find_phi(text) == []


def test_names_match_case_insensitively_and_by_surname():
    assert [f.type for f in find_phi("JANE  DOE called", ["Jane Doe"])] == ["NAME"]
    assert find_phi("Dr. Doe reviewed it", ["Jane Doe"])
    assert find_phi("we will see", ["Will Smith"]) == []  # name parts are case-sensitive


def test_secret_findings_are_typed():
    assert [f.type for f in find_secrets("key AKIAIOSFODNN7EXAMPLE here")] == ["aws_access_key"]
    assert find_secrets("nothing to see") == []


identifier = st.sampled_from(
    [
        "123-45-6789",
        "(617) 555-0199",
        "617-555-0199",
        "jane@example.com",
        "03/14/1961",
        "2024-03-09",
        "March 3, 2024",
        "42 Elm Street",
        "MA 02115",
        "MRN: 12345",
        "10.0.0.1",
        "Jane Doe",
        "Ms. Doe",
        "93-year-old",
        "Acct # 99881234",
        "zip 02139",
        "5 June 2020",
    ]
)
filler = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(filler, identifier), max_size=6), filler)
def test_redacted_output_never_trips_the_detector(parts, tail):
    text = "".join(a + b for a, b in parts) + tail
    redacted, _ = redact(text, names=["Jane Doe"])
    assert find_phi(redacted, ["Jane Doe"]) == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.lists(st.text(min_size=1, max_size=12), max_size=3))
def test_redact_converges_on_arbitrary_text_and_names(text, names):
    redacted, _ = redact(text, names=names)
    assert find_phi(redacted, names) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(filler, identifier), max_size=4), filler)
def test_redacted_email_passes_hipaa_verify(parts, tail):
    text = "".join(a + b for a, b in parts) + tail
    redacted, _ = redact(text, names=["Jane Doe"])
    policy = load_policy("hipaa")
    ctx = VerifyContext("exec_1", policy, policy.max_permissions, 1000, 0, {}, ("Jane Doe",))
    call = ToolCall("send_email", {"to": "care@example.org", "subject": "summary", "body": redacted})
    d = Guard.verify(call, ctx)
    assert "phi_unredacted" not in [v["rule"] for v in d.violations]
    assert Guard.verify(call, ctx) == d  # deterministic


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_fast_path_agrees_with_exact_path(text):
    from guard.detectors import phi_detectors, secret_detectors

    assert phi_detectors().present(text) == bool(find_phi(text))
    assert secret_detectors().present(text) == bool(find_secrets(text))


piece = st.one_of(
    identifier,
    filler,
    st.sampled_from(["[REDACTED:NAME]", "[REDACTED:SSN]", "MRN ", "Patient: ", " ", "\n", "-", "1", "Doe"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(piece, max_size=12))
def test_fast_path_agrees_with_exact_path_around_placeholders(parts):
    from guard.detectors import name_detectors, phi_detectors

    text = "".join(parts)
    assert phi_detectors().present(text) == bool(find_phi(text))
    names = name_detectors(("Jane Doe",))
    assert names.present(text) == bool(names.find(text))
