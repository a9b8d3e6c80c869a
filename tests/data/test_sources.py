"""Tests for mobilellm_r1.data.sources: formats, templates, errors, work units (CPU, offline)."""

from __future__ import annotations

import gzip
import json
import pickle
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from helpers import SHARED_DATA
from mobilellm_r1.data.formats.base import SourceFormat, SpecView
from mobilellm_r1.data.sources import (
    FORMATS,
    DataError,
    ReadStats,
    SourceSpec,
    Unit,
    iter_documents,
    list_units,
    read_unit,
)

GSM8K = SHARED_DATA / "corpora" / "gsm8k" / "train.jsonl"
GSM_TEMPLATE = "Question: {question}\nAnswer: {answer}"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    'def f(x):\n    return {"a": x}\r\n',
    r"$\frac{a}{b} = \int_0^1 x\,dx$",
    "emoji 👍🏽 👨‍👩‍👧‍👦 and 中文 and العربية",
    " leading and trailing ",
    "\n\n",
    "line one\nline two\u2028still two",
] * 5


def rows(texts: list[str] = TEXTS) -> list[dict]:
    return [{"text": t, "id": i} for i, t in enumerate(texts)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def write_parquet(path: Path, records: list[dict], row_group_size: int = 8) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=row_group_size)
    return path


def write_hf(path: Path, records: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(path))
    return path


def texts_of(spec: SourceSpec, **kwargs) -> list[str]:
    return [d.text for d in iter_documents(spec, **kwargs)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("formats")
    return {
        "jsonl": write_jsonl(tmp / "a.jsonl", rows()),
        "gz": write_jsonl(tmp / "a.jsonl.gz", rows()),
        "zst": write_jsonl(tmp / "a.jsonl.zst", rows()),
        "parquet": write_parquet(tmp / "a.parquet", rows()),
        "hf": write_hf(tmp / "hf_saved", rows()),
    }


# ---------------------------------------------------------------------- formats
@pytest.mark.parametrize("kind", ["jsonl", "gz", "zst", "parquet", "hf"])
def test_every_format_gives_the_same_documents(files: dict[str, Path], kind: str) -> None:
    spec = SourceSpec("s", str(files[kind]))
    docs = list(iter_documents(spec))
    assert [d.text for d in docs] == TEXTS
    assert all(d.source == "s" for d in docs)
    expected_location = {"parquet": "a.parquet:row 3", "hf": "hf_saved[train]#3"}.get(kind, ":4")
    assert docs[3].location.endswith(expected_location)


def test_explicit_format_and_units_of_each_kind(files: dict[str, Path]) -> None:
    assert texts_of(SourceSpec("s", str(files["hf"]), format="hf")) == TEXTS
    assert texts_of(SourceSpec("s", str(files["jsonl"]), format="jsonl")) == TEXTS
    units = list_units(SourceSpec("s", [str(files[k]) for k in ("gz", "parquet", "hf")]), docs_per_shard=10)
    assert [u.format for u in units] == ["jsonl"] + ["parquet"] * 4 + ["hf"] * 4  # compressed: one unit
    assert [(u.start, u.stop) for u in units if u.format == "parquet"] == [
        (0, 10),
        (10, 20),
        (20, 30),
        (30, 35),
    ]
    assert [(u.start, u.stop) for u in units if u.format == "hf"] == [(0, 9), (9, 18), (18, 27), (27, 35)]


def test_units_concatenate_to_the_whole(files: dict[str, Path]) -> None:
    for kind in ("parquet", "hf"):
        spec = SourceSpec("s", str(files[kind]))
        for kwargs in ({"docs_per_shard": 4}, {"part_bytes": 64}):
            units = list_units(spec, **kwargs)
            assert len(units) > 1
            docs = [d for u in units for d in read_unit(spec, u)]
            assert [d.text for d in docs] == TEXTS
            assert [d.location.rsplit("#", 1)[-1].rsplit(" ", 1)[-1] for d in docs] == [
                str(i) for i in range(len(TEXTS))
            ]


def test_hf_load_dataset_streaming_from_local_data_files(tmp_path: Path) -> None:
    for k in range(3):  # a directory of data files (not save_to_disk): datasets.load_dataset
        write_jsonl(tmp_path / f"part{k}.jsonl", rows(TEXTS[4 * k : 4 * k + 4]))
    spec = SourceSpec("s", str(tmp_path), format="hf", hf_streaming=True)
    units = list_units(spec)
    assert [(u.shard, u.num_shards) for u in units] == [(0, 3), (1, 3), (2, 3)]
    docs = [d for u in units for d in read_unit(spec, u)]
    assert [d.text for d in docs] == TEXTS[:12]
    assert docs[5].location == f"{tmp_path}[train] shard 1/3#1"


def test_directory_and_glob_expand_sorted(tmp_path: Path) -> None:
    for name, lo in (("b.jsonl", 2), ("a.jsonl", 0), ("sub/c.jsonl.gz", 4)):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_jsonl(tmp_path / name, rows(TEXTS[lo : lo + 2]))
    (tmp_path / "notes.txt").write_text("ignored")
    assert texts_of(SourceSpec("s", str(tmp_path))) == [TEXTS[i] for i in (0, 1, 2, 3, 4, 5)]
    assert texts_of(SourceSpec("s", str(tmp_path / "*.jsonl"))) == TEXTS[:4]
    assert SourceSpec("s", [tmp_path / "a.jsonl"]).path == [str(tmp_path / "a.jsonl")]
    assert texts_of(SourceSpec("s", tmp_path / "a.jsonl")) == TEXTS[:2]  # type: ignore[arg-type]
    assert (
        texts_of(SourceSpec("s", [str(tmp_path / "b.jsonl"), str(tmp_path / "a.jsonl")]))
        == TEXTS[2:4] + TEXTS[:2]
    )
    with pytest.raises(FileNotFoundError, match="missing"):
        list_units(SourceSpec("s", str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match="cannot tell the format"):
        list_units(SourceSpec("s", str(tmp_path / "notes.txt")))


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="format"):
        SourceSpec("s", "x.jsonl", format="csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        SourceSpec("s", "x.jsonl", on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positional"):
        SourceSpec("s", "x.jsonl", template="Q: {}")
    with pytest.raises(ValueError, match="directory name"):
        SourceSpec("a/b", "x.jsonl")
    spec = SourceSpec("s", ["x.jsonl"], template="{a.b} {c[0]} {a}")
    assert spec.fields == ("a", "c")
    assert SourceSpec(**json.loads(json.dumps(asdict(spec)))) == spec


# ---------------------------------------------------------------------- templates & fields
def test_template_over_structured_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl", [{"question": "1+1?", "answer": 2}, {"question": "x", "answer": "y"}]
    )
    assert texts_of(SourceSpec("qa", str(path), template=GSM_TEMPLATE)) == [
        "Question: 1+1?\nAnswer: 2",
        "Question: x\nAnswer: y",
    ]


@pytest.mark.parametrize(
    ("record", "spec_kwargs", "reason", "needle"),
    [
        ({"body": "x"}, {}, "missing_field", "missing field 'text'"),
        ({"text": 3}, {}, "non_string_field", "field 'text' is int"),
        ({"text": None}, {}, "non_string_field", "field 'text' is null"),
        ({"question": "q"}, {"template": GSM_TEMPLATE}, "missing_field", "missing field 'answer'"),
        (
            {"question": "q", "answer": ["a"]},
            {"template": GSM_TEMPLATE},
            "non_string_field",
            "'answer' is list",
        ),
        (["not", "an", "object"], {}, "not_an_object", "expected a JSON object"),
        ({"text": "bad \ud800 surrogate"}, {}, "invalid_unicode", "unpaired surrogate"),
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, record: object, spec_kwargs: dict, reason: str, needle: str
) -> None:
    good = {"text": "good", "question": "q", "answer": "a"}
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (good, good, record, good)) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3") as info:
        list(iter_documents(SourceSpec("s", str(path), **spec_kwargs)))
    assert needle in str(info.value)
    assert info.value.reason == reason
    stats = ReadStats()
    docs = list(iter_documents(SourceSpec("s", str(path), on_error="skip", **spec_kwargs), stats))
    assert len(docs) == 3 and stats.docs == 3
    assert stats.skipped == {reason: 1}
    assert "bad.jsonl:3" in stats.examples[0]
    assert [d.location.rsplit(":", 1)[1] for d in docs] == ["1", "2", "4"]


def test_parquet_and_hf_field_errors_name_row(tmp_path: Path) -> None:
    records = [{"text": "a", "n": 1}, {"text": None, "n": 2}, {"text": "c", "n": 3}]
    for path in (write_parquet(tmp_path / "p.parquet", records), write_hf(tmp_path / "hf", records)):
        with pytest.raises(DataError, match=r"(p\.parquet:row 1|hf\[train\]#1): field 'text' is null"):
            texts_of(SourceSpec("s", str(path)))
        with pytest.raises(DataError, match="missing field 'body'"):
            texts_of(SourceSpec("s", str(path), text_field="body"))
        stats = ReadStats()
        assert texts_of(SourceSpec("s", str(path), on_error="skip"), stats=stats) == ["a", "c"]
        assert stats.skipped == {"non_string_field": 1}
        assert texts_of(SourceSpec("s", str(path), template="{text}#{n}", on_error="skip")) == ["a#1", "c#3"]


# ---------------------------------------------------------------------- jsonl errors
def test_malformed_json_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"\n{"text": "c"}\n\n{"text": ""}\n')
    with pytest.raises(DataError, match=r"m\.jsonl:2: malformed JSON") as info:
        texts_of(SourceSpec("s", str(path)))
    assert info.value.location.endswith("m.jsonl:2")
    stats = ReadStats()
    assert texts_of(SourceSpec("s", str(path), on_error="skip"), stats=stats) == ["a", "c"]
    assert stats.skipped == {"malformed_json": 1, "blank_line": 1, "empty": 1}


def test_non_utf8_byte(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n{"text": "fine"}\n')
    with pytest.raises(DataError, match=r"u\.jsonl:2: invalid UTF-8 byte 0xe9"):
        texts_of(SourceSpec("s", str(path)))
    stats = ReadStats()
    assert texts_of(SourceSpec("s", str(path), on_error="skip"), stats=stats) == ["ok", "fine"]
    assert stats.skipped == {"invalid_utf8": 1}


# ---------------------------------------------------------------------- truncated / corrupt files
@pytest.mark.parametrize("kind", ["a.jsonl.gz", "a.jsonl.zst", "a.parquet"])
def test_truncated_file_names_the_file_and_skip_warns(tmp_path: Path, kind: str) -> None:
    """A cut-off .gz used to raise a bare EOFError (even with on_error=skip), a cut-off .zst ended
    silently (rows lost without a word), a cut-off Parquet raised ArrowInvalid from list_units."""
    many = rows([f"document {i} " + "words " * 40 for i in range(3000)])
    path = tmp_path / kind
    (write_parquet if kind.endswith(".parquet") else write_jsonl)(path, many)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(
        DataError, match=rf"{kind}: truncated or corrupt file, unreadable (after|from)"
    ) as info:
        texts_of(SourceSpec("s", str(path)))
    assert info.value.reason == "unreadable_file" and info.value.location == str(path)
    stats = ReadStats()
    with pytest.warns(UserWarning, match=rf"skipping the rest of the file: .*{kind}: truncated"):
        texts = texts_of(SourceSpec("s", str(path), on_error="skip"), stats=stats)
    assert stats.skipped.pop("unreadable_file") == 1 and len(texts) < len(many)
    assert texts == [r["text"] for r in many[: len(texts)]]  # the rows before the cut are kept
    assert set(stats.skipped) <= {"malformed_json"}  # at most the cut line itself


def test_corrupt_gzip_header(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(b"not gzip at all\n")
    with pytest.raises(DataError, match=r"c\.jsonl\.gz: .*unreadable from the start \(BadGzipFile: Not a"):
        texts_of(SourceSpec("s", str(path)))


def test_data_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(DataError("f.jsonl:3", "boom", "malformed_json")))
    assert (str(err), err.reason, err.location) == ("f.jsonl:3: boom", "malformed_json", "f.jsonl:3")


# ---------------------------------------------------------------------- byte-range splitting
@pytest.mark.parametrize("part_bytes", [1, 37, 100, 1000, 10**9])
def test_jsonl_byte_ranges_match_whole_read(tmp_path: Path, part_bytes: int) -> None:
    lines = [json.dumps({"text": f"doc {i} " + "x" * (i % 13)}) for i in range(200)]
    lines[150] = '{"text": broken'
    path = tmp_path / "big.jsonl"
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(data)
    spec = SourceSpec("s", str(path), on_error="skip")
    whole = [(d.text, d.location) for d in read_unit(spec, Unit("jsonl", str(path)))]
    units = list_units(spec, part_bytes=part_bytes)
    assert (len(units) > 1) == (part_bytes < len(data))
    for u in units:  # each part starts at a line start; parts tile the file
        assert u.start == 0 or data[u.start - 1 : u.start] == b"\n"
        assert u.line == data[: u.start].count(b"\n") + 1
    assert [u.start for u in units[1:]] == [u.stop for u in units[:-1]] and units[-1].stop == len(data)
    parts = [(d.text, d.location) for u in units for d in read_unit(spec, u)]
    assert parts == whole and len(whole) == 199
    assert whole[150][1].endswith("big.jsonl:152")
    later = next(u for u in units if u.start <= data.index(b"broken") < u.stop)
    with pytest.raises(DataError, match=r"big\.jsonl:151: malformed JSON"):
        list(read_unit(SourceSpec("s", str(path)), later))


def test_jsonl_units_by_line_count(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "n.jsonl", rows())
    units = list_units(SourceSpec("s", str(path)), docs_per_shard=10)
    assert [u.line for u in units] == [1, 11, 21, 31]
    assert sum(len(list(read_unit(SourceSpec("s", str(path)), u))) for u in units) == len(TEXTS)


# ---------------------------------------------------------------------- real data
def test_gsm8k_with_template() -> None:
    spec = SourceSpec("gsm8k", str(GSM8K), template=GSM_TEMPLATE)
    stats = ReadStats()
    units = list_units(spec, part_bytes=1_000_000)
    docs = [d for u in units for d in read_unit(spec, u, stats)]
    assert len(units) == 5 and stats.docs == len(docs) == 7473 and not stats.skipped
    assert (
        docs[0].text.startswith("Question: Natalia sold clips")
        and "\nAnswer: Natalia sold 48/2" in docs[0].text
    )
    assert docs[-1].location == f"{GSM8K}:7473"


# ---------------------------------------------------------------------- a new format: one module, one line
class TsvFormat(SourceFormat):
    """A toy format, as a new ``data/formats/tsv.py`` would define it: ``id<TAB>text`` lines."""

    name = "tsv"
    suffixes = (".tsv",)

    def rows(self, spec: SpecView, unit: Unit, stats: ReadStats) -> Iterator[tuple[Any, str]]:
        with open(unit.path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                key, tab, text = line.rstrip("\n").partition("\t")
                where = f"{unit.path}:{number}"
                yield (
                    ({"id": key, spec.text_field: text} if tab else DataError(where, "no tab", "no_tab")),
                    where,
                )


def test_a_toy_format_registered_in_one_line_is_read_and_tokenized(tmp_path: Path, monkeypatch) -> None:
    from mobilellm_r1.data.recipes import MixSource
    from mobilellm_r1.data.shards import tokenize_source
    from mobilellm_r1.tokenizer import load_tokenizer
    from mobilellm_r1.typed_config import ConfigError, from_dict

    texts = [t for t in TEXTS if t.strip() and "\n" not in t][:6]
    (tmp_path / "raw").mkdir()
    for part, chunk in (("a", texts[:4]), ("b", texts[4:])):
        (tmp_path / "raw" / f"{part}.tsv").write_text("".join(f"{i}\t{t}\n" for i, t in enumerate(chunk)))
    write_jsonl(tmp_path / "same.jsonl", [{"text": t} for t in texts])
    recipe_source = {"name": "toy", "weight": 1.0, "files": ["raw"], "format": "tsv"}
    with pytest.raises(ValueError, match="format must be one of"):
        SourceSpec("toy", str(tmp_path / "raw"), format="tsv")
    with pytest.raises(
        ConfigError, match=r"format: expected one of \['jsonl', 'parquet', 'hf', 'text', 'auto'\]"
    ):
        from_dict(MixSource, recipe_source, "sources.0")
    with pytest.raises(ValueError, match="cannot tell the format of"):
        list_units(SourceSpec("toy", str(tmp_path / "raw" / "*.tsv")))

    monkeypatch.setitem(FORMATS, "tsv", TsvFormat())  # the one registry line
    assert from_dict(MixSource, recipe_source, "sources.0").format == "tsv"
    for spec in (
        SourceSpec("toy", str(tmp_path / "raw"), format="tsv"),
        SourceSpec("toy", str(tmp_path / "raw")),
    ):
        assert [(u.format, Path(u.path).name) for u in list_units(spec)] == [
            ("tsv", "a.tsv"),
            ("tsv", "b.tsv"),
        ]
        assert texts_of(spec) == texts
    (tmp_path / "raw" / "b.tsv").write_text("0\tfine\nno tab here\n")
    with pytest.raises(DataError, match=r"b\.tsv:2: no tab"):
        texts_of(SourceSpec("toy", str(tmp_path / "raw")))
    stats = ReadStats()
    docs = list(iter_documents(SourceSpec("toy", str(tmp_path / "raw"), on_error="skip"), stats))
    assert [d.text for d in docs] == [*texts[:4], "fine"] and stats.skipped == {"no_tab": 1}

    (tmp_path / "raw" / "b.tsv").write_text("".join(f"{i}\t{t}\n" for i, t in enumerate(texts[4:])))
    tok = load_tokenizer()
    toy = tokenize_source(
        SourceSpec("toy", str(tmp_path / "raw")), tmp_path / "out", tok, workers=1, progress=False
    )
    same = tokenize_source(
        SourceSpec("same", str(tmp_path / "same.jsonl")), tmp_path / "out", tok, workers=1, progress=False
    )
    assert toy["docs"] == same["docs"] == len(texts)
    assert toy["tokens"] == same["tokens"] > len(texts)
