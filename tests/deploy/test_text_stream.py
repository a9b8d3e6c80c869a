"""Streaming text: partial UTF-8 held back, stop tokens and stop strings never shown."""

from __future__ import annotations

from mobilellm_r1.deploy.text_stream import IncrementalDecoder, TextStream
from mobilellm_r1.tokenizer import load_tokenizer


def test_incremental_decoder_holds_back_partial_utf8() -> None:
    tok = load_tokenizer()
    text = "naïve 世界 🙂🎉 ok"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some character spans tokens
    decoder = IncrementalDecoder(tok)
    chunks = [decoder.push([i]) for i in ids]
    assert all("\ufffd" not in c for c in chunks)
    assert "".join(chunks) + decoder.flush() == text


def test_text_stream_holds_back_a_possible_stop_string_and_stops() -> None:
    tok = load_tokenizer()
    stream = TextStream(tok, stop_ids=[tok.eot_id], stop_strings=["END"])
    assert stream.push(tok.encode("one two EN")) == "one two "  # "EN" may begin "END"
    assert stream.push(tok.encode("ough said")) == "ENough said"  # it did not
    assert not stream.stopped
    assert stream.push(tok.encode(" END three")) == " "  # the text before the stop string
    assert stream.stopped and stream.push(tok.encode(" four")) == ""
    assert stream.finish("one two ENough said ") == ""


def test_text_stream_cuts_at_a_stop_token() -> None:
    tok = load_tokenizer()
    stream = TextStream(tok, stop_ids=[tok.eot_id], stop_strings=[])
    deltas = [stream.push(tok.encode("héllo")), stream.push([tok.eot_id, *tok.encode(" junk")])]
    assert "".join(deltas) == "héllo" and stream.stopped
    assert stream.finish("héllo") == ""
