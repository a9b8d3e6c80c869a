"""Code templates over strings: words, vowels, palindromes, Caesar shifts, run-length encoding."""

from __future__ import annotations

import random

from ._codecore import CodeTask, build, mixed_case, sentence, template

TEXT_ARGS = ("text", "sentence", "s")


@template
def reverse_words(rng: random.Random) -> CodeTask:
    """Reverse the order of words."""
    return build(
        rng, "reverse_words", ("reverse_words", "flip_word_order", "words_backwards"), [(TEXT_ARGS, "str")], "str",
        "Return the words of {a0} in reverse order, separated by single spaces.",
        ["    return ' '.join(reversed({a0}.split()))\n",
         "    words = {a0}.split()\n    words.reverse()\n    return ' '.join(words)\n"],
        lambda s: " ".join(s.split()[::-1]), lambda r: (sentence(r),),
    )  # fmt: skip


@template
def count_vowels(rng: random.Random) -> CodeTask:
    """Count vowels from a configurable vowel set."""
    vowels = rng.choice(["aeiou", "aeiouy"])
    return build(
        rng, "count_vowels", ("count_vowels", "vowel_count", "num_vowels"), [(("text", "word", "s"), "str")], "int",
        f"Count how many characters of {{a0}} are vowels ({', '.join(vowels)}), ignoring case.",
        [f"    return sum(1 for ch in {{a0}}.lower() if ch in {vowels!r})\n",
         f"    total = 0\n    for ch in {{a0}}.lower():\n        if ch in {vowels!r}:\n            total += 1\n    return total\n"],
        lambda s: sum(1 for c in s.lower() if c in vowels), lambda r: (mixed_case(r, sentence(r, 3)),),
        constants=(vowels,),
    )  # fmt: skip


def _palindrome_input(rng: random.Random) -> tuple[str]:
    """A palindrome (strict or punctuated) or an ordinary phrase."""
    kind = rng.randrange(3)
    if kind == 0:
        half = "".join(rng.choice("abcr") for _ in range(rng.randint(0, 4)))
        return (half + rng.choice(["", "x"]) + half[::-1],)
    if kind == 1:
        word = rng.choice(
            ["Race car", "Step on no pets", "Never odd or even", "A Santa at NASA", "No lemon, no melon"]
        )
        return (word,)
    return (sentence(rng, 3),)


@template
def is_palindrome(rng: random.Random) -> CodeTask:
    """Palindrome test, strict or ignoring case and punctuation."""
    loose = rng.random() < 0.5
    if loose:
        summary = "Return True if {a0} reads the same forwards and backwards when case and non-alphanumeric characters are ignored."
        bodies = ["    cleaned = [ch.lower() for ch in {a0} if ch.isalnum()]\n    return cleaned == cleaned[::-1]\n",
                  "    kept = ''.join(ch for ch in {a0}.lower() if ch.isalnum())\n    return kept == kept[::-1]\n"]  # fmt: skip

        def ref(s: str) -> bool:
            """Reference: palindrome ignoring case and punctuation."""
            kept = [c.lower() for c in s if c.isalnum()]
            return kept == kept[::-1]
    else:
        summary = "Return True if {a0} is exactly the same string when reversed (every character counts, case-sensitive)."
        bodies = ["    return {a0} == {a0}[::-1]\n",
                  "    i, j = 0, len({a0}) - 1\n    while i < j:\n        if {a0}[i] != {a0}[j]:\n            return False\n        i += 1\n        j -= 1\n    return True\n"]  # fmt: skip

        def ref(s: str) -> bool:
            """Reference: strict palindrome."""
            return s == s[::-1]

    return build(
        rng, "is_palindrome", ("is_palindrome", "reads_same_backwards", "check_palindrome"), [(("text", "s", "word"), "str")],
        "bool", summary, bodies, ref, _palindrome_input, constants=(loose,),
    )  # fmt: skip


@template
def caesar_shift(rng: random.Random) -> CodeTask:
    """Shift lowercase letters by a fixed amount."""
    k = rng.randint(1, 25)
    return build(
        rng, "caesar_shift", ("caesar_shift", "shift_letters", "rotate_letters", "encode_shift"), [(("text", "message", "s"), "str")], "str",
        f"Shift every lowercase letter a-z of {{a0}} forward by {k} positions in the alphabet, wrapping around from 'z' to 'a'. All other characters are unchanged.",
        [f"    out = []\n    for ch in {{a0}}:\n        if 'a' <= ch <= 'z':\n            out.append(chr((ord(ch) - ord('a') + {k}) % 26 + ord('a')))\n        else:\n            out.append(ch)\n    return ''.join(out)\n",
         f"    return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if 'a' <= c <= 'z' else c for c in {{a0}})\n"],
        lambda s: "".join(chr((ord(c) - 97 + k) % 26 + 97) if "a" <= c <= "z" else c for c in s),
        lambda r: (sentence(r, 3) + r.choice(["", "!", ", ok", " XY"]),), constants=(k,),
    )  # fmt: skip


@template
def count_long_words(rng: random.Random) -> CodeTask:
    """Count words longer than a threshold."""
    n = rng.randint(2, 6)
    return build(
        rng, "count_long_words", ("count_long_words", "long_word_count", "words_longer_than_" + str(n)), [(TEXT_ARGS, "str")], "int",
        f"Count the words of {{a0}} (split on whitespace) that have more than {n} characters.",
        [f"    return sum(1 for w in {{a0}}.split() if len(w) > {n})\n",
         f"    count = 0\n    for word in {{a0}}.split():\n        if len(word) > {n}:\n            count += 1\n    return count\n"],
        lambda s: sum(1 for w in s.split() if len(w) > n), lambda r: (sentence(r, 7),), constants=(n,),
    )  # fmt: skip


@template
def title_case(rng: random.Random) -> CodeTask:
    """Capitalise each word."""
    return build(
        rng, "title_case", ("title_case", "capitalize_words", "to_title"), [(TEXT_ARGS, "str")], "str",
        "Capitalise the first letter of every word of {a0} and lower-case the rest of the word; return the words joined by single spaces.",
        ["    return ' '.join(w[:1].upper() + w[1:].lower() for w in {a0}.split())\n",
         "    words = []\n    for w in {a0}.split():\n        words.append(w[0].upper() + w[1:].lower())\n    return ' '.join(words)\n"],
        lambda s: " ".join(w[:1].upper() + w[1:].lower() for w in s.split()), lambda r: (mixed_case(r, sentence(r, 5)),),
    )  # fmt: skip


@template
def count_char(rng: random.Random) -> CodeTask:
    """Occurrences of one character."""
    return build(
        rng, "count_char", ("count_char", "occurrences", "char_frequency"), [(TEXT_ARGS, "str"), (("ch", "target", "c"), "str")], "int",
        "Return how many times the single character {a1} occurs in {a0} (case-sensitive).",
        ["    return {a0}.count({a1})\n",
         "    total = 0\n    for x in {a0}:\n        if x == {a1}:\n            total += 1\n    return total\n"],
        lambda s, c: s.count(c), lambda r: (sentence(r, 4), r.choice("aeostn ")),
    )  # fmt: skip


@template
def run_length(rng: random.Random) -> CodeTask:
    """Run-length encoding as char+count pairs."""
    return build(
        rng, "run_length", ("run_length_encode", "rle", "compress_runs"), [(TEXT_ARGS, "str")], "str",
        "Run-length encode {a0}: replace each maximal run of a repeated character by the character followed by the run length, e.g. 'aab' becomes 'a2b1'.",
        ["    out = []\n    i = 0\n    while i < len({a0}):\n        j = i\n        while j < len({a0}) and {a0}[j] == {a0}[i]:\n            j += 1\n        out.append({a0}[i] + str(j - i))\n        i = j\n    return ''.join(out)\n",
         "    if not {a0}:\n        return ''\n    out = ''\n    prev, count = {a0}[0], 0\n    for ch in {a0}:\n        if ch == prev:\n            count += 1\n        else:\n            out += prev + str(count)\n            prev, count = ch, 1\n    return out + prev + str(count)\n"],
        _rle, lambda r: ("".join(r.choice("ab") * r.randint(1, 4) for _ in range(r.randint(0, 4))),),
    )  # fmt: skip


def _rle(s: str) -> str:
    """Reference run-length encoder."""
    out, i = "", 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        out += f"{s[i]}{j - i}"
        i = j
    return out


@template
def remove_vowels(rng: random.Random) -> CodeTask:
    """Drop vowels from a string."""
    return build(
        rng, "remove_vowels", ("remove_vowels", "strip_vowels", "without_vowels"), [(TEXT_ARGS, "str")], "str",
        "Return {a0} with every vowel (a, e, i, o, u, in either case) removed; all other characters stay in order.",
        ["    return ''.join(ch for ch in {a0} if ch.lower() not in 'aeiou')\n",
         "    kept = []\n    for ch in {a0}:\n        if ch.lower() not in 'aeiou':\n            kept.append(ch)\n    return ''.join(kept)\n"],
        lambda s: "".join(c for c in s if c.lower() not in "aeiou"), lambda r: (mixed_case(r, sentence(r, 4)),),
    )  # fmt: skip


@template
def longest_word(rng: random.Random) -> CodeTask:
    """The first longest word."""
    return build(
        rng, "longest_word", ("longest_word", "find_longest_word", "max_word"), [(TEXT_ARGS, "str")], "str",
        "Return the longest word of {a0} (split on whitespace); if several are equally long return the first one, and return '' for a text without words.",
        ["    best = ''\n    for w in {a0}.split():\n        if len(w) > len(best):\n            best = w\n    return best\n",
         "    return max({a0}.split(), key=len, default='')\n"],
        lambda s: max(s.split(), key=len, default=""), lambda r: (sentence(r, 6),),
    )  # fmt: skip
