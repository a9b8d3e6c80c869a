"""ModelConfig: preset sizes, long-context variant, validation, FLOP / KV-cache arithmetic."""

from __future__ import annotations

import pytest
import torch

from mobilellm_r1.model import PRESETS, ModelConfig, preset
from mobilellm_r1.model.model import Transformer

PAPER_PARAMS = {"140m": 140_248_512, "360m": 359_431_168, "950m": 949_685_760}


def _meta_numel(cfg: ModelConfig) -> int:
    with torch.device("meta"):
        model = Transformer(cfg)
    return sum(p.numel() for p in model.parameters())  # tied head is one Parameter, counted once


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_preset_param_counts(name: str) -> None:
    cfg = preset(name)
    assert cfg.num_params() == PAPER_PARAMS[name]
    assert _meta_numel(cfg) == PAPER_PARAMS[name]


@pytest.mark.parametrize("name", PRESETS)
def test_num_params_matches_built_model(name: str) -> None:
    cfg = preset(name)
    assert cfg.num_params() == _meta_numel(cfg)
    emb = cfg.vocab_size * cfg.hidden_size
    assert cfg.num_params(include_embedding=False) == cfg.num_params() - emb


def test_num_params_untied_counts_head() -> None:
    cfg = preset("tiny", tie_word_embeddings=False)
    tied = preset("tiny")
    assert cfg.num_params() == tied.num_params() + cfg.vocab_size * cfg.hidden_size
    assert cfg.num_params() == _meta_numel(cfg)


def test_preset_names_and_case() -> None:
    assert set(PRESETS) >= {"140m", "360m", "950m", "tiny"}
    assert preset("950M") == preset("950m")
    assert preset("tiny", hidden_size=64, head_dim=16).hidden_size == 64


def test_with_long_context() -> None:
    base = preset("140m")
    long = base.with_long_context()
    assert long.rope_theta == base.rope_theta * 8
    assert long.rope_theta == 8_000_000.0
    assert long.max_position_embeddings == 32_768
    assert base.max_position_embeddings == 4_096  # original untouched
    # everything else equal, and list fields are copies
    assert {**long.to_dict(), "rope_theta": 0, "max_position_embeddings": 0} == {
        **base.to_dict(),
        "rope_theta": 0,
        "max_position_embeddings": 0,
    }
    assert long.no_rope_layers is not base.no_rope_layers
    assert long.eos_token_id is not base.eos_token_id
    assert preset("140m", long_context=True) == long
    assert long.num_params() == base.num_params()


def test_defaults_and_round_trip() -> None:
    cfg = preset("tiny")
    assert cfg.no_rope_layers == [1] * cfg.num_hidden_layers
    assert cfg.n_rep == cfg.num_attention_heads // cfg.num_key_value_heads
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (dict(num_attention_heads=6, num_key_value_heads=4), "num_key_value_heads"),
        (dict(head_dim=31), "head_dim"),
        (dict(no_rope_layers=[1, 0]), "no_rope_layers"),
        (dict(hidden_size=0), "hidden_size"),
        (dict(num_key_value_heads=0), "num_key_value_heads"),
        (dict(vocab_size=-1), "vocab_size"),
    ],
)
def test_validation_names_field(overrides: dict, field: str) -> None:
    base = dict(
        hidden_size=64,
        intermediate_size_mlp=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
    )
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**base, **overrides})


def test_from_dict_unknown_field() -> None:
    with pytest.raises(ValueError, match="not_a_field"):
        ModelConfig.from_dict({**preset("tiny").to_dict(), "not_a_field": 1})
    with pytest.raises(ValueError, match="bogus"):
        preset("tiny", bogus=3)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="7b"):
        preset("7b")


def test_kv_cache_bytes_per_token() -> None:
    cfg = preset("950m")
    assert cfg.kv_cache_bytes_per_token() == 2 * 22 * 6 * 64 * 2 == 33_792
    assert cfg.kv_cache_bytes_per_token(bytes_per_elem=4) == 2 * cfg.kv_cache_bytes_per_token()
    c140 = preset("140m")
    assert c140.kv_cache_bytes_per_token() == 2 * 15 * 3 * 64 * 2


@pytest.mark.parametrize("name", ["140m", "950m", "tiny"])
@pytest.mark.parametrize("tied", [True, False])
def test_flops_per_token(name: str, tied: bool) -> None:
    cfg = preset(name, tie_word_embeddings=tied)
    d, L = cfg.hidden_size, cfg.num_hidden_layers
    norms = (2 * L + 1) * d
    # At context 0 the forward is 2 FLOPs per matmul weight: every parameter except norms and
    # the (untied) input embedding, whose lookup is no matmul; a tied head counts as a matmul.
    matmul_weights = cfg.num_params() - norms - (0 if tied else cfg.vocab_size * d)
    f0 = cfg.flops_per_token(0)
    assert f0["forward"] == 2 * matmul_weights
    assert f0["train"] == 3 * f0["forward"]
    assert f0["train_6n"] == 6 * cfg.num_params()
    # attention term: 4 * L * H * head_dim per context token
    slope = 4 * L * cfg.num_attention_heads * cfg.head_dim
    f4k = cfg.flops_per_token(4096)
    assert f4k["forward"] - f0["forward"] == slope * 4096
    assert f4k["train_6n"] - f0["train_6n"] == 12 * L * d * 4096
    assert all(isinstance(v, float) and v > 0 for v in f4k.values())
    # 6N approximation is within a factor ~1.5 of the exact count for these shapes
    assert 0.5 < f4k["train"] / f4k["train_6n"] < 1.5


def test_flops_ordering_across_presets() -> None:
    flops = [preset(n).flops_per_token(2048)["forward"] for n in ("140m", "360m", "950m")]
    assert flops == sorted(flops)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rope_theta", float("inf")),
        ("rms_norm_eps", 0.0),
        ("initializer_range", float("nan")),
        ("attn_scale", -1.0),
    ],
)
def test_non_finite_or_non_positive_floats_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field} must be a finite number > 0"):
        preset("tiny", **{field: value})


def test_train_recipe_model_overrides_are_checked_at_load() -> None:
    from mobilellm_r1.train.config import load_train_config
    from mobilellm_r1.typed_config import ConfigError

    with pytest.raises(
        ConfigError, match=r"^.*tiny_cpu\.yaml: model: ModelConfig\.hidden_size must be positive"
    ):
        load_train_config("train/tiny_cpu", ["model.overrides={hidden_size: 0}"])
    with pytest.raises(ConfigError, match=r"model: unknown preset 'tinyy'"):
        load_train_config("train/tiny_cpu", ["model.preset=tinyy"])
    cfg = load_train_config("train/tiny_cpu", ["model.overrides={num_hidden_layers: 2}"])
    assert cfg.model.config().num_hidden_layers == 2
