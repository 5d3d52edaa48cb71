"""A result policy in Python: redact personal data before the model reads it.

E-mail addresses, phone numbers and payment card numbers (only digit runs
that pass the Luhn check, so order numbers and timestamps stay) are replaced
in every string of a tool result, resource contents or prompt messages.
Config: `redact`, the kinds to redact (default: all of "email", "phone",
"card").

Built with componentize-py against the `result-policy` world of wit/; the
regular expressions are compiled when the module is imported, which
componentize-py does once, at build time, so no call pays for it.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

KINDS = ("email", "phone", "card")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by single spaces or dashes.
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# An optional country code, an area code (bare or in parentheses), then two
# groups of 3-4 digits: +1 555-123-4567, (555) 123 4567, +44 20 7946 0958;
# never a piece of a longer run of digit groups (a card that failed Luhn).
PHONE = re.compile(
    r"(?<![\w+.-])(?<!\d )(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]?\d{3,4}(?![\w-])(?![ .]\d)"
)
NOT_DIGIT = re.compile(r"\D")


def luhn(digits):
    """Whether a digit string passes the Luhn checksum card numbers carry."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        n = int(char)
        if position % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def kinds_of(config):
    return json.loads(config).get("redact", list(KINDS))


class Config(exports.Config):
    def validate_config(self, config):
        try:
            settings = json.loads(config)
        except ValueError as e:
            raise Err([f"config is not JSON: {e}"])
        if not isinstance(settings, dict):
            raise Err(["config must be a table"])
        problems = [f"{key}: unknown field (known: redact)" for key in settings if key != "redact"]
        kinds = settings.get("redact", list(KINDS))
        if not isinstance(kinds, list):
            problems.append("redact: must be a list of kinds")
        else:
            for i, kind in enumerate(kinds):
                if kind not in KINDS:
                    problems.append(f"redact[{i}]: {json.dumps(kind)} is not one of email, phone, card")
        if problems:
            raise Err(problems)


class ResultHook(exports.ResultHook):
    def on_result(self, config, call, output):
        kinds = kinds_of(config)
        counts = {}

        def card(match):
            if luhn(NOT_DIGIT.sub("", match.group(0))):
                counts["card"] = counts.get("card", 0) + 1
                return "[card redacted]"
            return match.group(0)

        def scrub(text):
            # Cards first: a card number must not be half taken for a phone.
            if "card" in kinds:
                text = CARD.sub(card, text)
            for kind, pattern in (("email", EMAIL), ("phone", PHONE)):
                if kind in kinds:
                    text, n = pattern.subn(f"[{kind} redacted]", text)
                    if n:
                        counts[kind] = counts.get(kind, 0) + n
            return text

        def walk(value):
            if isinstance(value, str):
                return scrub(value)
            if isinstance(value, list):
                return [walk(v) for v in value]
            if isinstance(value, dict):
                return {k: walk(v) for k, v in value.items()}
            return value

        result = walk(json.loads(output))
        if not counts:
            return types.ResultVerdict_Allow()
        note = "redacted " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
        rewritten = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        return types.ResultVerdict_Rewrite(types.Rewrite(json=rewritten, note=note))
