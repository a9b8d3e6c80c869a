"""Check that this torch build writes and reads the project's checkpoint format exactly.

The format (train/checkpoint.py) needs DCP's safetensors storage (`HuggingFaceStorageWriter`
/ `HuggingFaceStorageReader`), which older torch releases lack or spell differently. This script
saves a small model with its AdamW state on the given device, scrambles both, loads the
checkpoint back and compares every tensor bit for bit; then it corrupts one shard and checks
that `resume_latest` falls back to the previous checkpoint. It prints one table and writes it
to `benchmarks/results/checkpoint_roundtrip_<device>_<date>.json`.

    python benchmarks/diag/checkpoint_roundtrip.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from mobilellm_r1.model import ModelConfig, build_model
from mobilellm_r1.train.checkpoint import load_checkpoint, resume_latest, save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from provenance import dated_result, result_header, write_result


def _model_and_optim(device: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    cfg = ModelConfig(
        hidden_size=128, intermediate_size_mlp=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=32, vocab_size=512, max_position_embeddings=64,
    )  # fmt: skip
    model = build_model(cfg).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    ids = torch.randint(0, 512, (2, 16), device=device)
    model(ids).float().pow(2).mean().backward()
    optim.step()
    return model, optim


def _snapshot(model: torch.nn.Module, optim: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for i, state in enumerate(optim.state.values()):
        out.update({f"optim.{i}.{k}": v.detach().clone() for k, v in state.items() if torch.is_tensor(v)})
    return out


def _scramble(model: torch.nn.Module, optim: torch.optim.Optimizer) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        for state in optim.state.values():
            for v in state.values():
                if torch.is_tensor(v) and v.is_floating_point():
                    v.mul_(3.0)
    for group in optim.param_groups:
        group["lr"] = 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--out", default=None, help="result JSON (default: a dated file in benchmarks/results)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    model, optim = _model_and_optim(args.device)
    before = _snapshot(model, optim)
    rows = [("torch", torch.__version__), ("device", args.device)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        first = save_checkpoint(root, 1, model, optim, {"step": 1})
        save_checkpoint(root, 2, model, optim, {"step": 2})
        rows.append(("save x2 (s)", f"{time.perf_counter() - t0:.2f}"))
        _scramble(model, optim)
        extra = load_checkpoint(first, model, optim)
        after = _snapshot(model, optim)
        exact = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        rows += [("tensors compared", str(len(before))), ("round trip bit-exact", str(exact))]
        group = optim.param_groups[0]
        restored = group["lr"] == 1e-3 and tuple(group["betas"]) == (0.9, 0.95) and extra["step"] == 1
        rows.append(("lr, betas and extra restored", str(restored)))
        shard = sorted((root / "step_00000002").rglob("*.safetensors"))[0]
        data = bytearray(shard.read_bytes())
        data[-4096:] = bytes(b ^ 0xFF for b in data[-4096:])
        shard.write_bytes(bytes(data))
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            path, _ = resume_latest(root, model, optim)
        rows.append(("corrupt step 2 -> resumed from", path.name))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    device_kind = "cuda" if args.device.startswith("cuda") else "cpu"
    result = {**result_header("checkpoint_roundtrip", device=args.device), "checks": dict(rows)}
    result["command"] = " ".join(["python", "benchmarks/diag/checkpoint_roundtrip.py", *sys.argv[1:]])
    write_result(result, args.out or dated_result(f"checkpoint_roundtrip_{device_kind}"))


if __name__ == "__main__":
    main()
