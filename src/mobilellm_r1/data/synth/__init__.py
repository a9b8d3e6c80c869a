"""The embedded synthetic reasoning corpus: deterministic from a seed, no downloads.

`generate(SynthConfig(seed=...), out_dir)` writes::

    pretrain/{math,code,knowledge}.jsonl       {"id", "text", "quality": "high", "domain", ...}
    pretrain/noise_{kind}.jsonl                {"id", "text", "quality": "low", "noise_kind", ...}
    sft/{general,reasoning}.jsonl              {"id", "messages": [{"role", "content"}], "meta"}
    probe/{code,math,knowledge}.jsonl          {"id", "domain", "text"}
    eval/gsm8k/test.jsonl                      GSM8K layout ("question", "answer" ending "#### N")
    eval/math500/test.jsonl                    MATH500 layout
    eval/humaneval/HumanEval.jsonl.gz          HumanEval layout
    eval/mmlu/{dev,val,test}/synthetic_world_{split}.csv   MMLU layout
    eval/structured/{gsm8k,math500,mmlu}.jsonl structured forms behind the eval items
    manifest.json                              config, records/bytes/sha256 per file

Domains: math word problems and equations at five levels (`math`), small Python functions
with tests (`code`), a generated world of entities described in prose with questions about it
(`world`, `knowledge`), low-quality sources for curation (`noise`) and chat data (`sft`).
Eval items are held out of all training files (see `build.Guard`). The same seed gives
byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._util import sha256_file, write_csv, write_json, write_jsonl, write_jsonl_gz
from .build import Output, build_all
from .config import SynthConfig

__all__ = ["MANIFEST_NAME", "SynthConfig", "generate", "write_outputs"]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


def write_outputs(outputs: list[Output], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Write each output (atomically) and return `{path: {"records", "bytes", "sha256"}}`."""
    files: dict[str, dict[str, Any]] = {}
    for out in outputs:
        path = out_dir / out.path
        if out.fmt == "jsonl":
            write_jsonl(path, out.rows)
        elif out.fmt == "jsonl.gz":
            write_jsonl_gz(path, out.rows)
        elif out.fmt == "csv":
            write_csv(path, out.rows)
        else:
            raise ValueError(f"unknown output format {out.fmt!r}")
        files[out.path] = {
            "records": len(out.rows),
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
        }
    return dict(sorted(files.items()))


def generate(cfg: SynthConfig, out_dir: Path) -> dict[str, Any]:
    """Generate the whole corpus under `out_dir` and return the manifest (also written there)."""
    out_dir = Path(out_dir)
    files = write_outputs(build_all(cfg), out_dir)
    manifest = {
        "generator": "mobilellm_r1.data.synth",
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "files": files,
        "total_records": sum(f["records"] for f in files.values()),
    }
    write_json(out_dir / MANIFEST_NAME, manifest)
    return manifest
