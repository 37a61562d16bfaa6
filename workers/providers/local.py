"""``local``: a deterministic, rule-based planner. It is NOT an LLM.

It exists so the dev stack and tests run offline with no API key: it reads the task for a few
cues (documents to read, "redact", an email address, URLs, "save as ...") and plays a fixed
plan through the real tool dispatcher, so every call still passes Guard.verify and gets a
certificate or a refusal:

    list_documents → read_document (documents whose names match the task, else up to 3)
    → redact_text (when asked, or after a call was refused for unredacted PHI)
    → http_get / http_post / send_email / write_document (when the task asks)
    → a final answer: what was done, what was refused, and an extractive summary.

Its "summary" is the first sentences of each document, nothing more. Same task, same documents,
same decisions → same run. Token counts are estimates from text length (priced as an unknown
model, so budgets still apply).
"""

from __future__ import annotations

import json
import re
from typing import Any

from workers.pricing import estimate_tokens
from workers.providers.base import Completion

_REDACT = re.compile(r"redact|de-?identif|anonymi[sz]|identifiers|minimum[- ]necessary", re.I)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"https?://[^\s\"'<>)]+")
_POST = re.compile(r"\b(post|submit|upload|push)\b", re.I)
_MAIL = re.compile(r"\b(e-?mail|mail|send)\b", re.I)
_WRITE = re.compile(r"\b(save|write|store|file|record)\b", re.I)
_NAMED = re.compile(r"\b(?:as|named|called|to)\s+[\"'`]([^\"'`]{1,120})[\"'`]", re.I)
_WORD = re.compile(r"[a-z0-9]{3,}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_STOP = {"the", "and", "for", "with", "this", "that", "from", "into", "all", "any", "then", "summarize", "document",
         "documents", "note", "notes", "file", "redact", "send", "email", "save", "write", "read", "direct",
         "apply", "necessary", "minimum", "identifiers", "summary"}
# Refusals the plan knows how to fix: the rule, and the step that fixes it.
_FIXABLE = {"phi_unredacted": "redact", "privileged_content_unlabelled": "label"}


def _history(messages: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any, bool]]:
    """(call, parsed result, is_error) for every tool call answered so far, in order."""
    results = {m["tool_call_id"]: m for m in messages if m["role"] == "tool"}
    out = []
    for m in messages:
        if m["role"] != "assistant":
            continue
        for c in m.get("tool_calls") or []:
            r = results.get(c["id"])
            if r is None:
                continue
            try:
                parsed = json.loads(r["content"])
            except ValueError:
                parsed = r["content"]
            out.append((c, parsed, bool(r.get("is_error"))))
    return out


def _rules(result: Any) -> set[str]:
    if isinstance(result, dict):
        return {v.get("rule", "") for v in result.get("violations") or [] if isinstance(v, dict)}
    return set()


def _summary(docs: list[dict[str, Any]]) -> str:
    parts = []
    for d in docs:
        sentences = [s.strip() for s in _SENTENCE.split(str(d.get("content", "")).strip()) if s.strip()]
        parts.append(f"{d.get('name')}: " + " ".join(sentences[:3]))
    return "\n".join(parts)


class LocalPlanner:
    name = "local"

    def complete(self, *, model: str, system: str, messages: list[dict[str, Any]],
                 tools: list[dict[str, Any]]) -> Completion:
        task = next(m["content"] for m in messages if m["role"] == "user")
        turn = sum(1 for m in messages if m["role"] == "assistant")
        text, calls = self._plan(task, {t["name"] for t in tools}, _history(messages))
        calls = [{"id": f"call_{turn}_{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]
        prompt_chars = len(system) + len(json.dumps(messages)) + len(json.dumps(tools))
        return Completion(text=text, tool_calls=calls, input_tokens=estimate_tokens(prompt_chars),
                          output_tokens=estimate_tokens(len(text or "") + len(json.dumps(calls))),
                          stop_reason="tool_calls" if calls else "stop")

    def _plan(self, task: str, tools: set[str], hist: list[tuple[dict[str, Any], Any, bool]]
              ) -> tuple[str | None, list[tuple[str, dict[str, Any]]]]:
        ok = [(c, r) for c, r, err in hist if not err]
        attempts = {name: [(c, r, err) for c, r, err in hist if c["name"] == name] for name in tools}
        listed = next((r for c, r in ok if c["name"] == "list_documents"), None)
        read = [r for c, r in ok if c["name"] == "read_document" and isinstance(r, dict)]
        tried_reads = {c["arguments"].get("document_id") for c, _, _ in hist if c["name"] == "read_document"}
        urls = _URL.findall(task)
        post = bool(urls) and bool(_POST.search(task))
        email_to = _EMAIL.findall(task)
        wants_mail = bool(email_to) and bool(_MAIL.search(task))
        named = _NAMED.findall(task)
        wants_write = bool(_WRITE.search(task)) and "write_document" in tools

        # 1. Find and read the documents the task is about.
        if "list_documents" in tools and listed is None and not attempts["list_documents"]:
            return None, [("list_documents", {})]
        if "read_document" in tools and isinstance(listed, dict):
            docs = listed.get("documents") or []
            words = set(_WORD.findall(task.lower())) - _STOP
            matching = [d for d in docs if words & set(_WORD.findall(str(d.get("name", "")).lower()))]
            targets = (matching or docs)[:3]
            todo = [d["document_id"] for d in targets if d["document_id"] not in tried_reads]
            if todo:
                return None, [("read_document", {"document_id": doc_id}) for doc_id in todo]

        # 2. The draft: the extractive summary, replaced by its redaction once redacted.
        fetched = [r for c, r in ok if c["name"] == "http_get" and isinstance(r, dict)]
        draft = _summary(read) if read else "\n".join(str(r.get("body", ""))[:500] for r in fetched) or task
        redactions = [(i, r) for i, (c, r, err) in enumerate(hist) if c["name"] == "redact_text" and not err]
        if redactions and isinstance(redactions[-1][1], dict):
            draft = str(redactions[-1][1].get("text", draft))
        last_phi_block = max((i for i, (c, r, err) in enumerate(hist) if err and "phi_unredacted" in _rules(r)),
                             default=-1)
        need_redact = bool(_REDACT.search(task)) or last_phi_block >= 0
        if need_redact and "redact_text" in tools and (not redactions or redactions[-1][0] < last_phi_block):
            return None, [("redact_text", {"text": draft})]

        # 3. The outbound steps the task asks for, each retried only after its refusal was fixed.
        def may_try(tool: str) -> bool:
            tries = attempts.get(tool) or []
            if tool not in tools or any(not err for _, _, err in tries):
                return False
            if not tries:
                return True
            _, last, err = tries[-1]
            return len(tries) < 3 and any(rule in _FIXABLE for rule in _rules(last))

        steps: list[tuple[str, dict[str, Any]]] = []
        if urls and not post and may_try("http_get"):
            steps.append(("http_get", {"url": urls[0]}))
        elif post and may_try("http_post"):
            steps.append(("http_post", {"url": urls[0], "body": draft}))
        elif wants_mail and may_try("send_email"):
            # Never the task's own text with its addresses: hipaa counts an email address as an
            # identifier, and redact_text only ever rewrites the body.
            subject = "Summary: " + (read[0]["name"] if read else _EMAIL.sub("[recipient]", task)[:60])
            steps.append(("send_email", {"to": email_to[0], "subject": subject, "body": draft}))
        elif wants_write and may_try("write_document"):
            base = read[0]["name"] if read else "task"
            args: dict[str, Any] = {"name": named[0] if named else f"{base}-summary", "content": draft,
                                    "justification": f"Requested by the task: {task[:200]}"}
            if any("privileged_content_unlabelled" in _rules(r) for _, r, _ in attempts.get("write_document", [])):
                args["labels"] = ["privileged"]
            steps.append(("write_document", args))
        if steps:
            return None, steps
        return self._final(draft, hist), []

    @staticmethod
    def _final(draft: str, hist: list[tuple[dict[str, Any], Any, bool]]) -> str:
        done = [c["name"] for c, _, err in hist if not err]
        refused = [f"{c['name']} ({', '.join(sorted(_rules(r))) or 'error'})" for c, r, err in hist if err]
        lines = ["[local planner: rule-based, not an LLM]"]
        lines.append("Tools used: " + (", ".join(done) if done else "none") + ".")
        if refused:
            lines.append("Refused: " + "; ".join(refused) + ".")
        return "\n".join(lines) + "\n\n" + draft
