"""Equivalence of a gold answer and an extracted answer, without evaluating either as code.

:func:`equivalent` rewrites both sides into LaTeX that math-verify's LaTeX parser reads (number
words to digits, a number's trailing unit words dropped, ``\\text`` answers compared as words),
Unicode math symbols to LaTeX), then asks math-verify, with two stricter rules in front of it:
two plain numbers (integers, decimals, fractions) must be equal as exact rationals (math-verify
rounds floats), and a bracketed list must keep its brackets (``[a, b]`` is a closed interval,
not the point ``(a, b)``). Only its LaTeX extraction is used: its plain-expression extraction runs
``sympy.parsing.sympy_parser.parse_expr``, which ``eval``s the transformed text. The ANTLR
LaTeX grammar hands sympy nothing but number tokens, and :func:`install_parser_guard` makes
sure that stays so: after it, sympy's string evaluator refuses anything but a number literal.
"""

from __future__ import annotations

import re
from fractions import Fraction

_STRIP_TOKENS = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "^\\circ", "^{\\circ}", "\\%", "$")
_TEXT_CMD = re.compile(r"\\(?:text(?:bf|rm|it)?|mbox|mathrm|mathbf)\s*\{([^{}]*)\}")
_WORD_ANSWER = re.compile(r"[A-Za-z][A-Za-z '\-]*")
_WORD = re.compile(r"[A-Za-z]{2,}")  # a text answer has a word; "p - q" is an expression
_CHOICE = re.compile(r"\(?([A-Za-z])\)?")
_NUMERIC = r"-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)|-?\\d?frac\{\d+\}\{\d+\}|-?\d+/\d+"
_UNIT_TAIL = re.compile(
    rf"^\\?\$?\s*({_NUMERIC})\s*(?:\\?\$)?\s*([A-Za-z][A-Za-z .\-]*)?(?:\^\{{?[23]\}}?)?\.?$"
)
_UNICODE_MATH = {"°": "^\\circ", "∞": "\\infty ", "π": "\\pi ", "−": "-", "×": "\\times ", "·": "\\cdot "}
_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION = re.compile(r"(-?)(?:\\frac\{(\d+)\}\{(\d+)\}|(\d+)/(\d+))")
_MATH_WORDS = frozenset({"pi", "sqrt", "and", "or", "i", "e", "x", "y", "z", "n", "k"})
# sympy_parser output for a number token, e.g. "Integer (18 )" or "Float ('2.5' )".
_NUMBER_CODE = re.compile(r"\s*(?:Integer\s*\(\s*\d+\s*\)|Float\s*\(\s*'\d*\.?\d*(?:[eE][-+]?\d+)?'\s*\))\s*")

NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}


class UnsafeParseError(ValueError):
    """Raised when text would reach sympy's string evaluator as anything but a number literal."""


def install_parser_guard() -> None:
    """Make ``sympy.parsing.sympy_parser.eval_expr`` (behind ``sympify(str)`` and ``parse_expr``)
    refuse any code but a single number literal. Idempotent; called in every judge worker."""
    import sympy.physics.units  # noqa: F401  (sympify's its own names on import, lazily from simplify)
    from sympy.parsing import sympy_parser

    original = sympy_parser.eval_expr
    if getattr(original, "number_only", False):
        return

    def eval_number_only(code: str, local_dict: dict, global_dict: dict):
        if not isinstance(code, str) or not _NUMBER_CODE.fullmatch(code):
            raise UnsafeParseError(f"refused to evaluate non-numeric text: {str(code)[:80]!r}")
        return original(code, local_dict, global_dict)

    eval_number_only.number_only = True  # type: ignore[attr-defined]
    sympy_parser.eval_expr = eval_number_only


def parser_guard_installed() -> bool:
    """Whether :func:`install_parser_guard` is in effect in this process."""
    from sympy.parsing import sympy_parser

    return bool(getattr(sympy_parser.eval_expr, "number_only", False))


def normalize_answer(ans: str) -> str:
    """Light string normalisation for simple comparisons."""
    s = ans.strip()
    s = _TEXT_CMD.sub(lambda m: m.group(1).strip(), s)
    for tok in _STRIP_TOKENS:
        s = s.replace(tok, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s)
    s = s.replace(" ", "").rstrip(".")
    if re.fullmatch(r"-?\d+\.\d*", s):
        s = s.rstrip("0").rstrip(".")
    return s


def words_to_number(text: str) -> int | None:
    """``"one hundred twenty-five"`` -> 125; None unless every word is a number word."""
    words = text.lower().replace("-", " ").replace(",", " ").split()
    words = [w for w in words if w != "and"]
    if not words or any(w not in NUMBER_WORDS and w not in _SCALES for w in words):
        return None
    total = current = 0
    for word in words:
        if word in NUMBER_WORDS:
            current += NUMBER_WORDS[word]
        elif word == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * _SCALES[word]
            current = 0
    return total + current


def _text_answer(ans: str) -> str | None:
    """The words of an answer written as text (``\\text{Evelyn}``, ``(C)``), lower-cased;
    None for a mathematical answer."""
    s = _TEXT_CMD.sub(lambda m: m.group(1), ans).replace("$", "").strip().rstrip(".").strip()
    if not (_WORD_ANSWER.fullmatch(s) and _WORD.search(s)) and not _CHOICE.fullmatch(s):
        return None
    choice = _CHOICE.fullmatch(s)
    return (choice.group(1) if choice else " ".join(s.split())).lower()


def _drop_units(ans: str) -> str:
    """``"18 dollars"``, ``"\\$18"``, ``"5.4 \\text{ cents}"``, ``"15 cm^2"`` -> the number;
    other answers unchanged."""
    plain = _TEXT_CMD.sub(lambda m: " " + m.group(1), ans).strip()
    match = _UNIT_TAIL.fullmatch(plain)
    if match is None:
        return ans
    unit = (match.group(2) or "").strip(" .").lower()
    if unit and any(w in _MATH_WORDS or len(w) < 2 for w in unit.split()):
        return ans
    return match.group(1).replace(",", "")


def _numbers_for_words(ans: str) -> str:
    """An answer that is number words (optionally with units or ``\\text``) as digits."""
    plain = _TEXT_CMD.sub(lambda m: " " + m.group(1), ans).strip().rstrip(".")
    words = plain.split()
    for cut in range(len(words), 0, -1):
        value = words_to_number(" ".join(words[:cut]))
        if value is not None:
            return " ".join([str(value), *words[cut:]])
    return ans


def _unicode_to_latex(ans: str) -> str:
    """``90°`` -> ``90^\\circ``, ``(2, ∞)`` -> ``(2, \\infty )`` (the symbols math-verify misses)."""
    for char, latex in _UNICODE_MATH.items():
        ans = ans.replace(char, latex)
    return ans


def canonical(ans: str) -> str:
    """The form of an answer handed to the LaTeX parser: LaTeX for Unicode symbols, digits for
    number words, no units."""
    return _drop_units(_numbers_for_words(_unicode_to_latex(ans.strip())))


def exact_number(ans: str) -> Fraction | None:
    """An answer that is a plain number (integer, decimal, ``\\frac{a}{b}``, ``a/b``, after
    :func:`normalize_answer`) as an exact rational; None for anything else (and for percentages)."""
    if "%" in ans:
        return None
    s = normalize_answer(ans)
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    frac = _FRACTION.fullmatch(s)
    if frac is None:
        return None
    sign, num, den = frac.group(1), frac.group(2) or frac.group(4), frac.group(3) or frac.group(5)
    return None if int(den) == 0 else Fraction(int(sign + num), int(den))


def _brackets(ans: str) -> str | None:
    """The outer brackets of a bracketed list (``"(]"`` for ``(3,4]``); None for other answers."""
    s = normalize_answer(ans)
    if len(s) > 2 and s[0] in "([" and s[-1] in ")]" and "," in s:
        return s[0] + s[-1]
    return None


def _boxed(ans: str) -> str:
    """Wrap an answer as ``\\boxed{...}`` for math-verify's LaTeX extraction."""
    return f"\\boxed{{{ans}}}"


def _math_verify_equal(gold: str, pred: str, timeout_s: int) -> bool:
    """math-verify with LaTeX extraction only (no ``parse_expr``)."""
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig()]
    gold_parsed = parse(_boxed(gold), extraction_config=config, parsing_timeout=timeout_s)
    pred_parsed = parse(_boxed(pred), extraction_config=config, parsing_timeout=timeout_s)
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


def equivalent(gold: str, pred: str, timeout_s: int = 5) -> bool:
    """Whether ``pred`` states the same answer as ``gold``. Text answers (words, a choice letter)
    must match as words; two plain numbers must be equal exactly (:func:`exact_number`); two
    bracketed lists must have the same outer brackets; everything else goes to math-verify after
    :func:`canonical`."""
    gold_text = _text_answer(gold)
    if gold_text is not None:
        return gold_text == _text_answer(pred)
    g, p = canonical(gold), canonical(pred)
    if normalize_answer(g) == normalize_answer(p):
        return True
    g_num, p_num = exact_number(g), exact_number(p)
    if g_num is not None and p_num is not None:
        return g_num == p_num
    g_brackets, p_brackets = _brackets(g), _brackets(p)
    if g_brackets and p_brackets and g_brackets != p_brackets:
        return False
    return _math_verify_equal(g, p, timeout_s)


def _to_sympy(ans: str):
    """Parse an answer with latex2sympy (LaTeX grammar only); None when it cannot."""
    from latex2sympy2_extended import latex2sympy

    try:
        return latex2sympy(ans)
    except Exception:
        return None


def sympy_equal(gold: str, pred: str) -> bool | None:
    """Sympy equivalence of two answers (a second opinion); ``None`` when either side is
    unparseable."""
    import sympy

    g_norm, p_norm = normalize_answer(canonical(gold)), normalize_answer(canonical(pred))
    if g_norm == p_norm:
        return True
    a, b = _to_sympy(g_norm), _to_sympy(p_norm)
    if a is None or b is None:
        return None
    try:
        if a == b:
            return True
        diff = sympy.simplify(a - b)
        if diff == 0:
            return True
        val = complex(sympy.N(diff))
        scale = max(1.0, abs(complex(sympy.N(a))))
        return abs(val) <= 1e-9 * scale
    except Exception:
        return False
