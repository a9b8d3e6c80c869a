"""Tests for mobilellm_r1.data.shards: token shards, resume after SIGKILL, ShardedSource (CPU, offline)."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mobilellm_r1.data.shards import (
    META_FILE,
    ShardedSource,
    is_temp_file,
    shard_stats,
    tokenize_source,
    tokenizer_fingerprint,
)
from mobilellm_r1.data.sources import DataError, SourceSpec
from mobilellm_r1.tokenizer import Tokenizer, llama3_special_tokens, load_tokenizer

SRC = Path(__file__).resolve().parents[2] / "src"
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "δέλτα",
    "数学",
    "x=1",
    "def",
    "f():",
    "return",
    "42",
    "\\frac{1}{2}",
    "🙂",
]
TEXTS = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3 + (i * 5) % 40)) for i in range(120)]
TEXTS[7] = 'line one\n    "indented"\r\nline three'


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer()


def byte_tokenizer() -> Tokenizer:
    """A different (byte-level, no merges) tokenizer: other fingerprint, same special tokens."""
    return Tokenizer({bytes([i]): i for i in range(256)}, llama3_special_tokens(256), name_or_path="bytes")


def write_jsonl(path: Path, texts: list[str]) -> Path:
    data = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def dir_contents(path: Path) -> dict[str, object]:
    """Every file's bytes, meta.json parsed without its timestamp."""
    out: dict[str, object] = {}
    for f in sorted(path.iterdir()):
        if f.name == META_FILE:
            meta = json.loads(f.read_text())
            meta.pop("created")
            out[f.name] = meta
        else:
            out[f.name] = f.read_bytes()
    return out


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("src") / "docs.jsonl", TEXTS)


# ---------------------------------------------------------------------- layout & round trip
def test_round_trip_equals_encode(tmp_path: Path, jsonl: Path, tok: Tokenizer) -> None:
    report = tokenize_source(
        SourceSpec("web", str(jsonl)), tmp_path, tok, workers=1, docs_per_shard=25, progress=False
    )
    dest = tmp_path / "web"
    expected = [tok.encode(t) for t in TEXTS]
    assert report["docs"] == 120 and report["tokens"] == sum(map(len, expected)) and report["shards"] == 5
    assert report["out_dir"] == str(dest) and report["tokens_per_s"] > 0 and report["skipped"] == {}
    shard_files = [f"shard_{k:05d}{ext}" for k in range(5) for ext in (".bin", ".idx.npy", ".json")]
    assert sorted(p.name for p in dest.iterdir()) == sorted([META_FILE, *shard_files])
    offsets = np.load(dest / "shard_00000.idx.npy")
    assert offsets.dtype == np.int64 and offsets[0] == 0 and len(offsets) == 26
    assert (dest / "shard_00000.bin").stat().st_size == 4 * offsets[-1]
    assert np.array_equal(np.fromfile(dest / "shard_00000.bin", dtype="<u4")[: offsets[1]], expected[0])

    meta = json.loads((dest / META_FILE).read_text())
    assert meta["tokenizer"]["fingerprint"] == tokenizer_fingerprint(tok)
    assert meta["totals"] == {
        "docs": 120,
        "tokens": report["tokens"],
        "text_bytes": report["text_bytes"],
        "skipped": {},
    }
    assert {"file", "unit", "docs", "tokens", "skipped"} <= set(meta["shards"][0]) and "created" in meta

    src = ShardedSource(dest)
    assert (src.num_docs, src.num_tokens, src.fingerprint) == (
        120,
        report["tokens"],
        tokenizer_fingerprint(tok),
    )
    for i, ids in enumerate(expected):
        doc = src.doc(i)
        assert doc.dtype == np.uint32 and doc.tolist() == ids
    assert isinstance(src.doc(30).base, np.memmap) or isinstance(src.doc(30), np.memmap)
    assert src.doc(-1).tolist() == expected[-1]
    assert src.doc_lengths().tolist() == [len(x) for x in expected]
    stream = np.concatenate([np.asarray(x, dtype=np.uint32) for x in expected])
    assert src.doc_offsets()[-1] == len(stream) and src.token_offset(120) == len(stream)
    for doc, off, n in ((0, 0, 10), (24, 3, 300), (60, 0, 1), (119, 1, 2)):  # crossing docs and shards
        start = src.token_offset(doc) + off
        assert np.array_equal(src.read_tokens(start, n), stream[start : start + n])
    assert len(src.read_tokens(len(stream), 0)) == 0
    with pytest.raises(IndexError):
        src.read_tokens(len(stream) - 1, 2)
    with pytest.raises(IndexError):
        src.doc(120)
    clone = pickle.loads(pickle.dumps(src))
    assert clone._maps == {} and clone.doc(50).tolist() == expected[50]
    src.verify()

    stats = shard_stats(dest)
    assert (
        stats["docs"] == 120
        and stats["shards"] == 5
        and stats["doc_tokens"]["max"] == max(map(len, expected))
    )
    assert stats["disk_bytes"] > 4 * report["tokens"]


def test_all_formats_give_identical_token_streams(tmp_path: Path, tok: Tokenizer) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {
        "jsonl": write_jsonl(tmp_path / "d.jsonl", TEXTS),
        "gz": write_jsonl(tmp_path / "d.jsonl.gz", TEXTS),
        "zst": write_jsonl(tmp_path / "d.jsonl.zst", TEXTS),
        "parquet": tmp_path / "d.parquet",
        "hf": tmp_path / "hf",
    }
    pq.write_table(pa.table({"text": TEXTS}), paths["parquet"], row_group_size=16)
    datasets.Dataset.from_dict({"text": TEXTS}).save_to_disk(str(paths["hf"]))
    streams = {}
    for kind, path in paths.items():
        tokenize_source(
            SourceSpec(kind, str(path)), tmp_path / "out", tok, workers=1, docs_per_shard=40, progress=False
        )
        src = ShardedSource(tmp_path / "out" / kind)
        streams[kind] = (src.read_tokens(0, src.num_tokens).tobytes(), src.doc_lengths().tolist())
    assert all(s == streams["jsonl"] for s in streams.values())


def test_skipped_rows_are_counted_in_report_and_meta(tmp_path: Path, tok: Tokenizer) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"text": "a"}\n{"text": ""}\n{"text": "b"\n{"text": "\xff"}\n{"txt": "c"}\n{"text": "d"}\n'
    )
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON"):
        tokenize_source(SourceSpec("bad", str(path)), tmp_path / "out", tok, workers=1, progress=False)
    assert not (tmp_path / "out" / "bad" / META_FILE).exists()
    spec = SourceSpec("bad", str(path), on_error="skip")
    report = tokenize_source(spec, tmp_path / "out2", tok, workers=1, progress=False)
    skipped = {"empty": 1, "invalid_utf8": 1, "malformed_json": 1, "missing_field": 1}
    assert report["docs"] == 2 and report["skipped"] == skipped
    meta = json.loads((tmp_path / "out2" / "bad" / META_FILE).read_text())
    assert meta["totals"]["skipped"] == skipped and meta["shards"][0]["skipped"] == skipped
    assert any("bad.jsonl:4" in e for e in meta["shards"][0]["skip_examples"])
    assert [ShardedSource(tmp_path / "out2" / "bad").doc(i).tolist() for i in range(2)] == [
        tok.encode("a"),
        tok.encode("d"),
    ]


# ---------------------------------------------------------------------- parallel & resume
def test_two_workers_identical_to_one(tmp_path: Path, jsonl: Path, tok: Tokenizer, capsys) -> None:
    spec = SourceSpec("web", str(jsonl))
    one = tokenize_source(spec, tmp_path / "w1", tok, workers=1, docs_per_shard=20, progress=False)
    two = tokenize_source(spec, tmp_path / "w2", tok, workers=2, docs_per_shard=20, progress=True)
    assert dir_contents(tmp_path / "w1" / "web") == dir_contents(tmp_path / "w2" / "web")
    assert (one["docs"], one["tokens"]) == (two["docs"], two["tokens"])
    err = capsys.readouterr().err
    assert "tok/s=" in err and "120 docs" in err


def test_workers_rebuild_the_tokenizer_from_its_path(tmp_path: Path, jsonl: Path) -> None:
    """Workers get a path and a fingerprint, not a pickle: a tokenizer without a file is saved to a
    temporary copy for them, and a file that changed since the run loaded it is refused."""
    spec = SourceSpec("web", str(jsonl))
    small = byte_tokenizer()  # built in memory: its name "bytes" is no path
    tokenize_source(spec, tmp_path / "one", small, workers=1, docs_per_shard=40, progress=False)
    tokenize_source(spec, tmp_path / "two", small, workers=2, docs_per_shard=40, progress=False)
    assert dir_contents(tmp_path / "one" / "web") == dir_contents(tmp_path / "two" / "web")

    loaded = load_tokenizer(small.save(tmp_path / "tok"))
    other = Tokenizer({bytes([i]): i for i in range(256)}, llama3_special_tokens(256), pat_str=r"\S+|\s+")
    other.save(tmp_path / "tok")  # the file changes after the run loaded it
    with pytest.raises(ValueError, match=r"tokenizer .*tok now has fingerprint \w{12}, this run's is"):
        tokenize_source(spec, tmp_path / "three", loaded, workers=2, docs_per_shard=40, progress=False)


KILL_SCRIPT = """
import sys, time
from mobilellm_r1.data.shards import tokenize_source
from mobilellm_r1.data.sources import SourceSpec
from mobilellm_r1.tokenizer import load_tokenizer

tok = load_tokenizer()
encode_batch = tok.encode_batch
def slow_encode_batch(texts, **kwargs):
    time.sleep(0.05)
    return encode_batch(texts, **kwargs)
tok.encode_batch = slow_encode_batch
tokenize_source(SourceSpec("web", sys.argv[1]), sys.argv[2], tok, workers=1, docs_per_shard=12,
                progress=False, batch_docs=3)
"""


def test_resume_after_sigkill_is_byte_identical(tmp_path: Path, jsonl: Path, tok: Tokenizer) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, str(script), str(jsonl), str(tmp_path / "killed")], env=env)
    dest = tmp_path / "killed" / "web"
    deadline = time.monotonic() + 60
    while not (dest / "shard_00000.idx.npy").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "tokenizer subprocess ended early"
        time.sleep(0.005)
    time.sleep(0.05)  # land inside the next shard
    proc.kill()
    proc.wait()
    names = {p.name for p in dest.iterdir()}
    assert META_FILE not in names and ".tokenize.json" in names
    assert 1 <= sum(n.endswith(".idx.npy") for n in names) < 10
    assert any(n.endswith(".tmp") for n in names) or "shard_00001.bin" in names  # killed mid-shard

    spec = SourceSpec("web", str(jsonl))
    report = tokenize_source(spec, tmp_path / "killed", tok, workers=1, docs_per_shard=12, progress=False)
    assert report["shards"] == 10 and 1 <= report["shards_reused"] < 10 and report["docs"] == 120
    tokenize_source(spec, tmp_path / "clean", tok, workers=1, docs_per_shard=12, progress=False)
    assert dir_contents(dest) == dir_contents(tmp_path / "clean" / "web")


def test_damaged_shards_and_stale_temps_are_redone(tmp_path: Path, jsonl: Path, tok: Tokenizer) -> None:
    spec = SourceSpec("web", str(jsonl))
    tokenize_source(spec, tmp_path, tok, workers=1, docs_per_shard=30, progress=False)
    dest = tmp_path / "web"
    clean = dir_contents(dest)
    (dest / META_FILE).unlink()  # as if killed before the end
    with open(dest / "shard_00001.bin", "r+b") as f:
        f.truncate(40)
    (dest / "shard_00002.idx.npy").unlink()
    (dest / "shard_00003.bin.tmp").write_bytes(b"junk")
    report = tokenize_source(spec, tmp_path, tok, workers=1, docs_per_shard=30, progress=False)
    assert report["shards_reused"] == 2
    assert dir_contents(dest) == clean


def test_temp_files_of_a_killed_run_are_matched_exactly(tmp_path: Path, jsonl: Path, tok: Tokenizer) -> None:
    """A killed run leaves ``.name.random.tmp`` dotfiles (atomic_write) beside ``shard_k.bin.tmp``;
    ``glob("*.tmp")`` and ``glob(".*.tmp")`` both listed the dotfiles, so the second unlink raised
    FileNotFoundError and every later run failed.  Only our own temp names are removed."""
    spec = SourceSpec("web", str(jsonl))
    tokenize_source(spec, tmp_path, tok, workers=1, docs_per_shard=30, progress=False)
    dest = tmp_path / "web"
    clean = dir_contents(dest)
    (dest / META_FILE).unlink()
    (dest / "shard_00003.idx.npy").unlink()
    left = ["shard_00003.bin.tmp", ".shard_00003.json.k2x_9q.tmp", ".shard_00003.idx.npy.ab12cd.tmp"]
    left += [".meta.json.zz_1.tmp", "..tokenize.json.q0w9e8.tmp"]
    foreign = ["notes.tmp", ".editor.tmp", "shard_1.bin.tmp"]
    for name in left + foreign:
        (dest / name).write_bytes(b"junk")
    assert [n for n in left + foreign if is_temp_file(dest / n)] == left
    report = tokenize_source(spec, tmp_path, tok, workers=1, docs_per_shard=30, progress=False)
    assert report["shards_reused"] == 3
    for name in foreign:  # not ours: kept
        (dest / name).unlink()
    assert dir_contents(dest) == clean


def make_corpus(folder: Path, files: int = 30, docs: int = 40) -> list[str]:
    """``files`` JSONL files (one shard each) of ``docs`` documents; returns the texts in order."""
    folder.mkdir()
    texts = [f"{TEXTS[(f + d) % len(TEXTS)]} {f} {d}" for f in range(files) for d in range(docs)]
    for f in range(files):
        write_jsonl(folder / f"part{f:03d}.jsonl", texts[f * docs : (f + 1) * docs])
    return texts


def start_cli_tokenize(corpus: Path, out: Path) -> subprocess.Popen:
    """`mobilellm-r1 data tokenize` with 2 workers, in its own process group."""
    cmd = [sys.executable, "-m", "mobilellm_r1.cli", "data", "tokenize", "--name", "web"]
    cmd += ["--files", str(corpus), "--out", str(out), "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


def children(pid: int) -> set[int]:
    """Live (non-zombie) processes whose parent is ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_mid_run(proc: subprocess.Popen, dest: Path, workers: int = 2) -> set[int]:
    """Wait until the run has its workers and a finished shard; returns the main process's children."""
    deadline = time.monotonic() + 60
    while not ((dest / "shard_00000.idx.npy").exists() and len(kids := children(proc.pid)) > workers):
        assert proc.poll() is None and time.monotonic() < deadline, "tokenize ended before the kill"
        time.sleep(0.005)
    assert not (dest / META_FILE).exists(), "tokenize finished before the kill"
    return kids  # the workers and multiprocessing's resource tracker


def test_group_kill_mid_run_then_rerun_succeeds(tmp_path: Path, tok: Tokenizer) -> None:
    """SIGKILL to the whole process group of a running `data tokenize` (main and workers), then
    the same source again: it keeps the finished shards, clears the temps and completes."""
    texts = make_corpus(tmp_path / "corpus")
    proc = start_cli_tokenize(tmp_path / "corpus", tmp_path / "out")
    wait_mid_run(proc, tmp_path / "out" / "web")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    spec = SourceSpec("web", [str(tmp_path / "corpus")])  # as the CLI builds it
    report = tokenize_source(spec, tmp_path / "out", tok, workers=1, progress=False)
    assert report["shards"] == 30 and 1 <= report["shards_reused"] < 30
    src = ShardedSource(tmp_path / "out" / "web")
    src.verify()
    assert [src.doc(i).tolist() for i in range(len(src))] == tok.encode_batch(texts, num_threads=1)
    assert not any(map(is_temp_file, src.path.iterdir()))


def test_killing_the_main_process_leaves_no_workers(tmp_path: Path) -> None:
    """Pool workers used to outlive a SIGKILLed main process (blocked on its queues forever)."""
    make_corpus(tmp_path / "corpus")
    proc = start_cli_tokenize(tmp_path / "corpus", tmp_path / "out")
    kids = wait_mid_run(proc, tmp_path / "out" / "web")
    proc.kill()  # the main process only, not its group
    proc.wait()
    deadline = time.monotonic() + 15
    while (left := {pid for pid in kids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} of {len(kids)} children of the killed process still ran after 15 s"


def test_other_tokenizer_or_spec_is_refused(tmp_path: Path, jsonl: Path, tok: Tokenizer) -> None:
    spec = SourceSpec("web", str(jsonl))
    tokenize_source(spec, tmp_path, tok, workers=1, progress=False)
    other = byte_tokenizer()
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    assert tokenizer_fingerprint(load_tokenizer()) == tokenizer_fingerprint(tok)
    with pytest.raises(ValueError, match=r"tokenizer fingerprint .* overwrite=True"):
        tokenize_source(spec, tmp_path, other, workers=1, progress=False)
    with pytest.raises(ValueError, match="source differs"):
        tokenize_source(
            SourceSpec("web", str(jsonl), text_field="body"), tmp_path, tok, workers=1, progress=False
        )
    assert ShardedSource(tmp_path / "web").fingerprint == tokenizer_fingerprint(tok)  # untouched

    report = tokenize_source(spec, tmp_path, other, workers=1, progress=False, overwrite=True)
    src = ShardedSource(tmp_path / "web")
    assert src.fingerprint == tokenizer_fingerprint(other) and report["shards_reused"] == 0
    assert src.doc(0).tolist() == list(TEXTS[0].encode())


def test_empty_files_and_shards(tmp_path: Path, tok: Tokenizer) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_bytes(b"")
    write_jsonl(tmp_path / "in" / "b.jsonl", ["", "x y", "z"])
    (tmp_path / "in" / "c.jsonl").write_bytes(b'{"text": ""}\n')
    write_jsonl(tmp_path / "in" / "d.jsonl", ["last"])
    report = tokenize_source(
        SourceSpec("e", str(tmp_path / "in")), tmp_path / "out", tok, workers=1, progress=False
    )
    assert (report["shards"], report["docs"], report["skipped"]) == (4, 3, {"empty": 2})
    src = ShardedSource(tmp_path / "out" / "e")
    assert [src.doc(i).tolist() for i in range(3)] == [tok.encode(t) for t in ("x y", "z", "last")]
    assert src.read_tokens(0, src.num_tokens).tolist() == tok.encode("x y") + tok.encode("z") + tok.encode(
        "last"
    )
    assert src.doc_lengths().tolist() == [len(tok.encode(t)) for t in ("x y", "z", "last")]
    src.verify()
