"""Influence scores (MobileLLM-R1 Eq. 2-4): forward-mode scores equal per-sample-gradient dot products and
central differences; they predict one-step probe-loss drops; DataInf vs the exact damped inverse Hessian;
Eq. 4 weights; the resumable parquet runner."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from helpers import small_config
from mobilellm_r1.curation.influence import (
    AdamPreconditioner,
    DataInfPreconditioner,
    IdentityPreconditioner,
    _loss_sums,
    influence_scores,
    joint_influence,
    joint_weights,
    pad_batch,
    per_sample_gradients,
    probe_gradient,
    probe_loss,
    score_finite_difference,
    score_per_sample_grad,
    select_params,
)
from mobilellm_r1.curation.influence_run import Checkpoint, InfluenceScorer, score_samples
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import save_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


def random_rows(n: int, vocab: int, low: int, high: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (n,), generator=gen).tolist()
    return [torch.randint(vocab, (k,), generator=gen).tolist() for k in lengths]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).double()
    return float(torch.corrcoef(ranks)[0, 1])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-sample |a - b| / |b| (denominators floored at 1% of the scores' RMS)."""
    floor = 0.01 * b.pow(2).mean().sqrt()
    return float(((a - b).abs() / b.abs().clamp(min=floor)).max())


# ====================================================================== parameters
def test_select_params_subsets() -> None:
    model = build_model(small_config(), seed=0)
    assert list(select_params(model, "all")) == [n for n, _ in model.named_parameters()]
    assert list(select_params(model, "embeddings")) == ["embed_tokens.weight"]  # tied head included
    last = list(select_params(model, "last:1"))
    assert last[-1] == "norm.weight" and all(n.startswith("layers.1.") for n in last[:-1]) and len(last) == 7
    assert len(select_params(model, "last:2")) == 13
    untied = build_model(small_config(tie_word_embeddings=False), seed=0)
    assert list(select_params(untied, "embeddings")) == ["embed_tokens.weight", "lm_head.weight"]
    assert list(select_params(model, ["norm.weight", "embed_tokens.weight"])) == [
        "embed_tokens.weight",
        "norm.weight",
    ]
    for bad in ("last:0", "last:3", "head", ["nope"]):
        with pytest.raises(ValueError):
            select_params(model, bad)


# ====================================================================== exactness
@pytest.mark.parametrize("subset", ["all", "embeddings", "last:1"])
def test_jvp_equals_per_sample_grad_and_finite_difference(subset: str) -> None:
    model = build_model(small_config(), seed=0, dtype=torch.float64)
    rows = random_rows(10, 1000, 2, 24, seed=1)
    probe = random_rows(6, 1000, 8, 16, seed=2)
    params = select_params(model, subset)
    g_probe = probe_gradient(model, probe, params, batch_size=4)
    gen = torch.Generator().manual_seed(3)
    v = {n: torch.rand(p.shape, generator=gen, dtype=torch.float64) * 1e-4 for n, p in params.items()}
    preconditioners = {
        "identity": IdentityPreconditioner(),
        "adam": AdamPreconditioner(v, list(params), step=20),
        "datainf": DataInfPreconditioner(model, params, rows[:4], batch_size=2),
    }
    for name, pre in preconditioners.items():
        u = pre(g_probe)
        jvp = influence_scores(model, rows, params, u, batch_size=4)
        per_sample = score_per_sample_grad(model, rows, params, u, batch_size=3)
        finite = score_finite_difference(model, rows, params, u)
        err_grad, err_fd = relative_error(jvp, per_sample), relative_error(finite, per_sample)
        print(f"{subset:>10} {name:>8}: |jvp-grad|/|grad| {err_grad:.1e}  |fd-grad|/|grad| {err_fd:.1e}")
        assert err_grad <= 1e-6 and err_fd <= 1e-6


def test_multi_query_batching_and_one_token_rows() -> None:
    model = build_model(small_config(), seed=0)
    rows = [*random_rows(7, 1000, 2, 20, seed=4), [5]]
    params = select_params(model, "last:1")
    u1 = probe_gradient(model, random_rows(4, 1000, 6, 12, seed=5), params)
    u2 = [2.0 * t for t in u1]
    both = influence_scores(model, rows, params, [u1, u2], batch_size=3)
    looped = influence_scores(model, rows, params, [u1, u2], batch_size=8, vmap_queries=False)
    assert both.shape == (2, 8) and both[1, -1] == 0.0  # a one-token row has no target
    torch.testing.assert_close(both[1], 2.0 * both[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(both, looped, rtol=1e-4, atol=1e-6)
    half = influence_scores(model, rows, params, u1, batch_size=3, autocast_dtype=torch.bfloat16)
    assert torch.corrcoef(torch.stack([half, both[0]]))[0, 1] > 0.99


# ====================================================================== one SGD step
def test_score_predicts_one_step_probe_loss_drop() -> None:
    """theta' = theta - eta grad L(x): L_P(theta) - L_P(theta') ~= eta * score(x), over 200 samples."""
    model = build_model(small_config(), seed=0, dtype=torch.float64)
    params = select_params(model, "all")
    probe = random_rows(12, 1000, 8, 24, seed=6)
    samples = random_rows(200, 1000, 3, 24, seed=7)
    base = probe_loss(model, probe)
    scores = influence_scores(model, samples, params, probe_gradient(model, probe, params), batch_size=25)
    eta, drops = 1e-3, torch.zeros(len(samples), dtype=torch.float64)
    for idx, grads in per_sample_gradients(model, samples, params, batch_size=25):
        for b, i in enumerate(idx):
            stepped = {n: p.detach() - eta * g[b] for (n, p), g in zip(params.items(), grads, strict=True)}
            drops[i] = base - probe_loss(model, probe, stepped)
    pearson = float(torch.corrcoef(torch.stack([drops, eta * scores]))[0, 1])
    print(f"one-step: Pearson(actual drop, eta*score) = {pearson:.5f} (eta={eta})")
    assert pearson >= 0.99
    assert float(((drops > 0) == (scores > 0)).double().mean()) > 0.9


# ====================================================================== exact inverse Hessian
def test_datainf_and_identity_vs_exact_damped_inverse_hessian() -> None:
    """Untied 1-layer model, parameter subset = LM head (128 parameters; the loss is convex in it, so
    H is PSD): Spearman of DataInf / identity scores with g_P^T (H + Lambda)^-1 g_x, Lambda = DataInf's
    per-block damping; DataInf's closed form equals 1/n sum_i (g_i g_i^T + lambda I)^-1 v exactly."""
    vocab = 16
    cfg = small_config(
        hidden_size=8,
        intermediate_size_mlp=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=4,
        vocab_size=vocab,
        initializer_range=0.2,
        tie_word_embeddings=False,
    )
    model = build_model(cfg, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)

    def sample(kind: int, length: int = 12) -> list[int]:  # arithmetic runs / repeated motifs / noise
        start = int(torch.randint(vocab, (1,), generator=gen))
        if kind == 0:
            step = int(torch.randint(1, 4, (1,), generator=gen))
            return [(start + k * step) % vocab for k in range(length)]
        if kind == 1:
            return (torch.randint(vocab, (3,), generator=gen).tolist() * length)[:length]
        return torch.randint(vocab, (length,), generator=gen).tolist()

    corpus = [sample(i % 3) for i in range(1200)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        ids, labels = pad_batch([corpus[int(i)] for i in torch.randint(len(corpus), (32,), generator=gen)])
        sums, counts = model_loss(model, ids, labels)
        opt.zero_grad()
        (sums.sum() / counts.sum()).backward()
        opt.step()
    params = select_params(model, ["lm_head.weight"])
    train = [sample(i % 3) for i in range(64)]
    probe = [sample(0) for _ in range(16)]
    candidates = [sample(i % 3, int(torch.randint(4, 13, (1,), generator=gen))) for i in range(200)]
    g_probe = probe_gradient(model, probe, params)
    datainf = DataInfPreconditioner(model, params, train)
    (lam,) = datainf.lambdas

    head = model.lm_head.weight.detach()
    ids, labels = pad_batch(train)

    def train_loss(flat: torch.Tensor) -> torch.Tensor:
        frozen = {n: p.detach() for n, p in model.named_parameters()}
        sums, counts = _loss_sums(model, {**frozen, "lm_head.weight": flat.view_as(head)}, ids, labels, 8192)
        return (sums / counts.clamp(min=1)).mean()

    hessian = torch.func.hessian(train_loss)(head.flatten())
    assert torch.linalg.eigvalsh(hessian)[0] > -1e-10
    eye = torch.eye(hessian.shape[0], dtype=torch.float64)
    v = g_probe[0].flatten()
    u_exact = torch.linalg.solve(hessian + lam * eye, v).view_as(head)

    grads = torch.cat([g[0].flatten(1) for _, g in per_sample_gradients(model, train, params)])
    dense = sum(torch.linalg.inv(torch.outer(g, g) + lam * eye) for g in grads) / len(grads)
    torch.testing.assert_close(datainf(g_probe)[0].flatten(), dense @ v, rtol=1e-9, atol=0.0)

    exact = influence_scores(model, candidates, params, [u_exact])
    rho_datainf = spearman(influence_scores(model, candidates, params, datainf(g_probe)), exact)
    rho_identity = spearman(influence_scores(model, candidates, params, g_probe), exact)
    fisher = grads.T @ grads / len(grads)
    u_fisher = torch.linalg.solve(fisher + lam * eye, v).view_as(head)
    rho_fisher = spearman(influence_scores(model, candidates, params, [u_fisher]), exact)
    print(
        f"Spearman vs exact (H + {lam:.2e} I)^-1: DataInf {rho_datainf:.3f}, identity {rho_identity:.3f}, "
        f"exact damped Fisher {rho_fisher:.3f}"
    )
    assert rho_datainf > 0.5 and rho_identity > 0.5


def model_loss(model: torch.nn.Module, ids: torch.Tensor, labels: torch.Tensor):
    return _loss_sums(model, dict(model.named_parameters()), ids, labels, 8192)


# ====================================================================== Adam preconditioner
def test_adam_preconditioner_from_optimizer_and_state_dict() -> None:
    model = build_model(small_config(), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-6)
    rows = random_rows(4, 1000, 6, 10, seed=8)
    for _ in range(3):
        sums, counts = model_loss(model, *pad_batch(rows))
        opt.zero_grad()
        (sums.sum() / counts.sum()).backward()
        opt.step()
    params = select_params(model, "last:1")
    g = probe_gradient(model, rows, params)
    u = AdamPreconditioner.from_optimizer(opt, model, list(params))(g)
    state = {p: opt.state[p] for p in params.values()}
    expected = [
        gi / ((state[p]["exp_avg_sq"] / (1 - 0.95**3)).sqrt() + 1e-6)
        for gi, p in zip(g, params.values(), strict=True)
    ]
    for a, b in zip(u, expected, strict=True):
        torch.testing.assert_close(a, b)
    fqn = {
        "state": {n: {"exp_avg_sq": opt.state[p]["exp_avg_sq"], "step": 3} for n, p in params.items()},
        "param_groups": [{"betas": (0.9, 0.95), "eps": 1e-6}],
    }
    for a, b in zip(AdamPreconditioner.from_state_dict(fqn, list(params))(g), expected, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        AdamPreconditioner({}, ["norm.weight"])


# ====================================================================== Eq. 3-4
def test_joint_influence_eq4_by_hand() -> None:
    scores = {
        ("code", "t1"): torch.tensor([1.0, -2.0]),
        ("code", "t2"): torch.tensor([3.0, 0.0]),
        ("math", "t1"): torch.tensor([0.0, 4.0]),
        ("math", "t2"): torch.tensor([-1.0, 1.0]),
    }
    steps = {"t1": 100, "t2": 300}  # alpha_t = 1/4, 3/4; alpha_c = 1/2
    weights = joint_weights(list(scores), steps)
    assert weights == {
        ("code", "t1"): 0.125,
        ("code", "t2"): 0.375,
        ("math", "t1"): 0.125,
        ("math", "t2"): 0.375,
    }
    expected = torch.tensor(
        [0.125 * 1 + 0.375 * 3 + 0.125 * 0 + 0.375 * -1, 0.125 * -2 + 0.375 * 0 + 0.125 * 4 + 0.375 * 1]
    )
    torch.testing.assert_close(joint_influence(scores, steps), expected.double())
    own = {("code", "a"): 1, ("code", "b"): 3, ("math", "c"): 5}  # capability-specific checkpoints
    per_cap = joint_weights([("code", "a"), ("code", "b"), ("math", "c")], own)
    assert per_cap == {("code", "a"): 0.125, ("code", "b"): 0.375, ("math", "c"): 0.5}
    with pytest.raises(ValueError):
        joint_weights([("code", "t0")], {"t0": 0})


# ====================================================================== runner
class CharTokenizer:
    def encode(self, text: str, bos: bool = False) -> list[int]:
        return ([1] if bos else []) + [3 + ord(ch) % 990 for ch in text]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_runner_parquet_resume_equals_one_shot(tmp_path: Path) -> None:
    words = ["alpha", "beta", "gamma", "delta", "sum", "x + y", "def f():", "return 2"]
    samples = write_jsonl(
        tmp_path / "samples.jsonl",
        [
            {
                "id": f"s{i}",
                "text": " ".join(words[(i * k) % 8] for k in range(1, 3 + i % 5)),
                "source": f"src{i % 2}",
            }
            if i % 4
            else {"id": i, "text": "plain text " * (i % 3 + 1)}
            for i in range(10)
        ],
    )
    probes = {
        "math": write_jsonl(tmp_path / "math.jsonl", [{"text": f"{i} + {i} = {2 * i}"} for i in range(4)]),
        "code": ["def add(a, b):\n    return a + b", "for i in range(3): print(i)"],
    }
    checkpoints = []
    for t, step in ((1, 100), (2, 300)):
        directory = save_pretrained(build_model(small_config(), seed=t), None, tmp_path / f"ckpt{t}")
        checkpoints.append(Checkpoint(f"t{t}", step, directory))
    settings = dict(seq_len=24, batch_size=3, chunk_size=4, preconditioner="datainf", datainf_samples=4)
    tok = CharTokenizer()

    one_shot = score_samples(samples, tmp_path / "one", checkpoints, probes, tok, **settings)
    assert one_shot["computed"] == [0, 1, 2] and one_shot["output"] is not None
    table = pq.read_table(one_shot["output"])
    columns = ["id", "source", "tokens", "math@t1", "math@t2", "code@t1", "code@t2", "joint"]
    assert table.column_names == columns and table.num_rows == 10
    assert table["id"].to_pylist()[:2] == ["0", "s1"] and table["source"].to_pylist()[:2] == [None, "src1"]
    assert all(1 <= n <= 24 for n in table["tokens"].to_pylist())
    cols = {c: torch.tensor(table[c].to_pylist(), dtype=torch.float64) for c in columns[3:]}
    joint = 0.125 * (cols["math@t1"] + cols["code@t1"]) + 0.375 * (cols["math@t2"] + cols["code@t2"])
    torch.testing.assert_close(cols["joint"], joint)

    staged = tmp_path / "staged"  # "killed" after the first chunk, with a stale temp file left behind
    first = score_samples(samples, staged, checkpoints, probes, tok, max_chunks=1, **settings)
    assert first["computed"] == [0] and first["output"] is None
    part0 = staged / "parts" / "part-00000.parquet"
    before = part0.stat()
    (staged / "parts" / ".part-00001.parquet.abc.tmp").write_bytes(b"garbage")
    resumed = score_samples(samples, staged, checkpoints, probes, tok, **settings)
    assert resumed["skipped"] == [0] and resumed["computed"] == [1, 2]
    after = part0.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert pq.read_table(resumed["output"]).equals(table)

    scorer = InfluenceScorer(checkpoints, probes, tok, datainf_train=None)
    with pytest.raises(ValueError, match="other settings"):
        scorer.run(samples, staged)  # different settings than the parts on disk


@pytest.mark.parametrize("subset", ["all", "last:1"])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_fused_head_rule_equals_pytorchs(subset: str, tied: bool) -> None:
    """The LM-head cross-entropy's own forward-mode rule (no tangent logits) gives PyTorch's scores,
    for K queries under vmap and one by one, with padded rows and a one-token row."""
    model = build_model(small_config(tie_word_embeddings=tied), seed=0)
    rows = [*random_rows(7, 1000, 2, 20, seed=6), [5]]
    params = select_params(model, subset)
    u1 = probe_gradient(model, random_rows(4, 1000, 6, 12, seed=7), params)
    u2 = [torch.randn_like(t) for t in u1]
    for vmap_queries in (True, False):
        fused = influence_scores(model, rows, params, [u1, u2], batch_size=3, vmap_queries=vmap_queries)
        plain = influence_scores(
            model, rows, params, [u1, u2], batch_size=3, vmap_queries=vmap_queries, jvp_head=False
        )
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-6)
    assert fused[:, -1].eq(0).all()  # the one-token row has no target
