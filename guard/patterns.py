"""The detector table: regular expressions for secrets and HIPAA Safe Harbor identifiers.

Each entry is `(pattern, gate)`. A gate is a cheap pre-check that must pass before the regex
runs at all: `digit` (the text contains a digit), `lower` (one of these substrings occurs in the
lower-cased text) and `exact` (one of these occurs as written). Gates are what keep a verify call
in microseconds: most text never reaches most patterns.

`lowered_pattern` (optional) is an equivalent
lower-case pattern the fast path runs on the lower-cased text instead.

A PHI pattern may mark the identifier itself with `(?P<v>...)`, so redaction keeps the label
around it ("MRN: [REDACTED:MRN]").

Patterns avoid a leading `\\b` or look-behind where they can (`\\d(?<!\\w\\d)` instead of `\\b\\d`):
the `re` engine skips an alternative cheaply only when it starts with a literal or a class.
"""

from __future__ import annotations

from typing import Any

Gate = dict[str, Any]
Entry = tuple[str, Gate]

# Labels that introduce a credential in "label = value" text.
_CREDENTIAL_LABELS = (
    r"api[_-]?key|apikey|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token"
    r"|private[_-]?key|password|passwd|secret|token"
)
_ASSIGNED = r"[\"']?\s*[:=]\s*[\"']?[^\s\"'\x00]{6,}"

# --- secrets: detector name -> entries -------------------------------------------------------------

SECRET_PATTERNS: dict[str, tuple[Entry, ...]] = {
    "private_key_pem": ((r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----", {"exact": ("PRIVATE KEY",)}),),
    "anthropic_key": ((r"sk-ant-[A-Za-z0-9_\-]{20,}", {"lower": ("sk-ant-",)}),),
    "openai_key": ((r"sk-(?<![A-Za-z0-9]sk-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}", {"exact": ("sk-",)}),),
    "stripe_key": ((r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}", {"exact": ("k_live_", "k_test_")}),),
    "aws_access_key": (
        (
            r"[A](?<![A-Za-z0-9]A)(?:KIA|SIA|GPA|IDA|ROA)[0-9A-Z]{16}(?![A-Za-z0-9])",
            {"exact": ("AKIA", "ASIA", "AGPA", "AIDA", "AROA")},
        ),
    ),
    "github_token": (
        (r"gh[pousr]_[A-Za-z0-9]{30,}", {"exact": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")}),
        (r"github_pat_[A-Za-z0-9_]{22,}", {"exact": ("github_pat_",)}),
    ),
    "slack_token": ((r"xox[abposre]-[A-Za-z0-9-]{10,}", {"exact": ("xox",)}),),
    "google_api_key": ((r"AIza[0-9A-Za-z_\-]{35}", {"exact": ("AIza",)}),),
    "jwt": ((r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", {"exact": ("eyJ",)}),),
    "bearer_token": ((r"[Bb](?i:earer)\s+[A-Za-z0-9\-._~+/]{16,}=*", {"lower": ("bearer",)}),),
    "generic_secret_assignment": (
        (
            rf"(?i:{_CREDENTIAL_LABELS}){_ASSIGNED}",
            # Presence runs this lower-case form on the lower-cased text: every alternative starts
            # with a literal, so the engine scans fast (the case-insensitive form is ~10x slower).
            {"lower": ("key", "secret", "token", "passw"), "lowered_pattern": rf"(?:{_CREDENTIAL_LABELS}){_ASSIGNED}"},
        ),
    ),
}

# --- PHI: identifier -> (placeholder type, entries) ------------------------------------------------

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
# The same months as an alternation whose branches each start with a literal (so `search` skips
# fast to capital letters) and check the word boundary after that first letter.
_MONTH_REST = {
    "J": "an(?:uary)?|une?|uly?",
    "F": "eb(?:ruary)?",
    "M": "ar(?:ch)?|ay",
    "A": "pr(?:il)?|ug(?:ust)?",
    "S": "ep(?:t(?:ember)?)?",
    "O": "ct(?:ober)?",
    "N": "ov(?:ember)?",
    "D": "ec(?:ember)?",
}
_MONTH_FIRST = "(?:" + "|".join(f"{c}(?<!\\w{c})(?:{rest})" for c, rest in _MONTH_REST.items()) + ")"
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace"
    r"|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq)"
)
_STREET_GATE = {  # every suffix above contains one of these as written
    "digit": True,
    "exact": (
        "St",
        "Av",
        "Rd",
        "Road",
        "Boulevard",
        "Blvd",
        "Lane",
        "Ln",
        "Dr",
        "Court",
        "Ct",
        "Way",
        "Pl",
        "Ter",
        "Cir",
        "Parkway",
        "Pkwy",
        "Highway",
        "Hwy",
        "Sq",
    ),
}
_STATES = [
    "AL",
    "AK",
    "AZ",
    "AR",
    "CA",
    "CO",
    "CT",
    "DE",
    "DC",
    "FL",
    "GA",
    "HI",
    "ID",
    "IL",
    "IN",
    "IA",
    "KS",
    "KY",
    "LA",
    "ME",
    "MD",
    "MA",
    "MI",
    "MN",
    "MS",
    "MO",
    "MT",
    "NE",
    "NV",
    "NH",
    "NJ",
    "NM",
    "NY",
    "NC",
    "ND",
    "OH",
    "OK",
    "OR",
    "PA",
    "RI",
    "SC",
    "SD",
    "TN",
    "TX",
    "UT",
    "VT",
    "VA",
    "WA",
    "WV",
    "WI",
    "WY",
    "PR",
]
_NAME_PART = r"[A-Z][a-z]*(?:['-][A-Z][a-z]+)*"
_B = r"(?<!\w\d)"  # after a first `\d`: "that digit starts a word" (a `\b` that keeps the fast path)

PHI_PATTERNS: dict[str, tuple[str, tuple[Entry, ...]]] = {
    "ssn": (
        "SSN",
        (
            (r"\d(?<![\w-]\d)\d\d-\d\d-\d{4}(?![\w-])", {"digit": True, "exact": ("-",)}),
            (
                r"[Ss](?i:sn|ocial security(?: number| no\.?)?)\b\s*[:#]?\s*(?P<v>\d{3}[ -]?\d{2}[ -]?\d{4})\b",
                {"digit": True, "lower": ("ssn", "social security")},
            ),
        ),
    ),
    "mrn": (
        "MRN",
        (
            (
                r"[Mm](?i:rn|edical record(?: number| no\.?| #)?)\b\s*[:#]?\s*(?P<v>[A-Za-z0-9-]*\d[A-Za-z0-9-]*)",
                {"digit": True, "lower": ("mrn", "medical record")},
            ),
        ),
    ),
    "health_plan_id": (
        "HEALTH_PLAN_ID",
        (
            (
                r"[MmSsBbPpHhIi](?i:ember|ubscriber|eneficiary|olicy|ealth plan|nsurance)\s*(?i:id|number|no\.?|#)"
                r"\s*[:#]?\s*(?P<v>[A-Za-z0-9-]*\d[A-Za-z0-9-]*)",
                {"digit": True, "lower": ("member", "subscriber", "beneficiary", "policy", "health plan", "insurance")},
            ),
        ),
    ),
    "account_number": (
        "ACCOUNT_NUMBER",
        (
            (
                r"[Aa](?i:ccount|cct)\b\.?\s*(?i:number|no\.?|#)?\s*[:#]?\s*(?P<v>[A-Za-z0-9-]*\d[A-Za-z0-9-]{3,})",
                {"digit": True, "lower": ("account", "acct")},
            ),
        ),
    ),
    "email": (
        "EMAIL",
        ((r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", {"exact": ("@",)}),),
    ),
    "ip_address": (
        "IP_ADDRESS",
        (
            (
                r"\d(?<![\d.]\d)\d?\d?\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\d|\.\d)",
                {"digit": True, "exact": (".",)},
            ),
        ),
    ),
    "date": (
        "DATE",
        (
            (
                rf"\d{_B}\d{{3}}-\d{{1,2}}-\d{{1,2}}(?:[T ]\d{{1,2}}:\d{{2}}(?::\d{{2}})?)?\b",
                {"digit": True, "exact": ("-",)},
            ),
            (rf"\d{_B}\d?/\d{{1,2}}/\d{{2}}(?:\d{{2}})?\b", {"digit": True, "exact": ("/",)}),
            (rf"\d{_B}\d?-\d{{1,2}}-\d{{2}}(?:\d{{2}})?\b", {"digit": True, "exact": ("-",)}),
            (rf"\d{_B}\d?\.\d{{1,2}}\.\d{{4}}\b", {"digit": True, "exact": (".",)}),
            (
                rf"{_MONTH_FIRST}\.?(?:\s+\d{{1,2}}(?:st|nd|rd|th)?\b(?:,?\s+\d{{4}}\b)?|,?\s+\d{{4}}\b)",
                {"digit": True},
            ),
            (rf"\d{_B}\d?(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}\b\.?(?:,?\s+\d{{4}}\b)?", {"digit": True}),
        ),
    ),
    "phone": (
        "PHONE",
        (
            (r"\(\d{3}\)\s?\d{3}[\s.-]\d{4}(?![\w-])", {"digit": True, "exact": ("(",)}),
            (r"\d(?<!\w\d)\d\d[\s.-]\d{3}[\s.-]\d{4}(?![\w-])", {"digit": True}),
        ),
    ),
    "street_address": (
        "ADDRESS",
        (
            (
                rf"\d{_B}\d{{0,5}}\s+(?:[A-Z][A-Za-z'-]*\.?\s+){{1,4}}{_STREET}\b\.?"
                r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*[A-Za-z0-9-]+)?",
                _STREET_GATE,
            ),
            (r"[Pp]\.?\s?[Oo]\.?\s+(?i:box)\s+\d+", {"digit": True, "lower": ("box",)}),
        ),
    ),
    "zip": (
        "ZIP",
        (
            # A state code, one space or tab, a ZIP; anchored on the ZIP's first digit.
            (
                rf"\d(?<=(?<!\w)(?:{'|'.join(_STATES)})[ \t]\d)\d{{4}}(?:-\d{{4}})?\b",
                {"digit": True},
            ),
            (r"[Zz](?i:ip)(?:\s*(?i:code))?\s*[:#]?\s*(?P<v>\d{5}(?:-\d{4})?)\b", {"digit": True, "lower": ("zip",)}),
            (rf"\d{_B}\d{{4}}-\d{{4}}(?![\w-])", {"digit": True, "exact": ("-",)}),
        ),
    ),
    "age_over_89": (
        "AGE",
        (
            (r"9(?<!\w9)\d[- ](?:years?|yrs?|y/?o)(?:[- ]old)?\b", {"digit": True, "lower": ("y",)}),
            (r"1(?<!\w1)[0-2]\d[- ](?:years?|yrs?|y/?o)(?:[- ]old)?\b", {"digit": True, "lower": ("y",)}),
            (r"[Aa](?i:ged?)\b\s*:?\s*(?P<v>9\d|1[0-2]\d)\b", {"digit": True, "lower": ("age",)}),
        ),
    ),
    "name": (
        "NAME",
        (
            (
                rf"M(?:r|rs|s|iss|x)\b\.?\s+(?P<v>{_NAME_PART}(?:\s+{_NAME_PART})?)",
                {"exact": ("Mr", "Ms", "Miss", "Mx")},
            ),
            (
                rf"(?:[Pp](?i:atient(?:\s+name)?|t)|[Nn](?i:ame))\s*:\s*(?P<v>{_NAME_PART}(?:\s+[A-Z]\.)?\s+{_NAME_PART})",
                {"exact": (":",), "lower": ("patient", "name", "pt")},
            ),
        ),
    ),
}
