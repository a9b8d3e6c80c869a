"""`mobilellm-r1 curate ...` end to end on small jsonl files."""

import json

from helpers import small_config
from mobilellm_r1.cli import main
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import save_pretrained
from mobilellm_r1.tokenizer import load_tokenizer

PROSE = (
    "The river runs through the old town and the people who live there walk along it in the evening. "
    "They talk about the weather, the market and the news of the week, and the children play by the water."
)


def _write(path, texts):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))


def test_filter_and_dedup(tmp_path, capsys) -> None:
    src = tmp_path / "in.jsonl"
    _write(src, [PROSE, PROSE, PROSE.upper(), "$$$ ### @@@ %%% !!! ***", PROSE.replace("river", "road")])
    out = tmp_path / "clean.jsonl"
    assert main(["curate", "filter", "--in", str(src), "--out", str(out), "--heuristics", "mixed"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)  # stdout holds only the JSON report; the bar is on stderr
    assert report["read"] == 5 and report["kept"] == 4  # the symbol line is dropped
    assert "filter: heuristics: 100%" in captured.err and "5/5" in captured.err
    dedup = tmp_path / "dedup.jsonl"
    removed = tmp_path / "removed.jsonl"
    args = ["curate", "dedup", "--in", str(out), "--out", str(dedup), "--minhash", "0.7"]
    assert main([*args, "--rejected", str(removed)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["kept"] == 1 and report["removed"]["exact"] == 2 and report["removed"]["minhash"] == 1
    for label in (
        "dedup: read, exact+minhash signatures: 100%",
        "dedup: minhash LSH: 100%",
        "dedup: write: 100%",
    ):
        assert label in captured.err
    assert len(removed.read_text().splitlines()) == 3


def test_rankme_and_errors(tmp_path, capsys) -> None:
    tok = load_tokenizer()
    cfg = small_config(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=[tok.eos_id])
    save_pretrained(build_model(cfg, seed=0), tok, tmp_path / "m")
    src = tmp_path / "in.jsonl"
    _write(src, [f"{PROSE} {i}" for i in range(20)])
    assert (
        main(["curate", "rankme", "--model", str(tmp_path / "m"), "--in", str(src), "--device", "cpu"]) == 0
    )
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["texts"] == 20 and 1.0 <= report["rankme"] <= 20.0
    assert "rankme: embed: 100%" in captured.err and "20/20" in captured.err
    assert main(["curate", "filter", "--in", str(src), "--out", str(tmp_path / "o.jsonl")]) == 1
    assert "give --heuristics" in capsys.readouterr().err
