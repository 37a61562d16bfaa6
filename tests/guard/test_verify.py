"""Guard.verify: check order, permission and budget checks, and every policy rule allowed/blocked."""

import pytest

from guard import RULES, Guard, ToolCall, VerifyContext, load_policy, verify

PHI_DOC = {"labels": ["phi"], "content": "Patient: Jane Doe, MRN 889123"}
FIN_DOC = {"labels": ["financial"], "content": "Q3 ledger: revenue 1,200,000"}
PRIV_DOC = {
    "labels": ["privileged"],
    "content": "Counsel advises that the indemnity clause exposes the company to unlimited liability "
    "if the supplier breaches the data processing terms before the renewal date.",
}
PLAIN_DOC = {"labels": [], "content": "Cafeteria menu for the week."}


def ctx(policy="default", permissions=None, budget=1000, spent=0, documents=None, names=()):
    p = load_policy(policy)
    perms = permissions if permissions is not None else sorted(p.max_permissions)
    return VerifyContext("exec_1", p, perms, budget, spent, documents or {}, names)


def rules_of(decision):
    return [v["rule"] for v in decision.violations]


def test_every_preset_rule_is_registered():
    for name in ("default", "hipaa", "sox", "legal_privilege"):
        for rule in load_policy(name).rules:
            assert rule["id"] in RULES


def test_allowed_call_lists_checks_in_order():
    d = Guard.verify(ToolCall("read_document", {"document_id": "doc_1"}), ctx("sox"))
    assert d.allowed and not d.violations and not d.halt
    assert d.permission == "fs:read"
    assert d.checks == [
        "tool_known",
        "arguments_valid",
        "permission_held",
        "budget_available",
        "rule:secret_in_outbound",
        "rule:financial_record_immutable",
        "rule:missing_justification",
    ]
    assert Guard().verify is verify or Guard().verify(ToolCall("list_documents", {}), ctx()).allowed


def test_unknown_tool_stops_early():
    d = verify(ToolCall("rm_rf", {}), ctx())
    assert not d.allowed and d.checks == [] and rules_of(d) == ["unknown_tool"]
    assert d.permission is None and not d.halt


@pytest.mark.parametrize(
    "arguments",
    [{}, {"document_id": 3}, {"document_id": "a", "extra": 1}, ["document_id"]],
)
def test_invalid_arguments(arguments):
    d = verify(ToolCall("read_document", arguments), ctx())
    assert rules_of(d) == ["invalid_arguments"] and d.checks == ["tool_known"]
    assert d.violations[0]["permission"] == "fs:read"


def test_write_document_labels_must_be_strings():
    d = verify(ToolCall("write_document", {"name": "a", "content": "b", "labels": [1]}), ctx())
    assert rules_of(d) == ["invalid_arguments"]


def test_permission_not_held():
    d = verify(ToolCall("http_get", {"url": "https://example.com"}), ctx(permissions=["fs:read"]))
    assert not d.allowed and not d.halt
    assert d.violations == [
        {
            "rule": "permission_denied",
            "reason": "permission_not_granted",
            "detail": "http_get requires network:http:read, which this execution was not granted",
            "permission": "network:http:read",
        }
    ]
    assert "permission_held" not in d.checks and "budget_available" in d.checks


def test_budget_exceeded_halts():
    d = verify(ToolCall("list_documents", {}), ctx(budget=100, spent=101))
    assert rules_of(d) == ["budget_exceeded"] and d.halt
    assert verify(ToolCall("list_documents", {}), ctx(budget=100, spent=100)).allowed


def test_all_violations_reported_together():
    d = verify(
        ToolCall("send_email", {"to": "a@b.co", "subject": "k", "body": "AKIAABCDEFGHIJKLMNOP"}),
        ctx(permissions=[], budget=1, spent=5),
    )
    assert rules_of(d) == ["permission_denied", "budget_exceeded", "secret_in_outbound"]
    assert d.halt


# --- default: secrets ------------------------------------------------------------------------------

SECRETS = [
    "sk-proj-" + "a1B2c3D4e5F6g7H8i9J0kLmN",
    "sk-ant-api03-" + "x" * 30,
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_" + "A" * 36,
    "xoxb-123456789012-1234567890123-abcdef",
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI...\n-----END PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----",
    "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
    "api_key=0123456789abcdef",
    'password: "hunter2hunter2"',
    "AIza" + "S" * 35,
    "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
]


@pytest.mark.parametrize("policy", ["default", "hipaa", "sox", "legal"])
@pytest.mark.parametrize("secret", SECRETS)
def test_secret_in_email_body_halts(policy, secret):
    call = ToolCall("send_email", {"to": "ops@example.com", "subject": "creds", "body": f"here: {secret}"})
    d = verify(call, ctx(policy))
    assert "secret_in_outbound" in rules_of(d) and d.halt and not d.allowed
    v = next(v for v in d.violations if v["rule"] == "secret_in_outbound")
    assert v["reason"] == "secret_detected" and "send_email.body" in v["detail"]
    assert secret not in v["detail"]  # never echo the secret


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("http_get", {"url": "https://example.com/?api_key=0123456789abcdef"}),
        ("http_post", {"url": "https://example.com", "body": "token=abcdef123456"}),
        ("write_document", {"name": "notes", "content": "AKIAIOSFODNN7EXAMPLE", "justification": "x"}),
    ],
)
def test_secret_in_other_outbound_tools(tool, arguments):
    assert "secret_in_outbound" in rules_of(verify(ToolCall(tool, arguments), ctx()))


@pytest.mark.parametrize(
    "text",
    [
        "The API key rotation is scheduled for Friday.",
        "Please reset your password using the portal.",
        "Tokens used: 1234. Bearer of bad news.",
        "task-management and desk-booking",
        "Authorization header omitted",
    ],
)
def test_ordinary_text_is_not_a_secret(text):
    call = ToolCall("send_email", {"to": "ops@example.com", "subject": "note", "body": text})
    assert verify(call, ctx()).allowed


def test_redact_text_input_is_not_outbound():
    assert verify(ToolCall("redact_text", {"text": "AKIAIOSFODNN7EXAMPLE"}), ctx()).allowed


# --- hipaa: PHI ------------------------------------------------------------------------------------


def hipaa(**kw):
    return ctx("hipaa", names=("Jane Doe",), **kw)


@pytest.mark.parametrize(
    "body",
    [
        "Jane Doe was discharged.",
        "Ms. Doe was discharged.",
        "SSN 123-45-6789",
        "MRN: 889123",
        "Call her at (617) 555-0199.",
        "Reach her at jane.doe@example.com",
        "Admitted 03/14/2024",
        "Admitted on March 14, 2024",
        "Lives at 42 Elm Street",
        "Boston, MA 02115",
        "A 93-year-old woman",
    ],
)
def test_phi_in_email_is_a_tool_error(body):
    call = ToolCall("send_email", {"to": "care@example.org", "subject": "Summary", "body": body})
    d = verify(call, hipaa())
    assert rules_of(d) == ["phi_unredacted"] and not d.allowed and not d.halt
    assert d.violations[0]["reason"] == "phi_detected"
    assert "redact_text" in d.violations[0]["detail"]


def test_phi_in_subject_and_http_post():
    d = verify(ToolCall("send_email", {"to": "c@example.org", "subject": "Re: Jane Doe", "body": "ok"}), hipaa())
    assert rules_of(d) == ["phi_unredacted"] and "send_email.subject" in d.violations[0]["detail"]
    d = verify(ToolCall("http_post", {"url": "https://x.example", "body": "SSN 123-45-6789"}), hipaa())
    assert "phi_unredacted" in rules_of(d)  # also permission_denied: hipaa has no network


def test_redacted_email_passes():
    body = "Summary for [REDACTED:NAME] (MRN [REDACTED:MRN]), admitted [REDACTED:DATE] with pneumonia; 500 mg daily."
    call = ToolCall("send_email", {"to": "care@example.org", "subject": "Discharge summary", "body": body})
    d = verify(call, hipaa())
    assert d.allowed, d.violations
    assert "rule:phi_unredacted" in d.checks


def test_recipient_address_and_years_are_not_phi():
    call = ToolCall("send_email", {"to": "jane.doe@example.org", "subject": "2024 report", "body": "Year 2024."})
    assert verify(call, hipaa()).allowed


def test_write_document_phi_allowed_only_into_phi_documents():
    content = "Patient Jane Doe, SSN 123-45-6789"
    new_unlabelled = ToolCall("write_document", {"name": "summary", "content": content})
    assert rules_of(verify(new_unlabelled, hipaa())) == ["phi_unredacted"]
    labelled = ToolCall("write_document", {"name": "summary", "content": content, "labels": ["phi"]})
    assert verify(labelled, hipaa()).allowed
    overwrite = ToolCall("write_document", {"name": "chart", "content": content})
    assert verify(overwrite, hipaa(documents={"chart": PHI_DOC})).allowed
    relabel = ToolCall("write_document", {"name": "chart", "content": content, "labels": []})
    assert rules_of(verify(relabel, hipaa(documents={"chart": PHI_DOC}))) == ["phi_unredacted"]


def test_hipaa_has_no_network():
    d = verify(ToolCall("http_get", {"url": "https://example.com"}), hipaa())
    assert rules_of(d) == ["permission_denied"]


def test_default_policy_does_not_check_phi():
    call = ToolCall("send_email", {"to": "c@example.org", "subject": "x", "body": "SSN 123-45-6789"})
    assert verify(call, ctx("default")).allowed


# --- sox -------------------------------------------------------------------------------------------


def test_sox_write_needs_justification():
    call = ToolCall("write_document", {"name": "memo", "content": "hello"})
    d = verify(call, ctx("sox"))
    assert rules_of(d) == ["missing_justification"] and not d.halt
    assert d.violations[0]["reason"] == "justification_required"
    blank = ToolCall("write_document", {"name": "memo", "content": "hello", "justification": "   "})
    assert rules_of(verify(blank, ctx("sox"))) == ["missing_justification"]
    ok = ToolCall("write_document", {"name": "memo", "content": "hello", "justification": "Q3 close memo"})
    assert verify(ok, ctx("sox")).allowed


def test_sox_financial_records_are_immutable():
    call = ToolCall("write_document", {"name": "ledger", "content": "edited", "justification": "fix typo"})
    d = verify(call, ctx("sox", documents={"ledger": FIN_DOC, "doc_9": FIN_DOC}))
    assert rules_of(d) == ["financial_record_immutable"] and d.halt
    assert d.violations[0]["reason"] == "financial_record_overwrite"
    # a new financial document, or overwriting a plain one, is fine
    new = ToolCall(
        "write_document", {"name": "ledger-v2", "content": "x", "labels": ["financial"], "justification": "restated"}
    )
    assert verify(new, ctx("sox", documents={"ledger": FIN_DOC})).allowed
    plain = ToolCall("write_document", {"name": "menu", "content": "x", "justification": "update"})
    assert verify(plain, ctx("sox", documents={"menu": PLAIN_DOC})).allowed


def test_default_policy_allows_overwriting_financial():
    call = ToolCall("write_document", {"name": "ledger", "content": "edited"})
    assert verify(call, ctx("default", documents={"ledger": FIN_DOC})).allowed


# --- legal privilege -------------------------------------------------------------------------------


def legal(**kw):
    return ctx("legal", documents={"doc_7": PRIV_DOC, "advice": PRIV_DOC, "menu": PLAIN_DOC}, **kw)


def test_privileged_content_egress_halts():
    body = "FYI: the indemnity clause exposes the company to unlimited liability if the supplier breaches."
    d = verify(ToolCall("send_email", {"to": "x@example.com", "subject": "fyi", "body": body}), legal())
    assert rules_of(d) == ["privileged_content_egress"] and d.halt
    post = ToolCall("http_post", {"url": "https://paste.example", "body": PRIV_DOC["content"].upper()})
    assert rules_of(verify(post, legal())) == ["privileged_content_egress"]


@pytest.mark.parametrize("marker", ["ATTORNEY-CLIENT PRIVILEGED", "Privileged & Confidential", "attorney work product"])
def test_privilege_markers_cannot_leave(marker):
    call = ToolCall("send_email", {"to": "x@example.com", "subject": marker, "body": "see above"})
    assert rules_of(verify(call, legal())) == ["privileged_content_egress"]
    get = ToolCall("http_get", {"url": "https://example.com/?q=" + marker.replace(" ", "%20")})
    assert rules_of(verify(get, legal())) == ["privileged_content_egress"]


def test_non_privileged_content_may_leave():
    body = "The cafeteria menu for the week is attached. Lunch is at noon."
    assert verify(ToolCall("send_email", {"to": "x@example.com", "subject": "menu", "body": body}), legal()).allowed
    assert verify(ToolCall("http_get", {"url": "https://example.com/menu"}), legal()).allowed


def test_privileged_content_into_unlabelled_document():
    content = "Summary: " + PRIV_DOC["content"]
    d = verify(ToolCall("write_document", {"name": "summary", "content": content}), legal())
    assert rules_of(d) == ["privileged_content_unlabelled"] and not d.halt
    ok = ToolCall("write_document", {"name": "summary", "content": content, "labels": ["privileged"]})
    assert verify(ok, legal()).allowed
    into_priv = ToolCall("write_document", {"name": "advice", "content": content})
    assert verify(into_priv, legal()).allowed  # the existing document is privileged


def test_verify_is_deterministic():
    call = ToolCall(
        "send_email", {"to": "a@example.com", "subject": "Jane Doe", "body": "SSN 123-45-6789 AKIAIOSFODNN7EXAMPLE"}
    )
    first = verify(call, hipaa()).to_dict()
    assert all(verify(call, hipaa()).to_dict() == first for _ in range(20))
