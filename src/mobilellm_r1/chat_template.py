"""Chat templates (Jinja) rendered as untrusted code: they come with checkpoints.

Rendering runs in Jinja's immutable sandbox (no attribute writes, no private attributes, ranges
of at most 100,000 items) configured like transformers' renderer, and within limits: at most
`TEMPLATE_MAX_STEPS` lines of template code (nested loops that would run for hours stop in
about a second), `TEMPLATE_MAX_SECONDS` of wall time and `TEMPLATE_MAX_CHARS` characters of
output; `*` and `**` may not build a sequence or number beyond those sizes. Any failure is a
one-line `TemplateError` (a ValueError).

Not covered: a single C-level call that is slow or large by itself (e.g. a string method with a
huge width argument) runs to its end before the next check.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from typing import Any

import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_MAX_STEPS = 1_000_000
TEMPLATE_MAX_CHARS = 10_000_000
TEMPLATE_MAX_SECONDS = 10.0


class TemplateError(ValueError):
    """A chat template that does not compile, fails, or exceeds a limit."""


def _hf_tojson(value: Any, ensure_ascii: bool = False, **kwargs: Any) -> str:
    """The ``tojson`` filter as transformers defines it for chat templates (no HTML escaping)."""
    return json.dumps(value, ensure_ascii=ensure_ascii, **kwargs)


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, where `*` and `**` cannot build huge strings, lists or numbers."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and _repeat_size(left, right) > TEMPLATE_MAX_CHARS:
            raise jinja2.exceptions.SecurityError(f"a product of over {TEMPLATE_MAX_CHARS:,} items")
        if operator == "**" and _power_bits(left, right) > 64 * 1024:
            raise jinja2.exceptions.SecurityError("a power of over 64 kbit")
        return super().call_binop(context, operator, left, right)


def _repeat_size(left: Any, right: Any) -> int:
    """Items in `left * right` when it repeats a sequence, else 0."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
            return len(seq) * max(times, 0)
    return 0


def _power_bits(base: Any, exponent: Any) -> float:
    """About how many bits `base ** exponent` takes for integers (0 otherwise)."""
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        return exponent * math.log2(abs(base))
    return 0


class _RenderLimit:
    """A `sys.settrace` hook that stops template code after too many lines run or too much time."""

    def __init__(self) -> None:
        self.steps, self.deadline = 0, time.monotonic() + TEMPLATE_MAX_SECONDS

    def __call__(self, frame: Any, event: str, arg: Any) -> Any:
        return self.line if frame.f_code.co_filename == "<template>" else None

    def line(self, frame: Any, event: str, arg: Any) -> Any:
        self.steps += 1
        if self.steps > TEMPLATE_MAX_STEPS:
            raise jinja2.exceptions.SecurityError(f"over {TEMPLATE_MAX_STEPS:,} lines of template code run")
        if self.steps % 4096 == 0 and time.monotonic() > self.deadline:
            raise jinja2.exceptions.SecurityError(f"over {TEMPLATE_MAX_SECONDS:g} s of rendering")
        return self.line


def render_template(template: jinja2.Template, **context: Any) -> str:
    """Render under the limits: `TEMPLATE_MAX_STEPS` lines of template code, `TEMPLATE_MAX_SECONDS`
    and `TEMPLATE_MAX_CHARS` of output; TemplateError on a limit or any template error."""
    previous, pieces, size = sys.gettrace(), [], 0
    sys.settrace(_RenderLimit())
    try:
        for piece in template.generate(**context):
            size += len(piece)
            if size > TEMPLATE_MAX_CHARS:
                raise jinja2.exceptions.SecurityError(f"over {TEMPLATE_MAX_CHARS:,} characters of output")
            pieces.append(piece)
    except (jinja2.TemplateError, OverflowError, TypeError, ValueError) as err:
        raise TemplateError(f"chat template failed: {err}") from err
    finally:
        sys.settrace(previous)
    return "".join(pieces)


@functools.lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
    """Compile a chat template in the bounded sandbox, configured like transformers' renderer;
    TemplateError (a ValueError) on a syntax error."""
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _hf_tojson
    env.globals["raise_exception"] = _raise_exception
    try:
        return env.from_string(template)
    except jinja2.TemplateError as err:
        raise TemplateError(f"chat template does not compile: {err}") from err
