"""Conversation (SFT) data: chat rendering with an assistant-only loss mask, dataset-layout
mappers, the over-long rule, and the in-memory store of rendered examples that the packed
loader (`packing.py`) reads.

Rendering (:func:`render_conversation`) produces exactly the ids of
``tokenizer.apply_chat_template(messages)``, built message by message::

    <|begin_of_text|> ( <|start_header_id|>{role}<|end_header_id|> "\\n\\n{content}" <|eot_id|> )*

Each ``"\\n\\n{content}"`` piece is encoded like the template's text is (special-token strings
inside it become specials, as in ``apply_chat_template``), so the ids are identical.  The mask:
a token is trained (its label is its id) iff it belongs to an assistant message and holds at
least one byte of the content, or is that message's closing ``<|eot_id|>``; BOS, headers
(including the ``"\\n\\n"`` after them) and all other roles get -100.  Content starting with
whitespace can merge with the header's ``"\\n\\n"`` into one token; that token counts as content.

Mappers (:data:`MAPPERS`) turn a row of a common layout into ``messages``; ``auto`` picks one
per row from its fields.  Bad rows raise :class:`~.sources.DataError` naming ``file:line`` (or
``file:row N`` / ``dataset[split]#i``) and the field, or are counted with ``on_error="skip"``.

Over-long rule.  A packed row holds ``seq_len + 1`` tokens (inputs are its first ``seq_len``,
targets its last ``seq_len``), so an example fits when ``len(ids) <= seq_len + 1``.  With
``overlong="drop"`` (default) longer examples are removed; with ``"truncate"`` they keep their
first ``seq_len + 1`` tokens, and are removed if no trained target (a trained token after the
first) remains.  Both are counted in :class:`ConversationStats`.
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..tokenizer import CHAT_ROLES, SYSTEM_PROMPTS, Tokenizer, validate_messages
from ..typed_config import bounded
from .formats import check_format
from .sources import MAX_SKIP_EXAMPLES, DataError, SourceSpec, source_rows

IGNORE_INDEX = -100
Messages = list[dict[str, str]]
Example = tuple[np.ndarray, np.ndarray]  # ids (uint32) and trained mask (bool) of one example
OVERLONG_MODES = ("drop", "truncate")
_HEADER_GAP = b"\n\n"  # text after <|end_header_id|>, encoded together with the content

# ====================================================================== rendering
_CHECKED: weakref.WeakSet[Tokenizer] = weakref.WeakSet()
_PROBE = [
    {"role": "system", "content": "s"},
    {"role": "user", "content": "\nu "},
    {"role": "assistant", "content": " a<|eot_id|>b"},
]


def _encode_piece(tokenizer: Tokenizer, text: str) -> list[int]:
    """Encode one text piece of the template as ``apply_chat_template`` does (specials allowed)."""
    return tokenizer.encode(text, allowed_special="all")


def _content_start(tokenizer: Tokenizer, body: list[int]) -> int:
    """Index of the first token of ``body`` (the ids of "\\n\\n" + content) holding a content byte."""
    seen = 0
    for i, token in enumerate(body):
        seen += len(tokenizer.encoding.decode_single_token_bytes(token))
        if seen > len(_HEADER_GAP):
            return i
    return len(body)


def _render(tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
    ids, labels = [tokenizer.bos_id], [IGNORE_INDEX]
    start, end = tokenizer.token_to_id("<|start_header_id|>"), tokenizer.token_to_id("<|end_header_id|>")
    for message in messages:
        head = [start, *tokenizer.encode(message["role"]), end]
        body = _encode_piece(tokenizer, "\n\n" + message["content"])
        ids += head + body + [tokenizer.eot_id]
        if message["role"] != "assistant":
            labels += [IGNORE_INDEX] * (len(head) + len(body) + 1)
            continue
        cut = _content_start(tokenizer, body)
        labels += [IGNORE_INDEX] * (len(head) + cut) + body[cut:] + [tokenizer.eot_id]
    return ids, labels


def _check_template(tokenizer: Tokenizer) -> None:
    """Refuse tokenizers whose chat template is not the Llama-3 header format rendered here."""
    if tokenizer in _CHECKED:
        return
    if _render(tokenizer, _PROBE)[0] != tokenizer.apply_chat_template(_PROBE):
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r}: its chat template is not the Llama-3 header "
            "format that render_conversation reproduces"
        )
    _CHECKED.add(tokenizer)


def render_conversation(
    tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[int]]:
    """Ids of the chat template and aligned labels (id where trained, -100 elsewhere; not shifted).

    Trained: every assistant message's content tokens and its closing ``<|eot_id|>`` (see the
    module docstring).  Raises ValueError for malformed messages (``validate_messages``).
    """
    validate_messages(messages)
    _check_template(tokenizer)
    return _render(tokenizer, messages)


# ====================================================================== mappers
ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "ipython": "ipython",
}
# prompt/response layouts: user field, then the answer fields tried in order
PAIR_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("prompt", ("completion", "response")),
    ("instruction", ("output", "response")),
    ("question", ("answer", "response")),
    ("query", ("response", "answer")),
)
OCR_QUESTION_FIELDS = ("question", "input")
OCR_ANSWER_FIELDS = ("r1_generation", "output", "solution")  # full reasoning trace first


@dataclass(frozen=True)
class Mapper:
    """Turns a row (dict) of one dataset layout into chat ``messages``.

    ``fields`` are the columns it may read (Parquet / HF column selection); ``fn(row, where)``
    returns the messages or raises :class:`DataError` naming ``where`` and the field.
    """

    name: str
    fields: tuple[str, ...]
    fn: Callable[[Mapping[str, Any], str], Messages]

    def __call__(self, row: Mapping[str, Any], where: str) -> Messages:
        """Messages of ``row`` (``where`` names it in errors)."""
        return self.fn(row, where)


def _text(row: Mapping[str, Any], name: str, where: str) -> str:
    """Field ``name`` as a string (numbers are formatted); DataError if absent or not text."""
    if name not in row:
        raise DataError(where, f"missing field {name!r}", "missing_field")
    value = row[name]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise DataError(where, f"field {name!r} is {kind}, not a string", "non_string_field")
    return value


def _first_text(row: Mapping[str, Any], names: Sequence[str], where: str, blank: tuple[str, ...] = ()) -> str:
    """The first of ``names`` holding text not in ``blank``; DataError naming them all otherwise."""
    for name in names:
        if row.get(name) is not None and (text := _text(row, name, where)).strip() not in blank:
            return text
    shown = " / ".join(repr(n) for n in names)
    raise DataError(where, f"missing field {shown}", "missing_field")


def _pair(user: str, assistant: str) -> Messages:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _message(item: Any, name: str, where: str) -> dict[str, str]:
    """One message from ``{role, content}`` or ShareGPT ``{from, value}``."""
    if not isinstance(item, Mapping):
        raise DataError(where, f"field {name!r} is {type(item).__name__}, not an object", "invalid_message")
    role = item.get("role") if item.get("role") is not None else item.get("from")
    content = item.get("content") if item.get("content") is not None else item.get("value")
    if role is None:
        raise DataError(where, f"missing field '{name}.role' (or 'from')", "missing_field")
    if content is None:
        raise DataError(where, f"missing field '{name}.content' (or 'value')", "missing_field")
    canonical = ROLE_ALIASES.get(str(role).lower())
    if canonical is None:
        raise DataError(where, f"field '{name}.role' is {role!r}, not one of {CHAT_ROLES}", "invalid_role")
    if not isinstance(content, str):
        detail = f"field '{name}.content' is {type(content).__name__}, not a string"
        raise DataError(where, detail, "non_string_field")
    return {"role": canonical, "content": content}


def _chat_list(keys: tuple[str, ...]) -> Callable[[Mapping[str, Any], str], Messages]:
    """Mapper over a list of messages in the first present field of ``keys``."""

    def fn(row: Mapping[str, Any], where: str) -> Messages:
        key = next((k for k in keys if row.get(k) is not None), None)
        if key is None:
            raise DataError(where, f"missing field {' / '.join(repr(k) for k in keys)}", "missing_field")
        raw = row[key]
        if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
            raise DataError(where, f"field {key!r} is {type(raw).__name__}, not a list", "invalid_message")
        messages = [_message(item, f"{key}[{i}]", where) for i, item in enumerate(raw)]
        system = row.get("system")
        if isinstance(system, str) and system and (not messages or messages[0]["role"] != "system"):
            messages.insert(0, {"role": "system", "content": system})
        return messages

    return fn


def _open_math(row: Mapping[str, Any], where: str) -> Messages:
    return _pair(_text(row, "problem", where), _text(row, "generated_solution", where))


def _open_science(row: Mapping[str, Any], where: str) -> Messages:
    return _pair(_text(row, "input", where), _text(row, "output", where))


def _open_code(row: Mapping[str, Any], where: str) -> Messages:
    """OpenCodeReasoning(-2): the question may be absent or '-' (it then lives in the source
    dataset, e.g. TACO/APPS by ``dataset``/``split``/``index``, and must be filled in as
    ``question`` or ``input`` beforehand)."""
    question = _first_text(row, OCR_QUESTION_FIELDS, where, blank=("", "-"))
    return _pair(question, _first_text(row, OCR_ANSWER_FIELDS, where))


def _prompt_response(row: Mapping[str, Any], where: str) -> Messages:
    """prompt/completion, instruction(+input)/output (Alpaca), question/answer, query/response."""
    for user_key, answer_keys in PAIR_FIELDS:
        if row.get(user_key) is None:
            continue
        user = _text(row, user_key, where)
        extra = row.get("input") if user_key == "instruction" else None
        if isinstance(extra, str) and extra.strip():
            user = f"{user}\n\n{extra}"
        return _pair(user, _first_text(row, answer_keys, where))
    expected = ", ".join(f"{u}/{a[0]}" for u, a in PAIR_FIELDS)
    raise DataError(where, f"missing field: expected one of the pairs {expected}", "missing_field")


_PAIR_COLUMNS = tuple(dict.fromkeys(k for u, a in PAIR_FIELDS for k in (u, *a)))
MAPPERS: dict[str, Mapper] = {
    "messages": Mapper(
        "messages", ("messages", "conversations", "system"), _chat_list(("messages", "conversations"))
    ),
    "sharegpt": Mapper(
        "sharegpt", ("conversations", "messages", "system"), _chat_list(("conversations", "messages"))
    ),
    "tulu3": Mapper("tulu3", ("messages",), _chat_list(("messages",))),
    "open_math_reasoning": Mapper("open_math_reasoning", ("problem", "generated_solution"), _open_math),
    "open_science_reasoning": Mapper("open_science_reasoning", ("input", "output"), _open_science),
    "open_code_reasoning": Mapper("open_code_reasoning", OCR_QUESTION_FIELDS + OCR_ANSWER_FIELDS, _open_code),
    "prompt_response": Mapper("prompt_response", (*_PAIR_COLUMNS, "input"), _prompt_response),
}


def detect_layout(row: Mapping[str, Any]) -> str | None:
    """Name of the mapper for ``row`` judged by its fields, or None when no layout matches."""
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "generated_solution" in row or "problem" in row:
        return "open_math_reasoning"
    if "r1_generation" in row or ("solution" in row and "question" in row):
        return "open_code_reasoning"
    if "instruction" in row:
        return "prompt_response"
    if "input" in row and "output" in row:
        return "open_science_reasoning"
    if any(user in row for user, _ in PAIR_FIELDS):
        return "prompt_response"
    return None


def _auto(row: Mapping[str, Any], where: str) -> Messages:
    name = detect_layout(row)
    if name is None:
        detail = f"no known conversation layout; fields present: {sorted(row)[:12]}"
        raise DataError(where, detail, "unknown_layout")
    return MAPPERS[name](row, where)


AUTO = Mapper("auto", tuple(dict.fromkeys(f for m in MAPPERS.values() for f in m.fields)), _auto)


def get_mapper(name: str) -> Mapper:
    """A mapper of :data:`MAPPERS` by name, or ``"auto"`` (layout detected per row)."""
    if name == "auto":
        return AUTO
    if name not in MAPPERS:
        raise ValueError(f"unknown mapper {name!r}; expected 'auto' or one of {sorted(MAPPERS)}")
    return MAPPERS[name]


def with_system(messages: Messages, system: str | None) -> Messages:
    """Prepend a system message (a :data:`SYSTEM_PROMPTS` key or literal text) unless one leads."""
    if not system or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": SYSTEM_PROMPTS.get(system, system)}, *messages]


# ====================================================================== sources
@dataclass
class ConversationSource:
    """One SFT source: where its rows are, how they become messages, and how often it is used.

    Attributes:
        name: source name (reports, ``Batch.source`` index order).
        path: file, glob, directory, saved HF dataset dir or hub id (``format="hf"``), or a list.
        mapper: a :data:`MAPPERS` key or ``"auto"``.
        epochs: passes over this source per loader epoch; a fractional part takes a seeded random
            subset of that size, redrawn every loader epoch (0.5: half the examples).
        format, hf_split, hf_config, hf_streaming: as in :class:`~.sources.SourceSpec`
            (OpenMathReasoning: ``hf_split="cot"``).
        system: system prompt prepended to conversations that do not start with one
            (``"math"``, ``"python"``, ``"cpp"`` name :data:`SYSTEM_PROMPTS`; other text is literal).
        on_error: ``raise`` a DataError on a bad row, or ``skip`` and count it.
        max_examples: read at most this many rows (smoke runs); None reads all.
    """

    name: str
    path: str | list[str]
    mapper: str = "auto"
    epochs: float = 1.0
    format: str = "auto"  # a key of data.formats.FORMATS but text, or "auto"
    hf_split: str = "train"
    hf_config: str | None = None
    hf_streaming: bool = False
    system: str | None = None
    on_error: Literal["raise", "skip"] = "raise"
    max_examples: int | None = bounded(None, ge=1)

    def __post_init__(self) -> None:
        single = isinstance(self.path, (str, os.PathLike))
        self.path = os.fspath(self.path) if single else [os.fspath(p) for p in self.path]  # type: ignore[union-attr]
        get_mapper(self.mapper)
        if not (self.epochs >= 0 and math.isfinite(self.epochs)):
            raise ValueError(f"source {self.name!r}: epochs must be a finite number >= 0, got {self.epochs}")
        if check_format(self.format) == "text":
            raise ValueError(f"source {self.name!r}: conversations cannot come from plain-text files")

    def spec(self) -> SourceSpec:
        """The reader's view of this source (columns: the mapper's fields)."""
        return _RowSpec(
            name=self.name,
            path=self.path,
            format=self.format,
            hf_split=self.hf_split,
            hf_config=self.hf_config,
            hf_streaming=self.hf_streaming,
            on_error=self.on_error,
            columns=get_mapper(self.mapper).fields,
        )


@dataclass
class _RowSpec(SourceSpec):
    """A :class:`SourceSpec` whose readers select ``columns`` (the mapper's fields)."""

    columns: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.columns


# ====================================================================== examples
@dataclass
class ConversationStats:
    """What loading a source did: rows read, examples kept / dropped / truncated, token counts.

    ``tokens`` and ``trained_tokens`` are over kept examples (after truncation);
    ``trained_tokens`` counts targets, i.e. trained tokens after each example's first.
    """

    read: int = 0
    kept: int = 0
    skipped_bad: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def bad(self, err: DataError) -> None:
        """Count one skipped bad row under its reason (keeping the first few messages)."""
        self.skipped_bad += 1
        self.skipped[err.reason] = self.skipped.get(err.reason, 0) + 1
        if len(self.errors) < MAX_SKIP_EXAMPLES:
            self.errors.append(str(err))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able counters."""
        return {
            k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
            for k, v in self.__dict__.items()
        }


@dataclass
class ExampleStore:
    """Rendered examples back to back: ``tokens`` (uint32), ``trained`` (bool, label mask),
    ``offsets`` (int64, n + 1) and ``source`` (int32 index into ``names``) per example."""

    tokens: np.ndarray
    trained: np.ndarray
    offsets: np.ndarray
    source: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.source)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Tokens per example, int64 [n]."""
        return np.diff(self.offsets)

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, trained mask) of example ``i``."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.tokens[a:b], self.trained[a:b]

    @classmethod
    def build(cls, parts: Sequence[Sequence[Example]], names: Sequence[str]) -> ExampleStore:
        """Store from per-source lists of (ids, trained mask) arrays (see :func:`load_conversations`)."""
        if len(parts) != len(names):
            raise ValueError(f"{len(parts)} example lists for {len(names)} source names")
        flat = [ex for part in parts for ex in part]
        lengths = np.array([len(ids) for ids, _ in flat], dtype=np.int64)
        empty_ids, empty_mask = np.zeros(0, np.uint32), np.zeros(0, bool)
        return cls(
            tokens=np.concatenate([empty_ids, *(ids for ids, _ in flat)]).astype(np.uint32),
            trained=np.concatenate([empty_mask, *(mask for _, mask in flat)]).astype(bool),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            source=np.repeat(np.arange(len(parts), dtype=np.int32), [len(p) for p in parts]),
            names=list(names),
        )


def fit_example(
    ids: list[int], labels: list[int], capacity: int, overlong: str
) -> tuple[list[int], list[int], str]:
    """Apply the over-long rule: (ids, labels, outcome) with outcome ``kept``, ``truncated``,
    ``dropped_overlong`` or ``no_target`` (nothing trained at all)."""
    if overlong not in OVERLONG_MODES:
        raise ValueError(f"overlong must be one of {OVERLONG_MODES}, got {overlong!r}")
    outcome = "kept"
    if len(ids) > capacity:
        if overlong == "drop":
            return ids, labels, "dropped_overlong"
        ids, labels, outcome = ids[:capacity], labels[:capacity], "truncated"
    if all(lab == IGNORE_INDEX for lab in labels[1:]):
        return ids, labels, "dropped_overlong" if outcome == "truncated" else "no_target"
    return ids, labels, outcome


def load_conversations(
    source: ConversationSource, tokenizer: Tokenizer, seq_len: int, overlong: str = "drop"
) -> tuple[list[Example], ConversationStats]:
    """Read, map, render and fit every row of ``source``; returns the kept examples and stats.

    A conversation without any trained token (no assistant message) is a bad row
    (reason ``no_target``).
    """
    mapper, stats, kept = get_mapper(source.mapper), ConversationStats(), []
    for row, where in source_rows(source.spec()):
        if source.max_examples is not None and stats.read >= source.max_examples:
            break
        stats.read += 1
        try:
            ids, labels, outcome = _example(row, where, mapper, source.system, tokenizer, seq_len, overlong)
        except DataError as err:
            if source.on_error == "raise":
                raise
            stats.bad(err)
            continue
        if outcome == "dropped_overlong":
            stats.dropped_overlong += 1
            continue
        stats.truncated += outcome == "truncated"
        stats.kept += 1
        mask = np.array(labels, dtype=np.int64) != IGNORE_INDEX
        stats.tokens += len(ids)
        stats.trained_tokens += int(mask[1:].sum())
        kept.append((np.array(ids, dtype=np.uint32), mask))
    return kept, stats


def _example(
    row: Any,
    where: str,
    mapper: Mapper,
    system: str | None,
    tokenizer: Tokenizer,
    seq_len: int,
    overlong: str,
) -> tuple[list[int], list[int], str]:
    """One row -> fitted (ids, labels, outcome); DataError for a bad row."""
    if isinstance(row, DataError):
        raise row
    if not isinstance(row, Mapping):
        raise DataError(where, f"expected a JSON object, got {type(row).__name__}", "not_an_object")
    messages = with_system(mapper(row, where), system)
    try:
        ids, labels = render_conversation(tokenizer, messages)
    except ValueError as err:
        raise DataError(where, f"field 'messages': {err}", "invalid_message") from None
    ids, labels, outcome = fit_example(ids, labels, seq_len + 1, overlong)
    if outcome == "no_target":
        raise DataError(where, "conversation has no assistant message to train on", "no_target")
    return ids, labels, outcome
