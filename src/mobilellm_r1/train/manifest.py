"""Per-file checksums of a checkpoint directory: written when it is sealed, verified before it is read.

`manifest.json` lists every other file under the directory (relative path -> size in bytes and
xxh3-128 digest). The digest detects corruption (a flipped bit, a truncated or lost file, a file
that was never listed); it is not a signature: whoever can edit the files can rewrite the manifest
too. Reading a checkpoint is safe anyway because it holds only tensors (safetensors) and JSON.
xxh3-128 hashed 6-22 GB/s on one core of a busy 2-core machine (sha256 0.6, blake2b 0.3 GB/s
there; a 950M model with its AdamW moments, 11.4 GB, takes under 2 s), so verifying costs about
one extra read of the files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import xxhash

from ..atomic import atomic_write

MANIFEST = "manifest.json"
FORMAT = "mobilellm-r1 checkpoint 2"
_CHUNK = 16 * 2**20


def file_digest(path: Path) -> dict[str, int | str]:
    """{"bytes": size, "xxh3_128": hex digest} of one file, read in 16 MiB chunks."""
    h, size = xxhash.xxh3_128(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, "xxh3_128": h.hexdigest()}


def listed_files(directory: Path) -> list[str]:
    """Every regular file under `directory` except the manifest, as sorted relative paths."""
    files = (p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    return sorted(str(p.relative_to(directory)) for p in files)


def digests(directory: Path, names: Iterable[str]) -> dict[str, dict[str, int | str]]:
    return {name: file_digest(directory / name) for name in names}


def write_manifest(directory: Path, entries: dict[str, dict[str, int | str]]) -> None:
    """Write `directory/manifest.json` (atomically, fsynced) from `digests` results."""
    text = json.dumps({"format": FORMAT, "files": dict(sorted(entries.items()))}, indent=1)
    atomic_write(directory / MANIFEST, text, fsync=True)


def read_manifest(directory: Path) -> dict[str, dict]:
    """The manifest's file table; ValueError naming the problem if it is missing or malformed."""
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"{MANIFEST} is missing") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{MANIFEST} is unreadable ({e})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{MANIFEST} is not a {FORMAT!r} manifest")
    return files


def first_problem(directory: Path, names: list[str], files: dict[str, dict]) -> str | None:
    """The first of `names` whose size or digest differs from the manifest table `files`
    (a message naming the file), or None when all match."""
    for name in names:
        want, path = files[name], directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size:,} bytes, the manifest says {want.get('bytes')}"
        if file_digest(path)["xxh3_128"] != want.get("xxh3_128"):
            return f"{name} fails its checksum (corrupted)"
    return None


def unlisted(directory: Path, files: dict[str, dict]) -> list[str]:
    """Files present under `directory` that the manifest does not list."""
    return [name for name in listed_files(directory) if name not in files]
