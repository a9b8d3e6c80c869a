"""Streaming text: generated ids in, text that is safe to show out.

`IncrementalDecoder` emits text only once the UTF-8 characters are complete (a character may
span tokens). `TextStream` adds the stop rules: nothing after a stop token, nothing from a
stop string on, and a text end that may be the start of a stop string is held back until the
next tokens decide. The command line (`generate`) and the server stream through these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer

REPLACEMENT_CHAR = "\ufffd"


class IncrementalDecoder:
    """Token ids in, newly completed text out.

    Multi-byte UTF-8 characters can span tokens, so text is only emitted once the decoded
    suffix does not end in U+FFFD; the held-back bytes are emitted with the next token that
    completes them (or by `flush`).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # start of the window re-decoded on each push
        self._read = 0  # ids before this index have been emitted

    def push(self, new_ids: Sequence[int]) -> str:
        """Append ids; return the text they complete ('' while a character is incomplete)."""
        self.ids.extend(new_ids)
        done = self.tokenizer.decode(self.ids[self._prefix : self._read])
        full = self.tokenizer.decode(self.ids[self._prefix :])
        if len(full) <= len(done) or full.endswith(REPLACEMENT_CHAR):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return full[len(done) :]

    def flush(self) -> str:
        """Text of ids not emitted yet, incomplete characters as U+FFFD."""
        done = self.tokenizer.decode(self.ids[self._prefix : self._read])
        full = self.tokenizer.decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return full[len(done) :]


class TextStream:
    """One sample's visible text as its ids arrive: `push(new_ids)` and `finish(final_text)`
    return the text to append (possibly ''); `stopped` is set once a stop token or stop string
    has been seen, after which pushes return ''."""

    def __init__(self, tokenizer: Tokenizer, stop_ids: Sequence[int], stop_strings: Sequence[str]) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.stop_ids = set(stop_ids)
        self.stop_strings = [s for s in stop_strings if s]
        self.text = ""  # decoded so far
        self.shown = ""  # returned so far
        self.stopped = False

    def push(self, new_ids: Sequence[int]) -> str:
        if self.stopped:
            return ""
        cut = next((i for i, t in enumerate(new_ids) if t in self.stop_ids), None)
        if cut is not None:
            new_ids, self.stopped = new_ids[:cut], True
        self.text += self.decoder.push(new_ids)
        return self._advance(self._visible())

    def _visible(self) -> str:
        """Text that is safe to show: cut at a stop string, without a possible stop-string start."""
        text = self.text
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0:
                self.stopped = True
                text = text[:at]
        hold = max(
            (k for s in self.stop_strings for k in range(1, len(s)) if text.endswith(s[:k])), default=0
        )
        return text[: len(text) - hold]

    def _advance(self, visible: str) -> str:
        if visible.startswith(self.shown) and len(visible) > len(self.shown):
            delta, self.shown = visible[len(self.shown) :], visible
            return delta
        return ""

    def finish(self, final_text: str) -> str:
        """The rest of the completed sample's text (`final_text`: its whole text, stop rules applied)."""
        self.stopped = True
        return self._advance(final_text)
