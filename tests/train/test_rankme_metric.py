"""RankMe (paper Eq. 8) as a trainer metric: logged with the held-out NLL at every eval."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL_SET
from mobilellm_r1.data.records import read_records
from mobilellm_r1.eval.nll import model_loss_sums, text_examples, token_mean_nll
from mobilellm_r1.eval.rankme import rankme_of_model
from mobilellm_r1.train.config import TrainConfig, load_train_config
from mobilellm_r1.train.objectives import prepare_data
from mobilellm_r1.train.trainer import Trainer

EVAL_DOCS = 8
RUN = [
    TINY_MODEL_SET,
    "data.overrides=[seq_len=32, 'synth={out: data/synth, seed: 0, scale: 0.05}']",
    "data.micro_batch=2",
    "optim.warmup_steps=1",
    "precision=fp32",
    "loss_chunk_tokens=64",
    "steps=2",
    "checkpoint_every=0",
    "eval_every=1",
    f"eval_docs={EVAL_DOCS}",
]


def config(*extra: str) -> TrainConfig:
    return load_train_config("train/tiny_cpu", [*RUN, *extra])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("rankme")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)  # the recipe's data/ paths are relative
        prepare_data(config(), "cpu")
        yield path


def test_rankme_is_logged_at_every_eval_and_matches_the_curation_metric(workdir) -> None:
    trainer = Trainer(config(), device="cpu")
    trainer.fit()
    records = [
        json.loads(line) for line in (workdir / "runs/tiny_cpu/metrics.jsonl").read_text().splitlines()
    ]
    evals = {r["step"]: r for r in records if "rankme" in r}
    assert sorted(evals) == [1, 2]
    assert all("nll/math" in r and 1.0 <= r["rankme"] <= EVAL_DOCS for r in evals.values())
    # the texts: up to eval_docs of the eval files' texts, taken from each file in turn
    per_file = []
    for path in trainer.cfg.eval_files:
        with open(path) as f:
            per_file.append([json.loads(line)["text"] for line in itertools.islice(f, EVAL_DOCS)])
    texts = [t for group in zip(*per_file, strict=True) for t in group][:EVAL_DOCS]
    want = rankme_of_model(trainer.model, trainer.tokenizer, texts, max_tokens=trainer.seq_len)
    assert abs(evals[2]["rankme"] - want) < 1e-6 * want  # no training after the last eval
    assert abs(trainer.evaluate()["rankme"] - want) < 1e-6 * want


def test_rankme_can_be_turned_off(workdir) -> None:
    result = Trainer(config("eval_rankme=false", "out_dir=runs/off"), device="cpu").evaluate()
    assert "rankme" not in result and "nll/math" in result


def test_held_out_nll_is_the_shared_token_mean(workdir) -> None:
    """Trainer.evaluate's nll/<file> is eval.nll.token_mean_nll of the plain model on the file's texts."""
    trainer = Trainer(config("eval_rankme=false", "out_dir=runs/nll"), device="cpu")
    result = trainer.evaluate()
    for path in trainer.cfg.eval_files:
        texts = [r.text for r in itertools.islice(read_records(path), EVAL_DOCS)]
        rows = text_examples(trainer.tokenizer, texts, trainer.seq_len)
        with torch.no_grad():
            want, _ = token_mean_nll([(x, x) for x in rows], model_loss_sums(trainer.model))
        assert result[f"nll/{Path(path).stem}"] == pytest.approx(want, rel=1e-5)
