"""Labelled (output, gold) pairs for measuring a math grader, built from real gold answers.

Every pair's label holds by construction: a *correct* pair states the gold answer (in another
surface form: a Minerva "Final Answer" line, ``\\boxed{}``, "The answer is", a decimal for a
fraction, number words, units, ``°``/``∞``, scientific notation, reordered terms or list
elements, another matrix environment...), a *wrong* pair states a different answer (off by one,
sign flipped, fraction inverted, interval end flipped, tuple reversed, a point written as
``[a, b]``, a decimal's last digit changed, another name, or a correct earlier line overridden
by a wrong final one) or states the gold outside its protocol's slot (reasoning without the
final line, only a box under ``answer_is``, no box under ``boxed``: the strict protocols read
no answer there). Outputs reuse the record's own worked solution with its boxes removed, so the
gold value also appears in the reasoning of a wrong output. Variants that are not surely right
or surely wrong (rounded decimals, ...) are not generated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from .answer_equivalence import NUMBER_WORDS
from .answer_extraction import gsm8k_gold, last_boxed


@dataclass(frozen=True)
class Pair:
    """One labelled pair: a model output, the gold answer, and whether the output is right."""

    source: str  # "math500" or "gsm8k"
    category: str
    output: str
    gold: str
    correct: bool
    protocol: str  # where the output states its answer (see answer_extraction)

    def as_dict(self) -> dict:
        """The pair as a JSON-ready dict."""
        return asdict(self)


_INT = re.compile(r"-?\d+")
_FRAC = re.compile(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}")
_ASKS_PERCENT = re.compile(r"\b(?:what|which) (?:is the )?percent(?:age)?\b", re.I)
_MINERVA = "Final Answer: The final answer is ${}$. I hope it is correct."
_UNIT_WORDS = ("dollars", "eggs", "minutes", "miles", "people", "pounds", "hours", "cookies")
_WORD_OF = {value: word for word, value in NUMBER_WORDS.items()}


def number_words(n: int) -> str:
    """English words for a non-negative integer below a billion (``125`` -> "one hundred
    twenty-five")."""
    if n < 20:
        return _WORD_OF[n]
    if n < 100:
        return _WORD_OF[n - n % 10] + ("" if n % 10 == 0 else "-" + _WORD_OF[n % 10])
    for size, name in ((1_000_000, "million"), (1_000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def unbox(solution: str) -> str:
    """A worked solution with every ``\\boxed{X}`` replaced by ``X``."""
    while (pos := solution.rfind("\\boxed{")) >= 0:
        content = last_boxed(solution[pos:])
        if content is None:
            break
        solution = solution[:pos] + content + solution[pos + len("\\boxed{") + len(content) + 1 :]
    return solution


def _gsm8k_reasoning(answer_field: str) -> str:
    """GSM8K's reference reasoning without calculator annotations and the ``####`` line."""
    body = answer_field.split("####")[0]
    return re.sub(r"<<[^>]*>>", "", body).strip()


def _reversed_tuple(gold: str) -> str | None:
    """``(a,b,c)`` -> ``(c,b,a)`` when that is a different tuple of simple elements."""
    match = re.fullmatch(r"\(([^(){}\[\]]+)\)", gold)
    if not match:
        return None
    parts = [p.strip() for p in match.group(1).split(",")]
    if len(parts) < 2 or len(set(parts)) < len(parts) or "\\infty" in gold:
        return None
    return "(" + ", ".join(reversed(parts)) + ")"


def _split_terms(expr: str) -> list[str] | None:
    """The top-level signed terms of a sum (``"x^2-3x+2"`` -> ``["x^2", "-3x", "+2"]``); None for
    a single term or an answer that is not a plain sum (lists, equations, intervals, ...)."""
    if re.search(r"[,=<>|]|\\(?:pm|mp|cup|cap|in|le|ge|ne|text|begin)\b", expr):
        return None
    terms, depth, start = [], 0, 0
    for i, char in enumerate(expr):
        depth += char in "{([" or 0
        depth -= char in "})]" or 0
        if char in "+-" and depth == 0 and expr[:i].strip() and expr[:i].rstrip()[-1] not in "^_*/+-":
            terms.append(expr[start:i].strip())
            start = i
    terms.append(expr[start:].strip())
    return terms if len(terms) > 1 and depth == 0 else None


def _reordered_sum(gold: str) -> str | None:
    """A sum of terms with letters, its first term moved last (``p - q`` -> ``-q + p``)."""
    terms = _split_terms(gold)
    if terms is None or not re.search(r"[A-Za-z]", gold.replace("\\frac", "")):
        return None
    first = terms[0] if terms[0][0] in "+-" else "+" + terms[0]
    rest = [*terms[1:], first]
    text = rest[0][0].strip("+") + rest[0][1:].strip()
    for term in rest[1:]:
        text += f" {term[0]} {term[1:].strip()}"
    return text


def _scientific(value: int) -> str | None:
    """``26000`` -> ``2.6 \\times 10^{4}``, for integers of at least 1000 ending in zeros."""
    digits = str(abs(value))
    if abs(value) < 1000 or not digits.endswith("00"):
        return None
    mantissa = digits.rstrip("0")
    mantissa = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if value < 0 else ''}{mantissa} \\times 10^{{{len(digits) - 1}}}"


def _square_brackets(gold: str) -> str | None:
    """An ordered pair/tuple ``(a, b)`` written as ``[a, b]`` (a closed interval: another answer)."""
    plain = gold.replace("\\left", "").replace("\\right", "").strip()
    if not (plain.startswith("(") and plain.endswith(")") and "," in plain and "\\cup" not in plain):
        return None
    depth = 0
    for i, char in enumerate(plain):
        depth += (char == "(") - (char == ")")
        if depth == 0 and i < len(plain) - 1:
            return None  # "(a,b) ... (c,d)": not one parenthesised group
    return "[" + plain[1:-1].strip() + "]"


def _numeric_wrongs(gold: str) -> Iterator[tuple[str, str]]:
    """(category, wrong answer) for an integer or simple-fraction gold."""
    if _INT.fullmatch(gold):
        yield "wrong_off_by_one", str(int(gold) + 1)
        if int(gold) != 0:
            yield "wrong_sign", str(-int(gold))
    frac = _FRAC.fullmatch(gold)
    if frac:
        sign, num, den = frac.groups()
        if num != den:
            yield "wrong_fraction", f"{sign}\\frac{{{den}}}{{{num}}}"
        yield "wrong_fraction", f"{sign}\\frac{{{int(num) + 1}}}{{{den}}}"


def _math_wrongs(gold: str) -> Iterator[tuple[str, str]]:
    """(category, wrong answer) variants of a MATH gold answer."""
    yield from _numeric_wrongs(gold)
    if "[" in gold or "]" in gold:
        yield "wrong_interval_end", gold.replace("[", "(").replace("]", ")")
    tup = _reversed_tuple(gold)
    if tup:
        yield "wrong_tuple_order", tup
    if "matrix" in gold and (num := re.search(r"-?\d+", gold)):
        yield "wrong_matrix_entry", gold[: num.start()] + str(int(num.group()) + 1) + gold[num.end() :]
    deg = re.fullmatch(r"(\d+)\^\\circ", gold)
    if deg:
        yield "wrong_off_by_one", f"{int(deg.group(1)) + 1}^\\circ"
    if brackets := _square_brackets(gold):
        yield "wrong_square_brackets", brackets
    if re.fullmatch(r"-?\d*\.\d+", gold):
        last = int(gold[-1])
        yield "wrong_last_decimal", gold[:-1] + str(last + 1 if last < 9 else last - 1)
    if not (_INT.fullmatch(gold) or _FRAC.fullmatch(gold) or re.search(r"matrix|\\text|,|=|\\in", gold)):
        yield "wrong_expression", f"{gold}+1"


def _terminating_decimal(num: int, den: int) -> str | None:
    """``num/den`` as an exact decimal string when it terminates within 4 places."""
    for places in range(1, 5):
        scaled = num * 10**places
        if scaled % den == 0:
            return f"{scaled // den / 10**places:.{places}f}"
    return None


def _math_surfaces(gold: str, problem: str) -> Iterator[tuple[str, str]]:
    """(category, correct answer in another surface form) for a MATH gold answer."""
    if "\\frac" in gold:
        yield "latex_surface", gold.replace("\\frac", "\\dfrac")
    frac = _FRAC.fullmatch(gold)
    if frac and (dec := _terminating_decimal(int(frac.group(2)), int(frac.group(3)))):
        yield "decimal_for_fraction", frac.group(1) + dec
    text = re.fullmatch(r"\\text\{\s*\(?([A-Za-z ]+)\)?\s*\}", gold)
    if text:
        yield "text_answer", text.group(1).strip()
        yield "text_answer", f"\\textbf{{{text.group(1).strip().lower()}}}"
    deg = re.fullmatch(r"(\d+)\^\\circ", gold)
    if deg:
        yield "units_degrees", deg.group(1)
        yield "units_degrees", f"{deg.group(1)} degrees"
    if "\\circ" in gold or "\\infty" in gold:
        yield "unicode_symbols", gold.replace("^\\circ", "°").replace("\\infty", "∞")
    if _INT.fullmatch(gold) and (sci := _scientific(int(gold))):
        yield "scientific_notation", sci
    if reordered := _reordered_sum(gold):
        yield "terms_reordered", reordered
        yield "terms_reordered", gold.replace(" ", "")
    unit = re.fullmatch(r"([\d.]+)\s*\\(?:text|mbox)\{[^{}]*\}(?:\^2)?", gold)
    if unit:
        yield "units_degrees", unit.group(1)
    if _INT.fullmatch(gold):
        yield "units_degrees", f"{gold}\\text{{ units}}"
        if _ASKS_PERCENT.search(problem):
            yield "percentage", f"{gold}\\%"
    if gold.startswith("\\left") or re.fullmatch(r"[(\[].*,.*[)\]]", gold):
        yield "interval_tuple", gold.replace("\\left", "").replace("\\right", "").replace(",", ", ")
    if "pmatrix" in gold:
        yield "matrix", gold.replace("pmatrix", "bmatrix")
    parts = [p.strip() for p in gold.split(",")]
    if "separated by commas" in problem and len(parts) > 1 and not re.search(r"[()\[\]{}]", gold):
        yield "list_order", ", ".join(reversed(parts))


def _math_pairs(record: dict, rng: random.Random) -> Iterator[Pair]:
    """Correct and wrong pairs for one MATH500 record."""
    gold, reasoning = str(record["answer"]), unbox(record["solution"])

    def pair(category: str, answer: str, correct: bool, earlier: str | None = None) -> Pair:
        lines = [reasoning] + ([f"The answer is ${earlier}$."] if earlier else []) + [_MINERVA.format(answer)]
        return Pair("math500", category, "\n".join(lines), gold, correct, "minerva")

    yield Pair("math500", "boxed_solution", record["solution"], gold, True, "boxed")
    yield pair("minerva_line", gold, True)
    boxed_only = f"{reasoning}\nTherefore the answer is $\\boxed{{{gold}}}$."
    yield Pair("math500", "minerva_boxed_only", boxed_only, gold, True, "minerva")
    yield Pair("math500", "wrong_no_final_answer", reasoning, gold, False, "minerva")
    unboxed = f"{reasoning}\nThe final answer is ${gold}$."
    yield Pair("math500", "wrong_unboxed_answer", unboxed, gold, False, "boxed")
    for category, answer in _math_surfaces(gold, record["problem"]):
        yield pair(category, answer, True)
    wrongs = list(_math_wrongs(gold))
    for category, wrong in wrongs:
        yield pair(category, wrong, False)
    if wrongs:
        wrong = rng.choice(wrongs)[1]
        yield pair("earlier_vs_final", gold, True, earlier=wrong)
        yield pair("wrong_earlier_vs_final", wrong, False, earlier=gold)
        boxed_wrong = record["solution"].replace(f"\\boxed{{{gold}}}", f"\\boxed{{{wrong}}}")
        if boxed_wrong != record["solution"]:
            yield Pair("math500", "wrong_boxed_solution", boxed_wrong, gold, False, "boxed")


def _gsm8k_surfaces(value: int, gold: str, question: str, rng: random.Random) -> Iterator[tuple[str, str]]:
    """(category, "The answer is ..." text) stating an integer GSM8K gold in another form."""
    yield "answer_is", gold
    if _ASKS_PERCENT.search(question):
        yield "percentage", f"{gold}%" if rng.random() < 0.5 else f"{gold} percent"
    if abs(value) >= 1000:
        yield "thousands", f"{value:,}"
    yield "currency_units", f"${gold}" if rng.random() < 0.5 else f"{gold} {rng.choice(_UNIT_WORDS)}"
    yield "decimal_zeros", f"{gold}.00"
    if 0 <= value < 1_000_000:
        words = number_words(value)
        yield "number_words", words if rng.random() < 0.5 else f"{words} {rng.choice(_UNIT_WORDS)}"


def _gsm8k_wrongs(value: int) -> Iterator[tuple[str, str]]:
    """(category, "The answer is ..." text) stating a wrong answer."""
    yield "wrong_off_by_one", str(value + 1)
    if value != 0:
        yield "wrong_sign", str(-value)
        yield "wrong_scale", str(value * 10)
    if 0 <= value < 1_000_000:
        yield "wrong_number_words", number_words(value + 1)


def _gsm8k_pairs(record: dict, rng: random.Random) -> Iterator[Pair]:
    """Correct and wrong pairs for one GSM8K record with an integer gold answer."""
    gold = gsm8k_gold(record["answer"])
    if not _INT.fullmatch(gold):
        return
    value, reasoning = int(gold), _gsm8k_reasoning(record["answer"])

    def pair(category: str, said: str, correct: bool, tail: str = "The answer is {}.") -> Pair:
        return Pair("gsm8k", category, f"{reasoning}\n{tail.format(said)}", gold, correct, "answer_is")

    for category, said in _gsm8k_surfaces(value, gold, record["question"], rng):
        yield pair(category, said, True)
    yield pair("hashes", gold, True, tail="#### {}")
    yield pair("boxed", gold, True, tail="So the answer is $\\boxed{{{}}}$.")
    if sci := _scientific(value):
        yield pair("scientific_notation", sci, True, tail="The answer is ${}$.")
    yield Pair("gsm8k", "wrong_no_final_answer", reasoning, gold, False, "answer_is")
    yield pair("wrong_boxed_only", gold, False, tail="\\boxed{{{}}}")
    wrongs = list(_gsm8k_wrongs(value))
    for category, said in wrongs:
        yield pair(category, said, False)
    wrong = rng.choice(wrongs)[1]
    yield pair(
        "earlier_vs_final",
        gold,
        True,
        tail=f"The answer is {wrong}.\nLet me check again.\nThe answer is {{}}.",
    )
    yield pair(
        "wrong_earlier_vs_final",
        wrong,
        False,
        tail=f"The answer is {gold}.\nOn second thought:\nThe answer is {{}}.",
    )


SOURCES: dict[str, Callable[[dict, random.Random], Iterator[Pair]]] = {
    "math500": _math_pairs,
    "gsm8k": _gsm8k_pairs,
}


def labelled_pairs(records: dict[str, list[dict]], seed: int = 0) -> list[Pair]:
    """All labelled pairs for ``{"math500": rows, "gsm8k": rows}`` (either may be missing)."""
    rng = random.Random(seed)
    return [p for name, rows in records.items() for row in rows for p in SOURCES[name](row, rng)]
