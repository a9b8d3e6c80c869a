"""A held-out set of labelled (output, gold) pairs for benchmarks/grading_accuracy.py.

Written independently of the judge and of :mod:`mobilellm_r1.eval.answer_pairs` (neither was
read while writing this), so a grader's score here is not shaped by the code it grades. The gold
answers are the real MATH500 and GSM8K test golds, read at run time from ``data_dir`` (nothing
of the data is stored in the repository). Each record is one model output in one of the three
styles the project's prompts ask for, labelled by construction:

- ``minerva`` (MATH 4-shot): ``... Final Answer: The final answer is $X$. I hope it is correct.``
- ``answer_is`` (GSM8K chain of thought): ``... The answer is X.``
- ``boxed`` (post-trained chat, optionally with ``<think>``): reasoning then ``\\boxed{X}``.

The answer itself is the gold rewritten into a form a model plausibly writes (correct: the same
value in another surface form) or a near miss (wrong). Gold strings are classified by shape
(number / fraction / decimal with units, dollars or degrees, surd, multiple of pi, base-b
numeral, text, tuple, interval, list, matrix, equation, expression), and each shape has its own
equivalent and near-miss rewrites. On top of that, protocol-level categories test where the
answer sits: the right value earlier but a different final answer, the right answer outside the
protocol's answer slot, truncated outputs, several boxes, and few-shot run-ons into the next
problem (the first final answer counts).

Conventions behind the labels (a grader-accuracy researcher's calls, stated here so they can be
argued with): an exact answer is required, so a rounded decimal approximation of an irrational or
non-terminating value is wrong; an unsimplified but equal fraction is correct; dropping or adding
a unit, ``\\$`` sign, degree sign, thousands separator or ``x =`` prefix is correct; a list or set
answer is correct in any order and wrong when partial; a run-on past the answer into a new
few-shot problem keeps the first final answer; an answer outside the protocol's slot (only boxed
under ``answer_is``, no box under ``boxed``) is wrong, as is a truncated output. One label was
changed after review to follow the project's protocol policy: under ``minerva`` a boxed-only
answer (no "Final Answer" line) is read from the box, so it is correct. Run-on outputs are cut
at the task's stop strings by benchmarks/grading_accuracy.py before grading, as in generation.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

SOURCES = {"math500": ("minerva", "boxed"), "gsm8k": ("answer_is", "boxed")}
GSM8K_RECORDS = 260
PER_RECORD = 3  # surface-form variants per record: up to 3 correct, 2 wrong


@dataclass(frozen=True)
class HeldoutPair:
    """One labelled pair: the attributes benchmarks/grading_accuracy.py reads."""

    source: str
    category: str
    protocol: str
    gold: str
    output: str
    correct: bool


# ---------------------------------------------------------------------------------------------
# small LaTeX helpers


def _matching(s: str, i: int) -> int:
    """Index of the brace closing the one at ``s[i]``, or -1."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def unbox(text: str) -> str:
    """``\\boxed{X}`` -> ``X`` everywhere (reference solutions used as model reasoning)."""
    while (i := text.find("\\boxed{")) >= 0:
        j = _matching(text, i + 6)
        if j < 0:
            return text.replace("\\boxed", "")
        text = text[:i] + text[i + 7 : j] + text[j + 1 :]
    return text


def split_top(s: str, seps: str = ",") -> list[str]:
    """Split on ``seps`` outside braces, parentheses and brackets."""
    out, depth, cur = [], 0, ""
    for ch in s:
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        if ch in seps and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [*out, cur]


def terms(expr: str) -> list[str]:
    """Top-level signed terms of a sum: ``x^2 - 3x + 1`` -> ['x^2', '-3x', '+1']."""
    out, depth, cur = [], 0, ""
    for k, ch in enumerate(expr):
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        prev = expr[:k].rstrip()
        if ch in "+-" and depth == 0 and cur.strip() and not prev.endswith(("^", "_", "\\pm")):
            out.append(cur.strip())
            cur = ch
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def join_terms(ts: list[str], spaced: bool = True) -> str:
    text = ""
    for k, t in enumerate(ts):
        t = t.strip()
        sign, body = (t[0], t[1:].strip()) if t[0] in "+-" else ("+", t)
        if k == 0:
            text = body if sign == "+" else "-" + body
        else:
            text += f" {sign} {body}" if spaced else f"{sign}{body}"
    return text


def flip(t: str) -> str:
    t = t.strip()
    if t.startswith("-"):
        return "+" + t[1:]
    return "-" + t.lstrip("+")


def bump_digit(s: str, rng: random.Random) -> str | None:
    """Change one digit (outside ``\\command`` names), a typo-like near miss."""
    spots = [m.start() for m in re.finditer(r"\d", s)]
    if not spots:
        return None
    k = rng.choice(spots)
    d = int(s[k])
    return s[:k] + str(d + 1 if d < 9 else d - 1) + s[k + 1 :]


def frac_tex(v: Fraction, style: str = "frac") -> str:
    if v.denominator == 1:
        return str(v.numerator)
    sign = "-" if v < 0 else ""
    p, q = abs(v.numerator), v.denominator
    if style == "slash":
        return f"{sign}{p}/{q}"
    if style == "dfrac":
        return f"{sign}\\dfrac{{{p}}}{{{q}}}"
    if style == "negnum":
        return f"\\frac{{{sign}{p}}}{{{q}}}"
    return f"{sign}\\frac{{{p}}}{{{q}}}"


def terminating(v: Fraction) -> bool:
    q = v.denominator
    for f in (2, 5):
        while q % f == 0:
            q //= f
    return q == 1


def decimal_tex(v: Fraction, leading_zero: bool = True) -> str:
    """Exact decimal of a terminating fraction."""
    sign = "-" if v < 0 else ""
    v = abs(v)
    places = 0
    while (v * 10**places).denominator != 1:
        places += 1
    n = int(v * 10**places)
    if places == 0:
        return f"{sign}{n}"
    whole, frac = divmod(n, 10**places)
    head = str(whole) if (whole or leading_zero) else ""
    return f"{sign}{head}.{str(frac).zfill(places)}"


def rounded(v: float, places: int) -> str:
    return f"{v:.{places}f}"


def commas(n: int) -> str:
    return f"{n:,}"


# ---------------------------------------------------------------------------------------------
# gold shapes -> (category, answer, correct) variants

_UNIT = re.compile(r"\s*\\(?:text|mbox)\{\s*([^{}]*?)\s*\}(\^2)?\s*$")
_NUM = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?"
_FRAC = re.compile(r"^(-)?\\[dt]?frac\s*(?:\{(-?\d+)\}|(\d))\s*(?:\{(\d+)\}|(\d))$")
_MIXED = re.compile(r"^(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}$")


@dataclass
class Numeric:
    value: Fraction
    dollar: bool = False
    degree: bool = False
    unit: str | None = None  # the unit's words, e.g. "cents", "inches" (^2 kept in unit_pow)
    unit_pow: str = ""
    kind: str = "int"  # int | frac | decimal | mixed


def parse_numeric(gold: str) -> Numeric | None:
    s = gold.replace("\\!", "").replace("{,}", ",").strip()
    s = re.sub(r",\s+(?=\d{3}\b)", ",", s)
    out = Numeric(Fraction(0))
    if s.startswith("\\$"):
        out.dollar, s = True, s[2:].strip()
    for deg in ("^\\circ", "^{\\circ}"):
        if s.endswith(deg):
            out.degree, s = True, s[: -len(deg)].strip()
    if m := _UNIT.search(s):
        out.unit, out.unit_pow, s = m.group(1), m.group(2) or "", s[: m.start()].strip()
    if re.fullmatch(_NUM, s) and re.search(r"\d", s):
        out.value = Fraction(s.replace(",", ""))
        out.kind = "decimal" if "." in s else "int"
    elif m := _FRAC.match(s):
        p = int(m.group(2) or m.group(3))
        q = int(m.group(4) or m.group(5))
        out.value, out.kind = Fraction(-p if m.group(1) else p, q), "frac"
    elif m := _MIXED.match(s):
        out.value, out.kind = int(m.group(1)) + Fraction(int(m.group(2)), int(m.group(3))), "mixed"
    else:
        return None
    return out


def numeric_forms(n: Numeric, v: Fraction) -> list[tuple[str, str]]:
    """Surface forms of value ``v`` (category, text), decorations not applied."""
    forms = []
    if v.denominator == 1:
        i = int(v)
        forms.append(("plain", str(i)))
        if abs(i) >= 1000:
            forms += [
                ("thousands_comma", commas(i)),
                ("thousands_comma_braced", commas(i).replace(",", "{,}")),
            ]
        if n.kind == "decimal" or n.dollar:
            forms.append(("trailing_zeros", f"{i}.00" if n.dollar else f"{i}.0"))
        if abs(i) >= 10**4 and i % 10**3 == 0:
            mant = Fraction(i, 10 ** (len(str(abs(i))) - 1))
            forms.append(("scientific", f"{decimal_tex(mant)} \\times 10^{{{len(str(abs(i))) - 1}}}"))
        return forms
    if n.kind == "decimal":
        forms.append(("exact_decimal", decimal_tex(v)))
        forms.append(("decimal_trailing_zero", decimal_tex(v) + "0"))
        if abs(v) < 1:
            forms.append(("decimal_no_leading_zero", decimal_tex(v, leading_zero=False)))
        if n.dollar or n.unit or n.degree:
            return forms
    forms += [
        ("latex_frac", frac_tex(v)),
        ("slash_frac", frac_tex(v, "slash")),
        ("dfrac", frac_tex(v, "dfrac")),
    ]
    if v < 0:
        forms.append(("negative_numerator", frac_tex(v, "negnum")))
    if terminating(v) and len(decimal_tex(v)) <= 8 and n.kind != "decimal":
        forms.append(("exact_decimal", decimal_tex(v)))
        if abs(v) < 1:
            forms.append(("decimal_no_leading_zero", decimal_tex(v, leading_zero=False)))
        if abs(v) < Fraction(1, 1000):
            exp = 0
            w = abs(v)
            while w < 1:
                w, exp = w * 10, exp + 1
            sign = "-" if v < 0 else ""
            forms.append(("scientific", f"{sign}{decimal_tex(w)} \\times 10^{{-{exp}}}"))
    if abs(v) > 1:
        whole = int(abs(v))
        rest = abs(v) - whole
        sign = "-" if v < 0 else ""
        forms.append(("mixed_number", f"{sign}{whole}\\frac{{{rest.numerator}}}{{{rest.denominator}}}"))
    p, q = v.numerator, v.denominator
    if q < 200 and n.kind in ("frac", "mixed"):
        forms.append(("unsimplified_fraction", f"\\frac{{{3 * p}}}{{{3 * q}}}"))
    return forms


def decorate(n: Numeric, text: str, how: str) -> str:
    if how == "unit" and n.unit:
        return f"{text} \\text{{ {n.unit}}}{n.unit_pow}"
    if how == "unit_words" and n.unit and not n.unit_pow:
        return f"{text} {n.unit}"
    if how == "dollar":
        return f"\\${text}"
    if how == "degree":
        return f"{text}^\\circ"
    if how == "degree_braced":
        return f"{text}^{{\\circ}}"
    if how == "degree_unicode":
        return f"{text}°"
    if how == "degree_words":
        return f"{text} \\text{{ degrees}}"
    return text


def numeric_variants(n: Numeric, rng: random.Random) -> tuple[list, list]:
    v = n.value
    decos = ["bare"]
    if n.dollar:
        decos += ["dollar", "dollar"]
    if n.degree or (n.unit and "degree" in n.unit):
        decos += ["degree", "degree_braced", "degree_unicode", "degree_words"]
    elif n.unit:
        decos += ["unit", "unit_words"]
    good = []
    for cat, text in numeric_forms(n, v):
        for deco in rng.sample(decos, min(2, len(decos))) if cat != "mixed_number" else ["bare"]:
            label = cat if deco == "bare" else f"{cat}+{deco}"
            good.append((label, decorate(n, text, deco)))
    bad = []

    def add(cat: str, w: Fraction, text: str | None = None) -> None:
        if w != v:
            bad.append((cat, decorate(n, text or frac_tex(w), rng.choice(decos))))

    if v.denominator == 1:
        add("off_by_one", v + rng.choice((-1, 1)))
        add("off_by_ten_factor", v * 10)
        s = str(abs(int(v)))
        if len(s) >= 2 and s[-1] != s[-2]:
            sw = int(s[:-2] + s[-1] + s[-2]) * (1 if v >= 0 else -1)
            add("digits_transposed", Fraction(sw))
        if abs(v) >= 1000:
            add("off_by_one+thousands_comma", v + 1, commas(int(v + 1)))
    elif n.kind == "decimal":
        places = len(decimal_tex(v).split(".")[-1])
        add("last_digit_off", v + Fraction(1, 10**places), decimal_tex(v + Fraction(1, 10**places)))
        add("decimal_point_shifted", v * 10, decimal_tex(v * 10))
    else:
        p, q = v.numerator, v.denominator
        add("numerator_off_by_one", Fraction(p + 1, q), f"\\frac{{{p + 1}}}{{{q}}}")
        if p not in (1, -1, 0):
            add("reciprocal", 1 / v)
        add("denominator_off_by_one", Fraction(p, q + 1), f"\\frac{{{p}}}{{{q + 1}}}")
        if not terminating(v):
            add("rounded_decimal", Fraction(rounded(float(v), 2)), rounded(float(v), 2))
            add("rounded_decimal", Fraction(rounded(float(v), 3)), rounded(float(v), 3))
        else:
            add("decimal_point_shifted", v * 10, decimal_tex(v * 10))
        if n.kind == "mixed":
            whole = int(v)
            add("mixed_read_as_product", whole * (v - whole))
            add("dropped_whole_part", v - whole)
    if v != 0:
        add("wrong_sign", -v)
    if n.degree or (n.unit and "degree" in n.unit):
        add("supplementary_angle", 180 - v)
    return good, bad


def _surd(gold: str, rng: random.Random) -> tuple[list, list] | None:
    s = gold.strip()
    if m := re.fullmatch(r"(-)?\s*(\d+)?\s*\\sqrt\s*(?:\{(\d+)\}|(\d))", s):
        sign, c, r = m.group(1) or "", int(m.group(2) or 1), int(m.group(3) or m.group(4))
        good = [("sqrt_braced", f"{sign}{c if c > 1 else ''}\\sqrt{{{r}}}")]
        if c > 1:
            good += [("coefficient_into_sqrt", f"{sign}\\sqrt{{{c * c * r}}}")]
            good += [("cdot_product", f"{sign}{c} \\cdot \\sqrt{{{r}}}")]
            good += [("sqrt_times_coefficient", f"{sign}\\sqrt{{{r}}} \\cdot {c}")]
        good += [("sqrt_power_half", f"{sign}{c if c > 1 else ''}({r})^{{1/2}}")]
        val = c * r**0.5 * (-1 if sign else 1)
        bad = [
            ("radicand_off_by_one", f"{sign}{c if c > 1 else ''}\\sqrt{{{r + 1}}}"),
            ("dropped_sqrt", f"{sign}{c * r}"),
            ("decimal_approximation", rounded(val, 3)),
            ("squared_value", f"{c * c * r}"),
        ]
        if c > 1:
            bad.append(("dropped_coefficient", f"{sign}\\sqrt{{{r}}}"))
        return good, bad
    m = re.fullmatch(r"(-)?\\[dt]?frac\{\s*(\d+)?\s*\\sqrt\s*\{?(\d+)\}?\}\{(\d+)\}", s)
    if m:
        sign, c, r, d = m.group(1) or "", int(m.group(2) or 1), int(m.group(3)), int(m.group(4))
        cc = "" if c == 1 else str(c)
        good = [
            ("sqrt_over_slash", f"{sign}{cc}\\sqrt{{{r}}}/{d}"),
            ("coefficient_times_sqrt", f"{sign}\\frac{{{c}}}{{{d}}}\\sqrt{{{r}}}"),
            ("dfrac", f"{sign}\\dfrac{{{cc}\\sqrt{{{r}}}}}{{{d}}}"),
        ]
        if c == 1 and d == r:
            good.append(("unrationalized", f"{sign}\\frac{{1}}{{\\sqrt{{{r}}}}}"))
        if c == 1:
            good.append(("sqrt_of_fraction", f"{sign}\\sqrt{{\\frac{{{r}}}{{{d * d}}}}}"))
        val = c * r**0.5 / d * (-1 if sign else 1)
        bad = [
            ("denominator_off_by_one", f"{sign}\\frac{{{cc}\\sqrt{{{r}}}}}{{{d + 1}}}"),
            ("dropped_sqrt", f"{sign}\\frac{{{c * r}}}{{{d}}}"),
            ("decimal_approximation", rounded(val, 3)),
            ("reciprocal", f"{sign}\\frac{{{d}}}{{{cc}\\sqrt{{{r}}}}}"),
        ]
        return good, bad
    return None


def _pi(gold: str) -> tuple[list, list] | None:
    s = gold.strip()
    if m := re.fullmatch(r"(-)?\s*(\d+)?\s*\\pi", s):
        sign, c = m.group(1) or "", int(m.group(2) or 1)
        cc = "" if c == 1 else str(c)
        val = c * 3.141592653589793 * (-1 if sign else 1)
        good = [("pi_spaced", f"{sign}{cc} \\pi"), ("pi_unicode", f"{sign}{cc}π")]
        if c > 1:
            good.append(("pi_cdot", f"{sign}{c} \\cdot \\pi"))
        bad = [
            ("dropped_pi", f"{sign}{c}"),
            ("decimal_approximation", rounded(val, 2)),
            ("coefficient_doubled", f"{sign}{2 * c}\\pi"),
        ]
        if c > 1 and c % 2 == 0:
            bad.append(("coefficient_halved", f"{sign}{c // 2}\\pi"))
        return good, bad
    if m := re.fullmatch(r"(-)?\\[dt]?frac\{\s*(\d+)?\s*\\pi\s*\}\{(\d+)\}", s):
        sign, c, d = m.group(1) or "", int(m.group(2) or 1), int(m.group(3))
        cc = "" if c == 1 else str(c)
        val = c * 3.141592653589793 / d * (-1 if sign else 1)
        good = [
            ("pi_slash", f"{sign}{cc}\\pi/{d}"),
            ("pi_as_factor", f"{sign}\\frac{{{c}}}{{{d}}}\\pi"),
            (
                "negative_numerator" if sign else "dfrac",
                f"\\frac{{-{cc}\\pi}}{{{d}}}" if sign else f"\\dfrac{{{cc}\\pi}}{{{d}}}",
            ),
        ]
        bad = [
            ("denominator_changed", f"{sign}\\frac{{{cc}\\pi}}{{{d * 2}}}"),
            ("decimal_approximation", rounded(val, 3)),
            ("dropped_pi", f"{sign}\\frac{{{c}}}{{{d}}}"),
        ]
        if sign:
            bad.append(("wrong_sign", f"\\frac{{{cc}\\pi}}{{{d}}}"))
        return good, bad
    if m := re.fullmatch(r"\\[dt]?frac\{(\d+)\}\{\\pi\}", s):
        c = int(m.group(1))
        good = [("pi_slash", f"{c}/\\pi"), ("dfrac", f"\\dfrac{{{c}}}{{\\pi}}")]
        bad = [("decimal_approximation", rounded(c / 3.141592653589793, 2)), ("pi_in_numerator", f"{c}\\pi")]
        return good, bad
    return None


def _base(gold: str) -> tuple[list, list] | None:
    m = re.fullmatch(r"(\d+)_\{?(\d+)\}?", gold.strip())
    if not m:
        return None
    digits, b = m.group(1), int(m.group(2))
    last = (int(digits[-1]) + 1) % b
    good = [("base_subscript_braced", f"{digits}_{{{b}}}"), ("base_subscript_bare", f"{digits}_{b}")]
    bad = [
        ("last_digit_off", f"{digits[:-1]}{last}_{{{b}}}"),
        ("converted_to_decimal", str(int(digits, b))),
    ]
    return good, bad


_OPPOSITE = {
    "east": "west",
    "west": "east",
    "north": "south",
    "south": "north",
    "even": "odd",
    "odd": "even",
    "ellipse": "hyperbola",
    "hyperbola": "ellipse",
    "parabola": "ellipse",
    "circle": "ellipse",
    "line": "parabola",
    "yes": "no",
    "no": "yes",
}


def _text(gold: str, problem: str) -> tuple[list, list] | None:
    m = re.fullmatch(r"\\(?:text|mbox|textbf)\{\s*(.+?)\s*\}", gold.strip())
    if not m:
        return None
    word = m.group(1)
    if c := re.fullmatch(r"\(([A-E])\)", word):
        letter = c.group(1)
        other = "ABCDE"[("ABCDE".index(letter) + 1) % 5]
        good = [("choice_letter_bare", letter), ("choice_letter_text", f"\\text{{{letter}}}")]
        good.append(("choice_letter_bold", f"\\textbf{{({letter})}}"))
        bad = [("adjacent_choice", f"\\text{{({other})}}"), ("adjacent_choice_bare", other)]
        return good, bad
    good = [
        ("text_unwrapped", word),
        ("textbf", f"\\textbf{{{word}}}"),
        ("text_padded", f"\\text{{ {word} }}"),
    ]
    bad = []
    if word.lower() in _OPPOSITE:
        bad.append(("opposite_word", f"\\text{{{_OPPOSITE[word.lower()]}}}"))
    # capitalized words inside a sentence (not sentence-initial): names, places
    names = sorted({w for w in re.findall(r"(?<=[a-z,] )[A-Z][a-z]{2,}\b", problem) if w != word})
    if names and word[:1].isupper():
        bad.append(("other_name_in_problem", f"\\text{{{names[0]}}}"))
        bad.append(("other_name_in_problem_bare", names[-1]))
    return good, bad


def _matrix(gold: str) -> tuple[list, list] | None:
    m = re.fullmatch(r"\\begin\{pmatrix\}(.*)\\end\{pmatrix\}", gold.strip(), re.S)
    if not m:
        return None
    rows = [[e.strip() for e in r.split("&")] for r in m.group(1).split("\\\\")]

    def tex(rs: list[list[str]], env: str = "pmatrix") -> str:
        return f"\\begin{{{env}}} " + " \\\\ ".join(" & ".join(r) for r in rs) + f" \\end{{{env}}}"

    def refrac(e: str) -> str:
        return re.sub(r"^(-?)(\d+)/(\d+)$", r"\1\\frac{\2}{\3}", e)

    good = [
        ("bmatrix", tex(rows, "bmatrix")),
        ("entries_as_frac", tex([[refrac(e) for e in r] for r in rows])),
    ]
    good.append(("compact_spacing", tex(rows).replace(" ", "")))
    bad = []
    flat = [(i, j) for i, r in enumerate(rows) for j, e in enumerate(r) if e not in ("0", "-0")]
    if flat:
        i, j = flat[-1]
        neg = [r[:] for r in rows]
        neg[i][j] = neg[i][j][1:] if neg[i][j].startswith("-") else "-" + neg[i][j]
        bad.append(("one_entry_sign_flipped", tex(neg)))
    if len(rows) > 1 and len(rows[0]) == 1 and rows[0] != rows[1]:
        sw = [rows[1], rows[0], *rows[2:]]
        bad.append(("entries_swapped", tex(sw)))
    return good, bad


_IV = re.compile(r"^\s*(?:\\left\s*)?([\[(])\s*(.+?)\s*,\s*(.+?)\s*(?:\\right\s*)?([\])])\s*$")


def _interval(gold: str) -> tuple[list, list] | None:
    s = gold.strip()
    prefix = ""
    if m := re.match(r"^([a-z])\s*\\in\s*", s):
        prefix, s = m.group(0), s[m.end() :]
    pieces = [p.strip() for p in s.split("\\cup")]
    parsed = [_IV.match(p) for p in pieces]
    if not all(parsed):
        return None
    ivs = [p.groups() for p in parsed]
    is_interval = (
        bool(prefix) or len(ivs) > 1 or any(o == "[" or c == "]" or "infty" in a + b for o, a, b, c in ivs)
    )
    if not is_interval:
        return None

    def tex(xs: list[tuple], left_right: bool = False, spaced: bool = True) -> str:
        sep = ", " if spaced else ","
        if left_right:
            return " \\cup ".join(f"\\left{o} {a}{sep}{b} \\right{c}" for o, a, b, c in xs)
        return (" \\cup " if spaced else "\\cup").join(f"{o}{a}{sep}{b}{c}" for o, a, b, c in xs)

    good = [
        ("interval_left_right", prefix + tex(ivs, left_right=True)),
        ("interval_compact", prefix + tex(ivs, spaced=False)),
        ("interval_prefix_toggled", tex(ivs) if prefix else "x \\in " + tex(ivs)),
    ]
    if any("\\infty" in a + b for _, a, b, _ in ivs):
        good.append(("infty_unicode", prefix + tex(ivs).replace("\\infty", "∞")))
    bad = []
    for k, (o, a, b, c) in enumerate(ivs):
        if "infty" not in a:
            alt = [*ivs]
            alt[k] = ("[" if o == "(" else "(", a, b, c)
            bad.append(("left_bracket_swapped", prefix + tex(alt)))
        if "infty" not in b:
            alt = [*ivs]
            alt[k] = (o, a, b, "]" if c == ")" else ")")
            bad.append(("right_bracket_swapped", prefix + tex(alt)))
    if len(ivs) > 1:
        bad.append(("union_piece_dropped", prefix + tex(ivs[:1])))
        hull = [(ivs[0][0], ivs[0][1], ivs[-1][2], ivs[-1][3])]
        bad.append(("union_merged_into_hull", prefix + tex(hull)))
    return good, bad


def _tuple(gold: str, rng: random.Random) -> tuple[list, list] | None:
    s = gold.strip()
    m = re.fullmatch(r"(?:\\left\s*)?\((.*?)(?:\\right\s*)?\)", s, re.S)
    if not m or "\\cup" in s:
        return None
    inner = m.group(1)
    parts = [p.strip() for p in split_top(inner)]
    if len(parts) < 2:
        return None
    good = [
        ("tuple_left_right", "\\left( " + ", ".join(parts) + " \\right)"),
        ("tuple_compact", "(" + ",".join(parts) + ")"),
        ("tuple_spaced", "(" + ", ".join(parts) + ")"),
    ]
    for k, p in enumerate(parts):
        fr = _FRAC.match(p)
        if fr and not fr.group(1):
            alt = [*parts]
            alt[k] = f"{fr.group(2) or fr.group(3)}/{fr.group(4) or fr.group(5)}"
            good.append(("tuple_component_slash_frac", "(" + ", ".join(alt) + ")"))
    bad = []
    if parts[0] != parts[1]:
        bad.append(("components_swapped", "(" + ", ".join([parts[1], parts[0], *parts[2:]]) + ")"))
    k = rng.randrange(len(parts))
    if parts[k] not in ("0",):
        alt = [*parts]
        alt[k] = alt[k][1:] if alt[k].startswith("-") else "-" + alt[k]
        bad.append(("one_component_sign_flipped", "(" + ", ".join(alt) + ")"))
    if len(parts) > 2:
        bad.append(("component_missing", "(" + ", ".join(parts[:-1]) + ")"))
    bad.append(("round_to_square_brackets", "[" + ", ".join(parts) + "]") if len(parts) == 2 else ("x", ""))
    return good, [b for b in bad if b[1]]


def _expand_pm(e: str) -> list[str] | None:
    if "\\pm" not in e:
        return None
    a, b = e.split("\\pm", 1)
    return [f"{a.strip()} + {b.strip()}", f"{a.strip()} - {b.strip()}"]


def _list(gold: str) -> tuple[list, list] | None:
    s = gold.strip()
    braced = s.startswith("\\{") and s.endswith("\\}")
    if braced:
        s = s[2:-2]
    parts = [p.strip() for p in split_top(s)]
    if len(parts) < 2 and "\\pm" not in s:
        return None
    elems = []
    for p in parts:
        elems += _expand_pm(p) or [p]
    good = [
        ("list_reordered", ", ".join(reversed(elems))),
        ("list_expanded" if len(elems) > len(parts) else "list_compact", ",".join(elems)),
        ("set_braces", "\\{" + ", ".join(elems) + "\\}"),
    ]
    if len(elems) > 2:
        good.append(("list_rotated", ", ".join(elems[1:] + elems[:1])))
    if not braced and len(elems) > 1 and len(parts) == len(elems):
        good.append(("list_with_and", ", ".join(elems[:-1]) + " \\text{ and } " + elems[-1]))
    bad = [("partial_list", elems[0]), ("partial_list", ", ".join(elems[:-1]))]
    for k in range(len(elems)):
        e = elems[k]
        if re.fullmatch(r"-?\d+", e) and e != "0":
            alt = [*elems]
            alt[k] = e[1:] if e.startswith("-") else "-" + e
            if sorted(alt) != sorted(elems):
                bad.append(("one_element_sign_flipped", ", ".join(alt)))
            break
    if len(elems) > len(parts):
        bad.append(("pm_root_only", elems[0]))
    return good, [b for b in bad if b[1] and b[1] != ", ".join(elems)]


def _equation(gold: str, rng: random.Random) -> tuple[list, list] | None:
    if gold.count("=") != 1 or "\\in" in gold:
        return None
    lhs, rhs = (x.strip() for x in gold.split("="))
    good, bad = [("equation_compact", f"{lhs}={rhs}")], []
    if re.fullmatch(r"[a-z]", lhs) and re.fullmatch(r"-?\d+(\.\d+)?", rhs):
        good.append(("variable_prefix_dropped", rhs))
        bad.append(
            ("off_by_one", f"{lhs} = {int(rhs) + 1}" if rhs.lstrip("-").isdigit() else f"{lhs} = -{rhs}")
        )
        return good, bad
    side, other, left = (lhs, rhs, True) if len(terms(lhs)) > 1 else (rhs, lhs, False)
    ts = terms(side)
    if len(ts) > 1:
        re_ = join_terms(list(reversed(ts)))
        good.append(("terms_reordered", f"{re_} = {other}" if left else f"{other} = {re_}"))
        fl = join_terms([*ts[:-1], flip(ts[-1])])
        bad.append(("term_sign_flipped", f"{fl} = {other}" if left else f"{other} = {fl}"))
    if (b := bump_digit(gold, rng)) and b != gold:
        bad.append(("coefficient_typo", b))
    if not left and len(ts) == 1:
        bad.append(("wrong_sign", f"{lhs} = {flip(rhs).lstrip('+')}"))
    return good, bad


def _expression(gold: str, rng: random.Random) -> tuple[list, list]:
    s = gold.strip()
    good, bad = [], []
    ts = terms(s)
    if len(ts) > 1:
        good.append(("terms_reordered", join_terms(list(reversed(ts)))))
        good.append(("terms_compact", join_terms(ts, spaced=False)))
        bad.append(("term_sign_flipped", join_terms([*ts[:-1], flip(ts[-1])])))
        bad.append(("term_dropped", join_terms(ts[:-1])))
    elif m := re.fullmatch(r"\(([^()]*)\)\(([^()]*)\)", s):
        good.append(("factors_swapped", f"({m.group(2)})({m.group(1)})"))
        good.append(("factors_cdot", f"({m.group(1)}) \\cdot ({m.group(2)})"))
        bad.append(("factor_sign_flipped", f"({m.group(1)})({flip_inner(m.group(2))})"))
    else:
        good.append(("spacing", s.replace(" ", "") if "\\" not in s else f" {s} "))
        bad.append(("wrong_sign", flip(s).lstrip("+")))
    if (b := bump_digit(s, rng)) and b != s:
        bad.append(("coefficient_typo", b))
    return good, bad


def flip_inner(e: str) -> str:
    ts = terms(e)
    return join_terms([*ts[:-1], flip(ts[-1])], spaced=False) if len(ts) > 1 else "-" + e


def answer_variants(gold: str, problem: str, rng: random.Random) -> tuple[str, list, list]:
    """(shape, correct variants, wrong variants) for one gold; variants are (category, text)."""
    if n := parse_numeric(gold):
        return "number", *numeric_variants(n, rng)
    for shape, fn in (
        ("surd", lambda: _surd(gold, rng)),
        ("pi", lambda: _pi(gold)),
        ("base", lambda: _base(gold)),
        ("text", lambda: _text(gold, problem)),
        ("matrix", lambda: _matrix(gold)),
        ("interval", lambda: _interval(gold)),
        ("tuple", lambda: _tuple(gold, rng)),
        ("equation", lambda: _equation(gold, rng)),
        ("list", lambda: _list(gold)),
    ):
        if (res := fn()) is not None:
            return shape, *res
    return "expression", *_expression(gold, rng)


# ---------------------------------------------------------------------------------------------
# model outputs


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z$\\])", text.strip()) if s]


def gsm8k_steps(answer: str) -> list[str]:
    body = answer.split("####")[0]
    return [re.sub(r"<<[^>]*>>", "", line).strip() for line in body.splitlines() if line.strip()]


def _mentions(text: str, gold: str) -> bool:
    g = gold.replace(" ", "")
    t = text.replace(" ", "")
    if re.fullmatch(r"-?[\d,]+", gold):
        return re.search(rf"(?<![\d.]){re.escape(gold)}(?![\d]|\.\d)", text) is not None
    return g in t


class Writer:
    """Builds the model outputs of one record (its reasoning text and the wrappers)."""

    def __init__(self, source: str, rec: dict, gold: str, rng: random.Random, others: list[dict]):
        self.source, self.rec, self.gold, self.rng, self.others = source, rec, gold, rng, others
        if source == "math500":
            self.steps = sentences(unbox(rec["solution"]))
        else:
            self.steps = gsm8k_steps(rec["answer"])

    # reasoning bodies ------------------------------------------------------------------------
    def body_right(self) -> str:
        """The full reasoning (it reaches the gold)."""
        return ("\n" if self.source == "gsm8k" else " ").join(self.steps)

    def body_neutral(self) -> str:
        """Reasoning that does not mention the gold (a model that went wrong somewhere)."""
        keep = [s for s in self.steps if not _mentions(s, self.gold)]
        if not keep:
            keep = ["Let me work through the problem step by step."]
        n = max(1, min(len(keep), self.rng.randint(1, 4)))
        return ("\n" if self.source == "gsm8k" else " ").join(keep[:n])

    # wrappers -------------------------------------------------------------------------------
    def wrap(self, protocol: str, body: str, ans: str, flavour: int | None = None) -> str:
        r = self.rng
        f = r.randrange(3) if flavour is None else flavour
        if protocol == "minerva":
            final = (f"${ans}$", ans, f"$\\boxed{{{ans}}}$")[f]
            return f"{body}\nFinal Answer: The final answer is {final}. I hope it is correct."
        if protocol == "answer_is":
            return f"{body}\n{'The answer is' if f != 2 else 'The answer is:'} {ans}."
        think = f"<think>\n{body}\n</think>\n\n" if f != 1 else f"{body}\n\n"
        end = (
            f"**Final Answer**\n\\[\n\\boxed{{{ans}}}\n\\]",
            f"Therefore, the answer is $\\boxed{{{ans}}}$.",
            f"The final answer is $\\boxed{{{ans}}}$",
        )[f]
        return think + end


def _other_numbers(steps: list[str], gold: str) -> list[str]:
    """Intermediate results in the reasoning (after '='), excluding the gold's value."""
    g = gold.replace(",", "")
    out = []
    for s in steps:
        for m in re.finditer(r"=\s*\$?(-?\d[\d,]*(?:\.\d+)?)", s):
            x = m.group(1).replace(",", "").rstrip(".")
            try:
                if Fraction(x) != Fraction(g) and x not in out:
                    out.append(x)
            except (ValueError, ZeroDivisionError):
                pass
    return out


_NOT_UNITS = {"and", "the", "for", "more", "less", "left", "times", "per", "each", "total"}


def _gsm8k_correct_forms(gold: str, steps: list[str]) -> list[tuple[str, str]]:
    """Forms of a GSM8K gold. ``$`` marks a dollar sign (``\\$`` inside a box, ``$`` in text)."""
    v = int(gold.replace(",", ""))
    forms = [("plain", str(v))]
    if abs(v) >= 1000:
        forms.append(("thousands_comma", commas(v)))
    last = steps[-1] if steps else ""
    num = re.escape(str(v)) + r"|" + re.escape(commas(v))
    if re.search(rf"\$\s*(?:{num})(?![\d,])", last):
        forms += [("dollar_sign", f"${v}"), ("dollar_cents", f"${v}.00"), ("dollars_word", f"{v} dollars")]
        if abs(v) >= 1000:
            forms.append(("dollar_thousands_comma", f"${commas(v)}"))
    elif (m := re.search(rf"(?<![\d.])(?:{num})\s*([a-z]{{3,}})\b", last)) and m.group(1) not in _NOT_UNITS:
        forms.append(("unit_word", f"{v} {m.group(1)}"))
        forms.append(("unit_text", f"{v} \\text{{ {m.group(1)}}}"))
    forms.append(("trailing_zero", f"{v}.0"))
    return forms


def _for_protocol(text: str, protocol: str) -> str:
    """Plain-text CoT writes ``$18`` and ``18 eggs``; inside a box it is ``\\$18``."""
    if protocol == "answer_is":
        return re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", text).replace("  ", " ")
    return text.replace("$", "\\$")


def _gsm8k_wrong_forms(gold: str, steps: list[str], rng: random.Random) -> list[tuple[str, str]]:
    v = int(gold.replace(",", ""))
    out = [("off_by_one", str(v + rng.choice((-1, 1)))), ("off_by_ten_factor", str(v * 10))]
    if v:
        out.append(("wrong_sign", str(-v)))
    s = str(abs(v))
    if len(s) >= 2 and s[-1] != s[-2]:
        out.append(("digits_transposed", ("-" if v < 0 else "") + s[:-2] + s[-1] + s[-2]))
    out.append(("near_decimal", f"{v}.5"))
    if abs(v) >= 1000:
        out.append(("off_by_one+thousands_comma", commas(v + 1)))
    mids = _other_numbers(steps, gold)
    if mids:
        out.append(("intermediate_result", rng.choice(mids)))
    return out


def record_pairs(source: str, rec: dict, rng: random.Random, others: list[dict]) -> list[HeldoutPair]:
    gold = rec["answer"].strip() if source == "math500" else rec["answer"].split("####")[-1].strip()
    problem = rec.get("problem") or rec.get("question", "")
    w = Writer(source, rec, gold, rng, others)
    if source == "math500":
        shape, good, bad = answer_variants(gold, problem, rng)
        good = [("identical", gold), *good]
    else:
        shape = "integer"
        good, bad = _gsm8k_correct_forms(gold, w.steps), _gsm8k_wrong_forms(gold, w.steps, rng)
    ask = r"(?:value of|[Ff]ind|[Ss]olve for|[Cc]ompute|[Ww]hat is) \$([a-zA-Z])\$[?.,]"
    n = parse_numeric(gold) if source == "math500" else None
    if n and not (n.dollar or n.degree or n.unit) and (m := re.search(ask, problem)):
        # "x = 5" for a problem that asks for a named variable's value
        good.append(("variable_prefix", f"{m.group(1)} = {gold}"))
    seen: set[str] = set()
    good = [(c, t) for c, t in good if t.strip() and not (t in seen or seen.add(t))]
    bad = [(c, t) for c, t in bad if t.strip() and t.strip() != gold]
    protocols = SOURCES[source]
    out: list[HeldoutPair] = []

    def add(cat: str, protocol: str, output: str, correct: bool) -> None:
        out.append(
            HeldoutPair(source, f"{shape}/{cat}" if "/" not in cat else cat, protocol, gold, output, correct)
        )

    # surface forms: up to 3 correct and 3 wrong, each under a random protocol of the source
    for cat, text in rng.sample(good, min(PER_RECORD, len(good))):
        p = rng.choice(protocols)
        text = _for_protocol(text, p) if source == "gsm8k" else text
        add(f"correct:{cat}", p, w.wrap(p, w.body_right(), text), True)
    for cat, text in rng.sample(bad, min(PER_RECORD - 1, len(bad))):
        p = rng.choice(protocols)
        add(f"wrong:{cat}", p, w.wrap(p, w.body_neutral(), text), False)

    # protocol-level categories (the gold string or a wrong variant, where the answer sits)
    wrong = rng.choice(bad)[1] if bad else None
    p = rng.choice(protocols)
    roll = rng.random()
    if wrong and roll < 0.22:
        # the right value stated in the reasoning, then a different final answer
        add("protocol/wrong:right_value_earlier_final_differs", p, w.wrap(p, w.body_right(), wrong), False)
    elif wrong and roll < 0.34:
        p = "boxed"
        body = w.body_right()
        out_text = f"{body}\n\nSo the answer is $\\boxed{{{gold}}}$.\n\nWait, let me double-check that. "
        out_text += f"Actually I made an error above; recomputing gives\n\n\\[\n\\boxed{{{wrong}}}\n\\]"
        add("protocol/wrong:boxed_right_first_then_revised_wrong", p, out_text, False)
    elif wrong and roll < 0.46:
        p = "boxed"
        out_text = (
            f"{w.body_neutral()}\n\nThis gives $\\boxed{{{wrong}}}$.\n\nHmm, wait. Let me recheck that step. "
        )
        out_text += f"{w.body_right()}\n\nSo the correct answer is $\\boxed{{{gold}}}$."
        add("protocol/correct:boxed_wrong_first_then_revised_right", p, out_text, True)
    elif roll < 0.58:
        # right answer, but outside the protocol's answer slot
        if p == "boxed":
            sent = "The final answer is" if source == "math500" else "The answer is"
            add("protocol/wrong:no_box_answer_in_text", p, f"{w.body_right()}\n\n{sent} ${gold}$.", False)
        elif p == "minerva":
            # Relabelled by the project's protocol policy (issue 17 finding 8, decided by the lead):
            # under ``minerva`` a completion without the "Final Answer" line is read from its last
            # \boxed{}, so a boxed-only right answer is correct (the original label here was wrong).
            text = f"{w.body_right()} Therefore the answer is $\\boxed{{{gold}}}$."
            add("protocol/correct:boxed_only_no_final_answer_line", p, text, True)
        else:
            add("protocol/wrong:no_answer_is_boxed_only", p, f"{w.body_right()}\n\\boxed{{{gold}}}", False)
    elif roll < 0.76:
        # few-shot run-on: correct final answer, then the model starts the next exemplar
        o = rng.choice(others)
        if source == "math500":
            p = "minerva"
            nxt = (
                f"\n\nProblem:\n{o['problem']}\n\nSolution:\n{' '.join(sentences(unbox(o['solution']))[:3])}"
            )
            nxt += f"\nFinal Answer: The final answer is ${o['answer']}$. I hope it is correct."
        else:
            p = "answer_is"
            osteps = gsm8k_steps(o["answer"])
            nxt = f"\n\nQ: {o['question']}\nA: " + " ".join(osteps)
            nxt += f" The answer is {o['answer'].split('####')[-1].strip()}."
        if o is not rec:
            add(
                "protocol/correct:fewshot_runon_next_problem",
                p,
                w.wrap(p, w.body_right(), gold, 0) + nxt,
                True,
            )
    else:
        # truncated mid-reasoning (max tokens): no final answer
        full = w.body_right()
        cut = full[: max(20, int(len(full) * rng.uniform(0.35, 0.9)))]
        cut = cut.rsplit(" ", 1)[0]
        if p == "boxed":
            cut = "<think>\n" + cut
        add("protocol/wrong:truncated_no_final_answer", p, cut, False)
        if rng.random() < 0.5:
            # truncated right after the reasoning first states the gold value
            idx = [k for k, s in enumerate(w.steps) if _mentions(s, gold)]
            if idx:
                sep = "\n" if source == "gsm8k" else " "
                text = sep.join(w.steps[: idx[0] + 1]).rstrip(".")
                add("protocol/wrong:truncated_right_after_gold_value", p, text, False)
    return out


def heldout_pairs(data_dir: str | Path, seed: int = 0) -> list[HeldoutPair]:
    """All MATH500 golds and a seeded sample of GSM8K golds, ~3,000 labelled pairs."""
    data_dir = Path(data_dir)

    def rows(name: str) -> list[dict]:
        path = data_dir / name / "test.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    rng = random.Random(f"heldout-pairs/{seed}")
    math500 = rows("math500")
    gsm8k_all = rows("gsm8k")
    gsm8k = rng.sample(gsm8k_all, GSM8K_RECORDS)
    pairs: list[HeldoutPair] = []
    for source, recs, pool in (("math500", math500, math500), ("gsm8k", gsm8k, gsm8k_all)):
        for rec in recs:
            pairs += record_pairs(source, rec, rng, pool)
    return pairs


if __name__ == "__main__":
    import argparse
    from collections import Counter

    ap = argparse.ArgumentParser(description="Summarize (or dump) the held-out pairs")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/eval"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", default=None, help="print the pairs whose category contains this")
    a = ap.parse_args()
    ps = heldout_pairs(a.data_dir, a.seed)
    print(len(ps), "pairs", sum(p.correct for p in ps), "correct")
    for (src, cat), k in sorted(Counter((p.source, p.category) for p in ps).items()):
        print(f"{k:5d} {src}/{cat}")
    if a.show:
        for p in ps:
            if a.show in p.category:
                print("----", p.category, p.protocol, p.correct, "gold:", p.gold)
                print(p.output[-300:])
