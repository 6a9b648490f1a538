"""The calculator: the exact value of a claim the model has started, as cotune.verify computes it.

GSM8K's authors, and nanochat after them, let a small model call a calculator for the
arithmetic inside a step: when the model has written ``48 / 2 =``, the value ``24`` is
inserted and generation goes on from there. This module is that decision as a pure
function of the text generated so far, so a decoder can call it after each token without
the calculator knowing anything about decoding:

    value_to_insert("<reasoning>Natalia sold 48 / 2 =")  -> "24"
    value_to_insert("<reasoning>She has 3 apples.")      -> None

The value is what :func:`cotune.verify.find_claims` would judge true for that claim, found
with the same parser, so a calculator-filled step always counts as a valid step, and a
claim the verifier would not read (a percent, an expression cut off by words such as ``60
minutes x 3/4 =``, a variable, a division by zero) gets nothing: the model writes what it
writes. Only reasoning is ever completed: nothing once ``</reasoning>``, ``<answer>`` or an
``Answer:`` line has begun. Off by default; evaluation reports results with and without it
as separate rows, never mixed.
"""

from __future__ import annotations

import re

from cotune.format import format_value
from cotune.verify import Claim, find_claims, whole_division

# "... =" with optional spaces and an optional currency sign after it, at the very end
_ENDS_WITH_EQUALS = re.compile(r"=[ \t]*[$€£₹]?\Z")
# where reasoning ends in either schema (tags, plain)
_REASONING_OVER = re.compile(r"</reasoning>|<answer>|(?:^|\n)\s*Answer:")
_REASONING_START = re.compile(r"<reasoning>|(?:^|\n)\s*Reasoning:")
# Short division (the "uniform" trace style, cotune.data.steps.short_division) states each
# whole-number division with its remainder ("27 / 8 = 3 r 3"). Once the reasoning has written
# such a step, or a division heads them ("272 / 8: 2 / 8 ="), a whole-number division gets
# its quotient and remainder rather than a decimal the steps after it could not use.
# The head is a division of its own: ``7 - 8 / 8: 8 / 8 =`` works an expression, not 8 / 8.
_SHORT_DIVISION_HEAD = re.compile(r"(?<![-+*/×÷] )(?<![\d.])\d+ / (\d+): \d+ / (\d+) =[ \t]*\Z")
_PROBE = "0"


def _reasoning_start(text: str) -> int:
    """Where the last reasoning of ``text`` begins (0 when no marker opens one)."""
    start = 0
    for m in _REASONING_START.finditer(text):
        start = m.end()
    return start


def _reasoning_open(text: str) -> bool:
    """Whether ``text`` ends inside reasoning (or in text with no schema markers at all)."""
    return _REASONING_OVER.search(text, _reasoning_start(text)) is None


def value_to_insert(text: str) -> str | None:
    """The value to append to ``text`` (generated so far) when it ends with a claim's left
    side and ``=`` (``48 / 2 =``, ``12 * 4 = 10 * 4 + 2 * 4 =``, ``$3 * 4 = $``); else None.

    Pure and total: never raises, never looks at or changes anything but the claim that
    ``text`` ends with; appending the result makes that claim true for
    :func:`cotune.verify.find_claims` (checked before returning)."""
    if not isinstance(text, str) or not _ENDS_WITH_EQUALS.search(text):
        return None
    if not _reasoning_open(text):
        return None
    probe = text + _PROBE
    claims = find_claims(probe)
    if not claims:
        return None
    last = claims[-1]
    if last.span[1] != len(probe) or last.true_value is None:
        return None
    if last.claimed.lstrip("$€£₹").strip() != _PROBE:
        return None
    value = _remainder_value(text, claims) or format_value(last.true_value)
    done = find_claims(text + value)
    if not done or done[-1].span[1] != len(text) + len(value) or not done[-1].correct:
        return None
    return value


def _remainder_value(text: str, claims: list[Claim]) -> str | None:
    """``"3 r 3"`` for a pending ``27 / 8`` (the last of ``claims``, found in ``text`` and the
    probe) when the open reasoning is doing short division, else None."""
    division = whole_division(claims[-1].expression)
    if division is None or division[1] == 0:
        return None
    start = _reasoning_start(text)
    written = any(" r " in c.claimed and c.span[0] >= start for c in claims[:-1])
    head = _SHORT_DIVISION_HEAD.search(text)
    if not (written or (head and head[1] == head[2])):
        return None
    q, m = divmod(*division)
    return f"{q} r {m}"
