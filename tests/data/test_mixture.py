"""Mixture loader: token shares, determinism, exact resume in a new process, rank sharding."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mobilellm_r1.data.mixture import ArraySource, MixtureLoader, stand_in_sources
from mobilellm_r1.data.recipes import build_loader, load_mixture

EOS = 999


def small_sources() -> dict[str, ArraySource]:
    return stand_in_sources(["a", "b", "c"], seed=7, vocab=EOS)


WEIGHTS = {"a": 0.5, "b": 0.3, "c": 0.2}


def loader(**kw) -> MixtureLoader:
    args = dict(seq_len=64, batch_size=4, eos_id=EOS, seed=3)
    return MixtureLoader(small_sources(), WEIGHTS, **{**args, **kw})


def test_phase2_token_shares_within_half_a_point() -> None:
    recipe = load_mixture("data/pretrain_phase2")
    sources = stand_in_sources([s.name for s in recipe.active], vocab=EOS)
    mix = build_loader(recipe, batch_size=16, eos_id=EOS, sources=sources)
    served = np.zeros(len(mix.names))
    while served.sum() < 1_000_000:
        batch = mix.next_batch()
        np.add.at(served, batch.source.numpy(), batch.input_ids.shape[1] + 1)
    weights = recipe.normalized_weights()
    for name, share in zip(mix.names, served / served.sum(), strict=True):
        assert abs(share - weights[name]) < 0.005, (name, share, weights[name])
    report = mix.report()
    assert all(abs(report[n]["share"] - weights[n]) < 0.005 for n in weights)


def test_same_seed_same_batches_and_seed_matters() -> None:
    a, b, c = loader(), loader(), loader(seed=4)
    batches_a = [a.next_batch().input_ids for _ in range(6)]
    assert all(torch.equal(x, b.next_batch().input_ids) for x in batches_a)
    assert not all(torch.equal(x, c.next_batch().input_ids) for x in batches_a)


def test_sample_layout() -> None:
    mix = loader(seq_len=256, batch_size=2)
    batch = mix.next_batch()
    assert batch.input_ids.shape == batch.labels.shape == batch.position_ids.shape == (2, 256)
    assert torch.equal(batch.input_ids[:, 1:], batch.labels[:, :-1])
    ids, pos, doc = batch.input_ids[0], batch.position_ids[0], batch.doc_ids[0]
    eos_at = (ids == EOS).nonzero().flatten().tolist()
    assert eos_at, "short documents: a 256-token sample holds a document end"
    for i in eos_at:
        if i + 1 < len(ids):
            assert pos[i + 1] == 0 and doc[i + 1] == doc[i] + 1
    assert torch.all((pos[1:] == pos[:-1] + 1) | (pos[1:] == 0))


def test_resume_in_new_process_matches_uninterrupted(tmp_path) -> None:
    mix = loader()
    for _ in range(5):
        mix.next_batch()
    state = tmp_path / "state.json"
    state.write_text(json.dumps(mix.state_dict()))
    expected = torch.stack([mix.next_batch().input_ids for _ in range(4)])
    script = textwrap.dedent(
        f"""
        import json, sys, numpy as np
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from test_mixture import loader
        mix = loader()
        mix.load_state_dict(json.load(open({str(state)!r})))
        np.save({str(tmp_path / "out.npy")!r}, np.stack([mix.next_batch().input_ids.numpy() for _ in range(4)]))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "out.npy")), expected)


def test_two_ranks_disjoint_and_union_equals_one_rank() -> None:
    one = loader(batch_size=4)
    ranks = [loader(batch_size=2, rank=r, world_size=2) for r in range(2)]
    single = torch.cat([one.next_batch().input_ids for _ in range(8)])
    parts = [torch.cat([r.next_batch().input_ids for _ in range(8)]) for r in ranks]
    # global sample i goes to rank i % 2: interleaving the ranks rebuilds the 1-rank stream
    interleaved = torch.stack([parts[i % 2][i // 2] for i in range(len(single))])
    assert torch.equal(interleaved, single)
    rows = [set(map(tuple, p.tolist())) for p in parts]
    assert not rows[0] & rows[1]
    assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()


def test_epochs_reported_for_small_source() -> None:
    sources = {"big": ArraySource([np.arange(5000) % EOS]), "small": ArraySource([[1, 2, 3]])}
    mix = MixtureLoader(sources, {"big": 0.9, "small": 0.1}, seq_len=31, batch_size=8, eos_id=EOS)
    for _ in range(20):
        mix.next_batch()
    report = mix.report()
    assert report["small"]["epochs"] == pytest.approx(report["small"]["tokens"] / 4)
    assert report["small"]["epochs"] > 10 and report["big"]["epochs"] < 1


def test_bad_weights_and_state() -> None:
    with pytest.raises(ValueError, match="weights"):
        MixtureLoader(small_sources(), {"a": 1.0}, seq_len=8, batch_size=1, eos_id=EOS)
    with pytest.raises(ValueError, match=">= 0"):
        MixtureLoader(small_sources(), {"a": -1, "b": 1, "c": 1}, seq_len=8, batch_size=1, eos_id=EOS)
    state = loader().state_dict()
    state["streams"].pop("a")
    with pytest.raises(ValueError, match="sources"):
        loader().load_state_dict(state)
