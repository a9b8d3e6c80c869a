"""Final-answer extraction from model completions, following each task's answer protocol.

A *protocol* names where a completion states its final answer:

- ``boxed``: the last ``\\boxed{...}`` / ``\\fbox{...}`` (post-trained models are asked for it);
- ``minerva``: the last "Final Answer: The final answer is X. I hope it is correct." line (the
  4-shot Minerva prompt for MATH, Lewkowycz et al. 2022; "The final answer is" must open a line
  or follow "Final Answer:", so "our final answer is 8" in the reasoning is not it), else the
  last ``\\boxed{}``;
- ``answer_is``: the last "The answer is X." (GSM8K chain-of-thought, Wei et al. 2022), else a
  GSM8K-style ``#### X`` line;
- ``auto``: the marker of any kind that comes last in the text (the model's final statement),
  else the last number.

Every protocol but ``auto`` is strict: a completion without its protocol's markers has no
answer, so a truncated output that stops right after stating the gold value in its reasoning,
or an answer outside the protocol's slot, is not read as an answer. The *last* marker counts:
a few-shot run-on into an invented next problem is cut by the task's stop strings ("Problem:",
"Q:") at generation time, before grading. Extraction only slices text; it never interprets it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_BOX_CMDS = ("\\boxed", "\\fbox")
_FINAL_ANSWER = re.compile(  # "The final answer is" opening a line or after "Final Answer:"
    r"(?:^|\bFinal Answer:)[ \t*]*The final answer is:?[ \t]*(.*?)[ \t]*(?:I hope it is correct|$)",
    re.I | re.M,
)
_ANSWER_IS = re.compile(r"\banswer is\b:?\s*(.+?)(?=\.(?:\s|$)|\n|$)", re.I | re.S)
_HASHES = re.compile(r"^####[ \t]*(.+?)[ \t]*$", re.M)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_EDGE_JUNK = " \t\n$*:"

Found = tuple[int, str]  # (position of the marker in the text, answer text)


def _match_braces(text: str, start: int) -> str | None:
    """Return the content of the brace group opening at ``text[start] == '{'``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def _boxed(text: str) -> Found | None:
    """Position and content of the last ``\\boxed{...}``, ``\\boxed X`` or ``\\fbox{...}``."""
    pos = max(text.rfind(cmd) for cmd in _BOX_CMDS)
    if pos < 0:
        return None
    cmd = "\\boxed" if text.startswith("\\boxed", pos) else "\\fbox"
    rest = pos + len(cmd)
    if rest < len(text) and text[rest] == "{":
        content = _match_braces(text, rest)
        return None if content is None else (pos, content.strip())
    if rest < len(text) and text[rest] == " ":
        match = re.match(r"\s*([^\s$]+)", text[rest:])
        return (pos, match.group(1).rstrip(".")) if match else None
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, ``\\boxed X`` or ``\\fbox{...}`` in ``text``."""
    found = _boxed(text)
    return None if found is None else found[1]


def _clean(answer: str) -> str:
    """An answer span without surrounding ``$``, bold markers, colons and the final full stop;
    a ``\\boxed{}`` inside the span gives its content."""
    inner = last_boxed(answer)
    return (inner if inner is not None else answer).strip(_EDGE_JUNK).rstrip(".").strip(_EDGE_JUNK)


def _last_match(pattern: re.Pattern[str], text: str) -> Found | None:
    """Position and cleaned first group of the last non-empty match of ``pattern``."""
    for match in reversed(list(pattern.finditer(text))):
        answer = _clean(match.group(1))
        if answer:
            return match.start(), answer
    return None


def _final_answer_line(text: str) -> Found | None:
    """The Minerva "Final Answer: The final answer is X. I hope it is correct." line."""
    return _last_match(_FINAL_ANSWER, text)


def _answer_is(text: str) -> Found | None:
    """The last "The answer is X." sentence (X runs to a full stop before a space, or the line end)."""
    return _last_match(_ANSWER_IS, text)


def _hashes(text: str) -> Found | None:
    """The GSM8K reference format's ``#### X`` line."""
    return _last_match(_HASHES, text)


_MARKERS: dict[str, Callable[[str], Found | None]] = {
    "boxed": _boxed,
    "minerva": _final_answer_line,
    "answer_is": _answer_is,
    "hashes": _hashes,
}
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "auto": (),
    "boxed": ("boxed",),
    "minerva": ("minerva", "boxed"),
    "answer_is": ("answer_is", "hashes"),
}


def _clean_number(num: str) -> str:
    """Remove thousands separators from a number string."""
    return num.replace(",", "")


def _last_number(text: str) -> str | None:
    """The last number in the text, without thousands separators."""
    numbers = [n.rstrip(",") for n in _NUMBER.findall(text)]
    return _clean_number(numbers[-1]) if numbers else None


def extract_answer(text: str, protocol: str = "auto") -> str | None:
    """The final answer of a completion under ``protocol`` (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown answer protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    if not text:
        return None
    if protocol != "auto":
        for name in PROTOCOLS[protocol]:
            found = _MARKERS[name](text)
            if found is not None:
                return found[1]
        return None
    found_any = [f for f in (marker(text) for marker in _MARKERS.values()) if f is not None]
    if found_any:
        return max(found_any)[1]
    return _last_number(text)


def gsm8k_gold(answer_field: str) -> str:
    """GSM8K gold answer: the text after ``####`` with commas removed."""
    return _clean_number(answer_field.split("####")[-1].strip())


def math_gold(solution: str) -> str | None:
    """MATH gold answer from a ``solution`` field: its last boxed expression."""
    return last_boxed(solution)
