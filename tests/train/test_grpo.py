"""GRPO: advantages, the clipped/KL loss, chunked token log-probs, prompts, and a reward that rises."""

import json

import pytest
import torch

from mobilellm_r1.tokenizer import load_tokenizer
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.grpo_filter import FILTER_FILE
from mobilellm_r1.train.grpo_toy import sum_prompts, warm_start
from mobilellm_r1.train.objectives.grpo import (
    GRPOObjective,
    PromptSampler,
    group_advantages,
    grpo_token_loss,
    load_prompts,
    seeded_pool,
    token_logprobs,
)
from mobilellm_r1.train.trainer import Trainer


def test_group_advantages() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    adv = group_advantages(rewards)
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-3)
    assert torch.equal(adv[1], torch.zeros(4))  # no signal in a uniform group


def test_token_loss_clipping_and_kl() -> None:
    logp = torch.log(torch.tensor([0.5, 0.5, 0.5]))
    old = torch.log(torch.tensor([0.25, 0.5, 0.8]))  # ratios 2.0, 1.0, 0.625
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, kl, clipped = grpo_token_loss(logp, old, logp.clone(), adv, clip_eps=0.2, beta=0.1)
    # ratio 2 with A>0 is clipped to 1.2; ratio 0.625 with A<0 is clipped to 0.8 (min picks -0.8)
    assert torch.allclose(loss, torch.tensor([-1.2, -1.0, 0.8]))
    assert torch.equal(kl, torch.zeros(3)) and clipped.tolist() == [1.0, 0.0, 1.0]
    ref = torch.log(torch.tensor([0.25, 0.5, 0.5]))
    _, kl, _ = grpo_token_loss(logp, logp, ref, torch.zeros(3), 0.2, 1.0)
    q = torch.log(torch.tensor(0.5))
    assert torch.allclose(kl[0], torch.exp(q) - q - 1) and kl[1] == 0  # k3 >= 0, zero when equal


def test_token_logprobs_equal_full_softmax() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    got = token_logprobs(hidden, weight, targets, chunk=10)
    want = torch.log_softmax(hidden @ weight.T, -1).gather(1, targets[:, None]).squeeze(1)
    assert torch.allclose(got.double(), want, atol=1e-6)
    g1 = torch.autograd.grad(got.sum(), (hidden, weight))
    g2 = torch.autograd.grad(want.sum(), (hidden, weight))
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_load_prompts_formats_and_errors(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    rows = [
        {"problem": "What is 1+1?", "solution": "It is $\\boxed{2}$."},  # NuminaMath-TIR
        {"question": "Two apples and one more?", "answer": "2 + 1 = 3\n#### 3"},  # GSM8K
        {"messages": [{"role": "user", "content": "5*5?"}, {"role": "assistant", "content": "25"}],
         "meta": {"domain": "math", "answer": "25"}},
        {"messages": [{"role": "user", "content": "code"}], "meta": {"domain": "code", "answer": "x"}},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = load_prompts([str(path)])
    assert [p.answer for p in prompts] == ["2", "3", "25"]  # the code row is filtered out
    assert prompts[0].messages[0]["role"] == "system" and prompts[0].messages[-1]["content"] == "What is 1+1?"
    assert prompts[2].messages == [{"role": "user", "content": "5*5?"}]  # assistant reply dropped
    path.write_text(json.dumps({"problem": "no answer"}) + "\n")
    with pytest.raises(ValueError, match=r"p\.jsonl:1: no gold answer"):
        load_prompts([str(path)])


def test_load_prompts_bad_lines_name_file_and_line(tmp_path) -> None:
    """Prompts are read with data.records: a malformed line or a non-object row (which crashed with
    AttributeError before) is a ValueError naming file:line."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"problem": "1+1?", "answer": "2"}\n\n{"problem": \n')
    with pytest.raises(ValueError, match=r"p\.jsonl:3: malformed JSON"):
        load_prompts([str(path)])
    path.write_text('["a list"]\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:1: expected a JSON object, got list"):
        load_prompts([str(path)])


def test_prompt_sampler_resumes() -> None:
    prompts = load_prompts_stub(7)
    a = PromptSampler(prompts, seed=3)
    a.take(10)
    b = PromptSampler(prompts, seed=3)
    b.load_state_dict(a.state_dict())
    assert [p.id for p in a.take(9)] == [p.id for p in b.take(9)]


def load_prompts_stub(n: int):
    from mobilellm_r1.train.objectives.grpo import Prompt

    return [Prompt(str(i), [{"role": "user", "content": str(i)}], str(i)) for i in range(n)]


@pytest.fixture(scope="module")
def toy_init(tmp_path_factory):
    """The toy policy that knows the answer format but not the answer (shared by this module)."""
    return warm_start(load_tokenizer(), sum_prompts(200, seed=0), tmp_path_factory.mktemp("toy") / "init")


def test_grpo_raises_reward(tmp_path, toy_init) -> None:
    rows = sum_prompts(200, seed=0)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_train_config(
        "train/grpo_tiny_cpu",
        [
            f"model.init_from={toy_init}",
            f"grpo.prompts=[{tmp_path / 'prompts.jsonl'}]",
            f"out_dir={tmp_path / 'run'}",
            "steps=30",
            "grpo.max_new_tokens=6",  # \\boxed{d} and <|eot_id|>
            "grpo.prompts_per_step=4",
            "optim.lr=2e-3",
            "checkpoint_every=0",
        ],
    )
    trainer = Trainer(cfg, device="cpu")
    trainer.fit()
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward"] for r in log if "reward" in r]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.3 and last > first + 0.3, rewards
    assert {"kl", "clip_frac", "completion_len", "groups_with_signal"} <= set(log[-1])
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def filter_run(tmp_path, init, rows: list[dict], *sets: str) -> tuple:
    """A GRPO trainer (not fitted) over `rows` from the toy policy `init`, with `sets` overrides."""
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    overrides = [
        f"model.init_from={init}",
        f"grpo.prompts=[{tmp_path / 'prompts.jsonl'}]",
        f"out_dir={tmp_path / 'run'}",
        "grpo.max_new_tokens=6",
        "grpo.prompts_per_step=4",
        "checkpoint_every=0",
        *sets,
    ]
    cfg = load_train_config("train/grpo_tiny_cpu", overrides)
    return Trainer(cfg, device="cpu"), cfg


def test_pass_rate_filter_keeps_prompts_with_signal(tmp_path, toy_init, monkeypatch) -> None:
    rows = sum_prompts(24, seed=0)
    rows += [{**r, "id": f"never{i}", "answer": "12"} for i, r in enumerate(sum_prompts(8, seed=1))]
    trainer, cfg = filter_run(tmp_path, toy_init, rows, "grpo.filter_samples=8")
    saved = json.loads((tmp_path / "run" / FILTER_FILE).read_text())
    solved = dict(zip(saved["ids"], saved["solved"], strict=True))
    assert set(solved) == {r["id"] for r in rows}
    assert all(solved[f"never{i}"] == 0 for i in range(8))  # one boxed digit is never 12
    kept = {p.id for p in trainer.loader.prompts}
    assert kept and kept == {pid for pid, c in solved.items() if 0 < c < 8}

    def sample_again(*args):
        raise AssertionError("the saved pass counts should have been used")

    # a resumed build reads the counts back; a changed filter setting samples again
    monkeypatch.setattr(GRPOObjective, "_pass_counts", sample_again)
    again, _ = trainer.objective.batches(cfg, trainer.tokenizer, trainer.dist)
    assert {p.id for p in again.prompts} == kept
    cfg.grpo.filter_samples = 4
    with pytest.raises(AssertionError, match="saved pass counts"):
        trainer.objective.batches(cfg, trainer.tokenizer, trainer.dist)
    trainer.objective.close()


def test_pass_rate_filter_without_survivors_says_why(tmp_path, toy_init) -> None:
    rows = [{**r, "answer": "12"} for r in sum_prompts(16, seed=0)]
    with pytest.raises(ValueError, match=r"filter_samples=4: no prompt .*never 16, always 0"):
        filter_run(tmp_path, toy_init, rows, "grpo.filter_samples=4")


def test_seeded_pool_is_a_stable_subset() -> None:
    prompts = load_prompts_stub(50)
    pool = seeded_pool(prompts, 10, seed=3)
    assert len(pool) == 10 and pool == seeded_pool(prompts, 10, seed=3)
    assert [int(p.id) for p in pool] == sorted(int(p.id) for p in pool)  # file order kept
    assert pool != seeded_pool(prompts, 10, seed=4)
    assert seeded_pool(prompts, 0, seed=3) == prompts == seeded_pool(prompts, 80, seed=3)


def test_progress_bar_shows_reward_and_kl(tmp_path, capsys) -> None:
    from mobilellm_r1.train.metrics import MetricsLogger

    logger = MetricsLogger(tmp_path, enabled=True, total_steps=2)
    logger.log_step(1, {"loss": 0.5, "reward": 0.375, "kl": 0.0123, "lr": 1e-3}, force=True)
    logger.close()
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert "loss=0.5" in bar and "reward=0.375" in bar and "kl=0.0123" in bar
    assert bar.index("reward=") < bar.index("lr=")  # the reward before the optimizer's numbers
