"""`curate probe-sets`: representative subsets and capability-probing sets (the inputs of MobileLLM-R1
Eq. 2-4) are seeded, order-independent bottom-k samples, exact-duplicate-free, probes disjoint from every
representative subset and across capabilities, drawn evenly over a capability's sources above the score
threshold; bad configs and rows name the file and field."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mobilellm_r1.cli import main
from mobilellm_r1.curation.probe_sets import (
    PAPER_DOMAINS,
    BottomK,
    _Doc,
    build_probe_sets,
    load_probe_config,
    sample_key,
)
from mobilellm_r1.data.sources import DataError
from mobilellm_r1.typed_config import ConfigError


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def corpus(root: Path, shuffle_seed: int | None = None) -> None:
    """math (60 docs + 5 exact duplicates), code (40), a mixed source serving math and code (as the
    paper's Cosmopedia) stored as Parquet, a mirror of math's first 10 texts, and noise; the score
    ``q`` is index % 6 + 0.5, so half of the docs score > 3."""

    def rows(kind: str, n: int) -> list[dict]:
        return [
            {"id": f"{kind}-{i}", "text": f"{kind} document {i} " * 3, "q": i % 6 + 0.5} for i in range(n)
        ]

    math = rows("math", 60) + [{**r, "id": f"dup-{i}"} for i, r in enumerate(rows("math", 5))]
    tables = {"math": math, "code": rows("code", 40), "noise": rows("noise", 12)}
    tables["mirror"] = [{**r, "id": f"mirror-{i}"} for i, r in enumerate(math[:10])]
    if shuffle_seed is not None:
        for table in tables.values():
            random.Random(shuffle_seed).shuffle(table)
    for name, table in tables.items():
        write_jsonl(root / f"{name}.jsonl", table)
    mixed = rows("mixed", 50)
    pq.write_table(
        pa.Table.from_pylist(mixed[::-1] if shuffle_seed is not None else mixed), root / "mixed.parquet"
    )


CONFIG = {
    "name": "tiny",
    "capabilities": ["math", "code"],
    "representative_size": 8,
    "probe_size": 10,
    "seed": 7,
    "score_field": "q",
    "score_threshold": 3.0,
    "sources": [
        {"name": "math", "capabilities": ["math"], "files": ["math.jsonl"]},
        {"name": "code", "capabilities": ["code"], "files": ["code.jsonl"]},
        {"name": "mixed", "capabilities": ["math", "code"], "files": ["mixed.parquet"]},
        {"name": "mirror", "files": ["mirror.jsonl"]},
        {"name": "noise", "files": ["noise.jsonl"]},
    ],
}


def write_config(path: Path, root: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**CONFIG, "data_root": str(root), **changes}))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jsonl"))}


def test_counts_disjointness_quality_and_duplicates(tmp_path: Path) -> None:
    corpus(tmp_path / "data")
    cfg = load_probe_config(write_config(tmp_path / "c.yaml", tmp_path / "data"))
    manifest = build_probe_sets(cfg, tmp_path / "out")
    out = tmp_path / "out"
    reps = {
        n: read(out / "representative" / f"{n}.jsonl") for n in ("math", "code", "mixed", "mirror", "noise")
    }
    assert {n: len(r) for n, r in reps.items()} == dict.fromkeys(reps, 8)
    assert manifest["sources"]["math"] == {"rows": 65, "empty": 0, "eligible": 32, "representative": 8}
    probes = {c: read(out / "probe" / f"{c}.jsonl") for c in ("math", "code")}
    # 10 per capability, evenly over its sources (remainder to the first): math 5 + mixed 5, code 5 + mixed 5
    assert manifest["probes"]["math"]["by_source"] == {"math": 5, "mixed": 5}
    assert manifest["probes"]["code"]["by_source"] == {"code": 5, "mixed": 5}
    assert all(p["short"] == {} for p in manifest["probes"].values())
    assert [r["source"] for r in probes["math"]] == ["math"] * 5 + ["mixed"] * 5
    rep_texts = [r["text"] for rows in reps.values() for r in rows]
    probe_texts = [r["text"] for rows in probes.values() for r in rows]
    assert len(set(probe_texts)) == len(probe_texts) == 20  # no duplicates, disjoint across capabilities
    assert not set(probe_texts) & set(rep_texts)  # never also a training sample, of any source
    assert all(len({r["text"] for r in rows}) == len(rows) for rows in reps.values())
    probe_rows = [*probes["math"], *probes["code"]]
    assert all(r["score"] > 3.0 for r in probe_rows)
    assert all(r["id"].split("-")[0] in (r["source"], "dup") for r in probe_rows)  # the rows' own ids
    assert set(reps["mirror"][0]) == {"id", "source", "text"}
    saved = json.loads((out / "manifest.json").read_text())
    assert saved["config"]["seed"] == 7 and saved["files"]["probe/math.jsonl"] == 10


def test_deterministic_order_independent_and_seeded(tmp_path: Path) -> None:
    corpus(tmp_path / "a")
    corpus(tmp_path / "b", shuffle_seed=3)  # same documents, other file order
    for name, root in (("one", "a"), ("two", "a"), ("shuffled", "b")):
        build_probe_sets(
            load_probe_config(write_config(tmp_path / f"{name}.yaml", tmp_path / root)), tmp_path / name
        )
    one = outputs(tmp_path / "one")
    assert outputs(tmp_path / "two") == one

    def texts(out: Path) -> dict[str, list[str]]:  # ids of exact duplicates follow the file order
        return {str(p.relative_to(out)): sorted(r["text"] for r in read(p)) for p in out.rglob("*.jsonl")}

    assert texts(tmp_path / "shuffled") == texts(tmp_path / "one")
    build_probe_sets(
        load_probe_config(write_config(tmp_path / "s.yaml", tmp_path / "a"), ["seed=8"]), tmp_path / "s"
    )
    other = outputs(tmp_path / "s")
    assert (
        other.keys() == one.keys() and other["representative/math.jsonl"] != one["representative/math.jsonl"]
    )


def test_bottom_k_is_the_k_smallest_distinct_keys() -> None:
    texts = [f"t{i % 37}" for i in range(100)]  # 37 distinct texts, many repeats
    docs = [_Doc(str(i), "s", t, t.encode(), None) for i, t in enumerate(texts)]
    sampler = BottomK(10)
    for d in docs:
        sampler.offer(sample_key(0, "r", "s", d.digest), d)
    expected = sorted({d.digest for d in docs}, key=lambda g: sample_key(0, "r", "s", g))[:10]
    assert [d.digest for d in sampler.docs()] == expected


def test_shortfall_is_reported(tmp_path: Path) -> None:
    corpus(tmp_path / "data")
    overrides = ["probe_size=60", "sources.4.max_rows=5"]
    manifest = build_probe_sets(
        load_probe_config(write_config(tmp_path / "c.yaml", tmp_path / "data"), overrides), tmp_path / "out"
    )
    assert manifest["sources"]["noise"]["rows"] == manifest["sources"]["noise"]["representative"] == 5
    math = manifest["probes"]["math"]
    taken = {r["text"] for p in (tmp_path / "out" / "representative").iterdir() for r in read(p)}
    eligible = {r["text"] for r in read(tmp_path / "data" / "math.jsonl") if r["q"] > 3}
    assert len(eligible) == 30 and len(eligible - taken) < 30  # the mirror holds some of math's texts
    assert math["quota"] == {"math": 30, "mixed": 30}
    assert math["by_source"]["math"] == len(eligible - taken) and math["short"]["math"] == len(
        eligible & taken
    )
    assert (
        math["count"]
        == len(read(tmp_path / "out" / "probe" / "math.jsonl"))
        == sum(math["by_source"].values())
    )


def test_bad_configs_and_rows_name_file_and_field(tmp_path: Path) -> None:
    corpus(tmp_path / "data")
    path = write_config(tmp_path / "bad.yaml", tmp_path / "data")
    with pytest.raises(ConfigError, match=r"bad\.yaml: sources\.1\.capabilities: unknown capability 'maths'"):
        load_probe_config(path, ["sources.1.capabilities=[maths]"])
    with pytest.raises(ConfigError, match=r"bad\.yaml: sources\.3: .*give files or hub_id"):
        load_probe_config(path, ["sources.3.files=[]"])
    with pytest.raises(
        ConfigError, match=r"sources\.0: score_threshold is set but the source has no score_field"
    ):
        load_probe_config(path, ["score_field=null"])
    with pytest.raises(ConfigError, match="duplicate name"):
        load_probe_config(path, ["sources.1.name=math"])
    with pytest.raises(ConfigError, match="unknown field"):
        load_probe_config(path, ["probe_sise=3"])
    with pytest.raises(ConfigError, match="capability 'code' has no source"):
        load_probe_config(path, ["sources.1.capabilities=[]", "sources.2.capabilities=[math]"])
    rows = read(tmp_path / "data" / "code.jsonl")
    rows[3]["q"] = "high"
    write_jsonl(tmp_path / "data" / "code.jsonl", rows)
    with pytest.raises(DataError, match=r"code\.jsonl:4: score field 'q' is 'high', not a number"):
        build_probe_sets(load_probe_config(path), tmp_path / "out")
    del rows[3]["q"]
    write_jsonl(tmp_path / "data" / "code.jsonl", rows)
    with pytest.raises(DataError, match=r"code\.jsonl:4: missing score field 'q'"):
        build_probe_sets(load_probe_config(path), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_shipped_recipes() -> None:
    paper = load_probe_config("curation/probe_sets_paper")
    assert {c: set(paper.sources_of(c)) for c in paper.capabilities} == {
        c: set(v) for c, v in PAPER_DOMAINS.items()
    }
    assert paper.score_threshold == 4.0 and all(s.hub_id for s in paper.sources)
    synthetic = load_probe_config("curation/probe_sets_synthetic")
    assert synthetic.capabilities == ["code", "math", "knowledge"] and synthetic.synth is not None
    assert [s.name for s in synthetic.sources if not s.capabilities] == [
        f"noise_{k}" for k in ("boilerplate", "broken_code", "gibberish", "shuffled", "spam", "wrong_math")
    ]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus(tmp_path / "data")
    path = write_config(tmp_path / "c.yaml", tmp_path / "data")
    argv = ["curate", "probe-sets", "--config", str(path), "--out", str(tmp_path / "out"), "--set", "seed=3"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seed"] == 3 and report["probes"]["code"]["count"] == 10
    assert (
        main(["curate", "probe-sets", "--config", str(path), "--out", str(tmp_path / "x"), "--set", "seed=a"])
        == 1
    )
    assert "c.yaml: seed: expected int, got 'a'" in capsys.readouterr().err
