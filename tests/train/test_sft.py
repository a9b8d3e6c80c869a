"""`objective: sft` in the trainer: packed chats, assistant-only loss, long-context export."""

import json

from helpers import small_config
from mobilellm_r1.data.synth import SynthConfig, generate
from mobilellm_r1.model import build_model
from mobilellm_r1.model.hf import load_pretrained, save_pretrained
from mobilellm_r1.tokenizer import load_tokenizer
from mobilellm_r1.train.config import load_train_config
from mobilellm_r1.train.trainer import Trainer


def test_sft_trains_on_assistant_tokens_and_exports_long_context(tmp_path) -> None:
    generate(SynthConfig(seed=0).scaled(0.1), tmp_path / "synth")
    tok = load_tokenizer()
    cfg = small_config(vocab_size=tok.vocab_size, bos_token_id=tok.bos_id, eos_token_id=list(tok.stop_ids))
    save_pretrained(build_model(cfg, seed=0), tok, tmp_path / "base")
    sft = tmp_path / "synth" / "sft"
    train_cfg = load_train_config(
        "train/sft_tiny_cpu",
        [
            f"model.init_from={tmp_path / 'base'}",
            "model.long_context=true",
            f"sft.sources=[{{name: general, path: {sft / 'general.jsonl'}, mapper: messages}}]",
            f"out_dir={tmp_path / 'run'}",
            "steps=8",
            "data.micro_batch=4",
            "checkpoint_every=0",
            "eval_every=4",
            f"eval_data_dir={tmp_path / 'synth' / 'eval'}",
            "eval_docs=8",
        ],
    )
    trainer = Trainer(train_cfg, device="cpu")
    assert trainer.objective.document_mask  # SFT always masks across packed conversations
    batch = trainer.loader.next_batch()
    trained = int((batch.labels != -100).sum())
    assert 0 < trained < batch.labels.numel()  # only assistant tokens count
    trainer.fit()
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]
    assert any("nll/gsm8k" in r and "nll/math500" in r for r in log)  # reference-solution NLL
    model, _ = load_pretrained(tmp_path / "run" / "final")
    assert model.config.rope_theta == cfg.rope_theta * 8 and model.config.max_position_embeddings == 32768
