"""JSONL record files: the one reader (plain / .gz, errors naming file:line, truncated files
refused) and the atomic writer."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mobilellm_r1.data.records import JsonlWriter, iter_jsonl, read_jsonl, read_records
from mobilellm_r1.data.sources import DataError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_read_records_keeps_rows_and_names_bad_lines(tmp_path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "x", "id": 1}, {"text": "", "id": 2}])
    recs = list(read_records(path))
    assert [r.row["id"] for r in recs] == [1, 2] and recs[1].text == ""
    assert recs[0].location == f"{path}:1"
    path.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: field 'text' is int"):
        list(read_records(path))
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"a\.jsonl:2: malformed JSON"):
        list(read_records(path))


def test_jsonl_writer_is_atomic(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    with pytest.raises(RuntimeError), JsonlWriter(out) as w:
        w.write({"a": 1})
        raise RuntimeError("boom")
    assert out.read_text() == "old\n" and list(tmp_path.iterdir()) == [out]
    with JsonlWriter(out) as w:
        w.write({"a": "é"})
    assert read_jsonl(out) == [{"a": "é"}] and list(tmp_path.iterdir()) == [out]


def test_read_jsonl_plain_and_gz_skips_blank_lines(tmp_path) -> None:
    body = '{"q": 1}\n\n  \n{"q": "é"}\n'
    (tmp_path / "p.jsonl").write_text(body, encoding="utf-8")
    with gzip.open(tmp_path / "z.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write(body)
    for name in ("p.jsonl", "z.jsonl.gz"):
        assert read_jsonl(tmp_path / name) == [{"q": 1}, {"q": "é"}]
    assert [where for _, where in iter_jsonl(tmp_path / "p.jsonl")] == [
        f"{tmp_path / 'p.jsonl'}:{n}" for n in (1, 4)
    ]


def test_read_jsonl_bad_line_names_file_and_line(tmp_path) -> None:
    """The eval readers' old read_jsonl raised a bare JSONDecodeError naming no file."""
    path = tmp_path / "eval.jsonl"
    path.write_text('{"q": 1}\n{"q": \n')
    with pytest.raises(DataError, match=r"eval\.jsonl:2: malformed JSON"):
        read_jsonl(path)
    path.write_bytes(b'{"q": "\xff"}\n')
    with pytest.raises(DataError, match=r"eval\.jsonl:1: invalid UTF-8 byte 0xff"):
        read_jsonl(path)
    with pytest.raises(FileNotFoundError, match=r"absent\.jsonl"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_truncated_gz_is_one_error_naming_the_file(tmp_path) -> None:
    """A .gz cut short (a killed download) was a raw EOFError; now a DataError naming the file
    and the last line read."""
    path = tmp_path / "cut.jsonl.gz"
    whole = gzip.compress("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(2000)).encode())
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        DataError, match=r"cut\.jsonl\.gz: truncated or corrupt file, unreadable after line \d+"
    ):
        read_jsonl(path)
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz: truncated or corrupt file"):
        list(read_records(path))
