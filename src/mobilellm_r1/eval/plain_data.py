"""Plain data across a trust boundary: values of exact builtin types, as JSON that names each type.

A candidate program's return values cross into the checker (another process, or the harness) only in
this form: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes`` and ``list``,
``tuple``, ``set``, ``frozenset``, ``dict`` of those, checked recursively with ``type(x) is T`` (a
subclass, e.g. an ``int`` whose ``__eq__`` is always true, is refused). :func:`decode_plain` rebuilds
only those types from the JSON tree, so nothing the candidate defined ever runs in the checker. Ints
travel in hex (no digit limit), floats as ``float.hex`` (exact, inf and nan included).

Both functions are self-contained (they only use ``json``): the sandbox harnesses embed their source.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def encode_plain(
    value: Any, ref: Callable[[Any], Any] | None = None, max_items: int = 1_000_000, max_depth: int = 200
) -> str:
    """JSON text of ``value``; TypeError for a non-plain value that ``ref`` (if given) does not map to
    a JSON reference, ValueError past ``max_items`` nodes or ``max_depth`` levels."""
    import collections

    budget = [max_items]
    sequences = {list: "l", tuple: "t", set: "S", frozenset: "F"}
    mappings = (dict, collections.Counter, collections.OrderedDict, collections.defaultdict)

    def enc(v: Any, depth: int) -> list:
        budget[0] -= 1
        if budget[0] < 0 or depth > max_depth:
            raise ValueError("value too large or nested too deeply to return")
        t = type(v)
        if v is None:
            return ["n"]
        if t is bool or t is str:
            return ["b" if t is bool else "s", v]
        if t is int:
            return ["i", hex(v)]
        if t is float:
            return ["f", v.hex()]
        if t is complex:
            return ["c", v.real.hex(), v.imag.hex()]
        if t is bytes:
            return ["y", v.hex()]
        if t in sequences:
            return [sequences[t], [enc(x, depth + 1) for x in v]]
        if t in mappings:
            return ["d", [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in dict.items(v)]]
        handle = ref(v) if ref is not None else None
        if handle is None:
            raise TypeError(f"a {t.__name__} is not plain data")
        return ["r", handle]

    return json.dumps(enc(value, 0))


def decode_plain(text: str | bytes, ref: Callable[[Any], Any] | None = None) -> Any:
    """Rebuild a value from :func:`encode_plain`'s JSON; ValueError for anything malformed.

    ``["r", handle]`` nodes become ``ref(handle)`` when ``ref`` is given, else they are malformed.
    """
    scalars = {"b": bool, "s": str}
    sequences = {"l": list, "t": tuple, "S": set, "F": frozenset}

    def dec(node: Any) -> Any:
        if type(node) is not list or not node or node[0] not in "nbsifcyltSFdr":
            raise ValueError("malformed plain data")
        tag, args = node[0], node[1:]
        if tag == "n" and not args:
            return None
        if tag in scalars and len(args) == 1 and type(args[0]) is scalars[tag]:
            return args[0]
        if tag in "ify" and len(args) == 1 and type(args[0]) is str:
            return {"i": lambda s: int(s, 16), "f": float.fromhex, "y": bytes.fromhex}[tag](args[0])
        if tag == "c" and len(args) == 2 and all(type(a) is str for a in args):
            return complex(float.fromhex(args[0]), float.fromhex(args[1]))
        if tag in sequences and len(args) == 1 and type(args[0]) is list:
            return sequences[tag](dec(x) for x in args[0])
        if tag == "d" and len(args) == 1 and type(args[0]) is list:
            pairs = [x for x in args[0] if type(x) is list and len(x) == 2]
            if len(pairs) != len(args[0]):
                raise ValueError("malformed plain data")
            return {dec(k): dec(v) for k, v in pairs}
        if tag == "r" and ref is not None and len(args) == 1:
            return ref(args[0])
        raise ValueError("malformed plain data")

    try:
        return dec(json.loads(text))
    except (TypeError, RecursionError, OverflowError) as exc:  # unhashable keys, depth, huge exponents
        raise ValueError(f"malformed plain data: {exc}") from None
