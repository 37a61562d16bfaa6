"""Detectors and redaction, including property tests (redacted text never trips the detector)."""

import base64

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from guard import Guard, ToolCall, VerifyContext, find_phi, find_secrets, load_policy, redact
from guard.normalize import fold

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
# Found by this test in a fresh clone: a percent escape glued to the digits after it hides their
# boundary ("%2023-45-6789" reads " 23-45-6789" once decoded, as the guard reads it too).
@example([("%0", "123-45-6789")], "")
@example([("%20", "23-45-6789")], "")
@example([("base64 ", "U1NOIDEyMy00NS02Nzg5")], " (SSN 123-45-6789 encoded)")
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

    # present() reads text as given; its callers (the rules, through string_fields) fold it first
    assert phi_detectors().present(fold(text)) == bool(find_phi(text))
    assert secret_detectors().present(fold(text)) == bool(find_secrets(text))


piece = st.one_of(
    identifier,
    filler,
    st.sampled_from(["[REDACTED:NAME]", "[REDACTED:SSN]", "MRN ", "Patient: ", " ", "\n", "-", "1", "Doe"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(piece, max_size=12))
def test_fast_path_agrees_with_exact_path_around_placeholders(parts):
    from guard.detectors import name_detectors, phi_detectors

    text = fold("".join(parts))
    assert phi_detectors().present(text) == bool(find_phi(text))
    names = name_detectors(("Jane Doe",))
    assert names.present(text) == bool(names.find(text))


# --- look-alike and invisible characters ----------------------------------------------------------
# An agent (or a prompt injected into what it reads) can dress an identifier up so that a plain
# regex misses it: zero-width characters inside it, another dash, fullwidth or Arabic-Indic digits,
# a fullwidth colon. The detectors read text folded (guard.detectors.fold).

ZW = "\u200b"  # zero-width space


@pytest.mark.parametrize(("text", "kind"), [
    ("SSN 123\u201145\u20116789", "SSN"),            # non-breaking hyphens
    (f"SSN 1{ZW}23-45-67{ZW}89", "SSN"),
    ("SSN \uff11\uff12\uff13-\uff14\uff15-\uff16\uff17\uff18\uff19", "SSN"),  # fullwidth digits
    ("SSN \u0661\u0662\u0663-\u0664\u0665-\u0666\u0667\u0668\u0669", "SSN"),  # Arabic-Indic digits
    ("MRN\uff1a483920", "MRN"),                      # fullwidth colon
    (f"write to jane{ZW}@example.com", "EMAIL"),
    ("call (617)\u00a0555\u20130199", "PHONE"),        # no-break space, en dash
    ("DOB 03\u2044 14/1961".replace("\u2044 ", "/"), "DATE"),
    (f"J{ZW}ane D\u00adoe was seen", "NAME"),          # soft hyphen
])
def test_dressed_up_identifiers_are_found_and_redacted(text, kind):
    found = find_phi(text, ["Jane Doe"])
    assert kind in {f.type for f in found}
    redacted, _ = redact(text, ["Jane Doe"])
    assert find_phi(redacted, ["Jane Doe"]) == []
    assert f"[REDACTED:{kind}]" in redacted


def test_positions_refer_to_the_text_given_and_the_rest_is_kept():
    text = "Jos\u00e9 \u2014 SSN 123\u201145\u20116789, \u0928\u092e\u0938\u094d\u0924\u0947 ok"
    [f] = [f for f in find_phi(text) if f.type == "SSN"][:1]
    assert text[f.start:f.end] == "123\u201145\u20116789"
    redacted, _ = redact(text)
    assert redacted == "Jos\u00e9 \u2014 SSN [REDACTED:SSN], \u0928\u092e\u0938\u094d\u0924\u0947 ok"


def test_dressed_up_secret_is_found():
    assert [f.type for f in find_secrets(f"key AKIA{ZW}IOSFODNN7{ZW}EXAMPLE")] == ["aws_access_key"]


_DRESS = {"-": ["\u2010", "\u2011", "\u2013", "\u2212", "\ufe63", "\uff0d"], ":": ["\uff1a"],
          " ": ["\u00a0", "\u2007", "\u202f", "\u3000"]}
_INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202a", "\u2066"]


@st.composite
def dressed(draw, plain):  # type: ignore[no-untyped-def]
    out = []
    for ch in draw(plain):
        if ch.isdigit():
            base = draw(st.sampled_from([0x30, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x1D7CE]))
            ch = chr(base + int(ch))
        elif ch in _DRESS and draw(st.booleans()):
            ch = draw(st.sampled_from(_DRESS[ch]))
        out.append(ch)
        if draw(st.integers(0, 3)) == 0:
            out.append(draw(st.sampled_from(_INVISIBLE)))
    return "".join(out)


@settings(max_examples=300, deadline=None)
@given(dressed(identifier), filler, filler)
def test_dressing_up_an_identifier_does_not_hide_it(ident, before, after):
    text = f"{before} {ident} {after}"
    assert find_phi(text, ["Jane Doe"])
    redacted, _ = redact(text, ["Jane Doe"])
    assert find_phi(redacted, ["Jane Doe"]) == []
    policy = load_policy("hipaa")
    ctx = VerifyContext("exec_1", policy, policy.max_permissions, 1000, 0, {}, ("Jane Doe",))
    verdict = Guard.verify(ToolCall("send_email", {"to": "care@example.org", "subject": "s", "body": text}), ctx)
    assert "phi_unredacted" in [v["rule"] for v in verdict.violations]


def test_dressed_up_secret_is_refused_by_the_default_policy():
    policy = load_policy("default")
    ctx = VerifyContext("exec_1", policy, policy.max_permissions, 1000, 0, {}, ())
    body = f"creds: AKIA{ZW}IOSFODNN7\u2060EXAMPLE"
    verdict = Guard.verify(ToolCall("http_post", {"url": "https://example.com/x", "body": body}), ctx)
    assert [v["rule"] for v in verdict.violations] == ["secret_in_outbound"]


# --- transport encodings ---------------------------------------------------------------------------
# Percent-encoding, HTML character references and base64 carry text past a regex unchanged in
# meaning; the rules read decoded views beside each argument (guard.detectors.decoded_views).


def _verdict(policy_name, tool, arguments):  # type: ignore[no-untyped-def]
    policy = load_policy(policy_name)
    ctx = VerifyContext("exec_1", policy, policy.max_permissions, 1000, 0, {}, ("Jane Doe",))
    return [v["rule"] for v in Guard.verify(ToolCall(tool, arguments), ctx).violations]


@pytest.mark.parametrize("body", [
    "ssn 123%2D45%2D6789",
    "ssn 123&#45;45&#x2d;6789",
    "mail jane%40example.com",
    "see " + base64.b64encode(b"Patient SSN 123-45-6789").decode(),
    "see " + base64.urlsafe_b64encode("Jane Doe \u2014 MRN: 483920".encode()).decode().rstrip("="),
])
def test_encoded_phi_is_refused_under_hipaa(body):
    assert _verdict("hipaa", "send_email", {"to": "care@example.org", "subject": "s", "body": body}) == [
        "phi_unredacted"]


@pytest.mark.parametrize("arguments", [
    {"url": "https://example.com/x", "body": "k=" + base64.b64encode(b"AKIAIOSFODNN7EXAMPLE").decode()},
    {"url": "https://example.com/x?k=%41%4B%49%41IOSFODNN7EXAMPLE", "body": "hello"},
])
def test_encoded_secret_is_refused_by_the_default_policy(arguments):
    assert _verdict("default", "http_post", arguments) == ["secret_in_outbound"]


def test_text_that_only_looks_encoded_passes():
    body = ("50% off &amp; free shipping, 100%25 sure; ThisIsAVeryLongIdentifierName, "
            + base64.b64encode(b"nothing to see here").decode() + ", " + base64.b64encode(bytes(range(256))).decode())
    assert _verdict("hipaa", "send_email", {"to": "care@example.org", "subject": "s", "body": body}) == []


@settings(max_examples=200, deadline=None)
@given(identifier, filler, st.sampled_from(["percent", "html", "base64"]))
def test_an_encoded_identifier_is_still_refused(ident, before, how):
    raw = f"{before} {ident}"
    if how == "percent":
        body = "".join(f"%{b:02X}" for b in raw.encode())
    elif how == "html":
        body = "".join(f"&#{ord(c)};" for c in raw)
    else:
        body = base64.b64encode(raw.encode()).decode()
    assert "phi_unredacted" in _verdict("hipaa", "send_email", {"to": "care@example.org", "subject": "s",
                                                                 "body": body})
