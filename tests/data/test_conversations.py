"""SFT conversations: assistant-only mask, mappers, over-long rule, packed loader (CPU, offline)."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import VOCAB, small_config
from mobilellm_r1.data.conversations import (
    IGNORE_INDEX,
    MAPPERS,
    ConversationSource,
    DataError,
    ExampleStore,
    detect_layout,
    get_mapper,
    load_conversations,
    render_conversation,
    with_system,
)
from mobilellm_r1.data.packing import PackedConversations, SFTDataConfig, SFTLoader, build_sft_loader
from mobilellm_r1.data.synth import SynthConfig, generate
from mobilellm_r1.model import build_model
from mobilellm_r1.tokenizer import SYSTEM_PROMPTS, load_tokenizer
from mobilellm_r1.typed_config import ConfigError, from_dict

TWO_TURNS = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy? Answer with a sentence."},
    {"role": "assistant", "content": "The capital of Italy is Rome."},
]
TRICKY = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\nleading newline"}],
    [{"role": "user", "content": "  spaces"}, {"role": "assistant", "content": "  two spaces\n\n"}],
    [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}],
    [
        {"role": "user", "content": "emoji 👍🏽 中文"},
        {"role": "assistant", "content": "ok <|eot_id|> literal"},
    ],
    [
        {"role": "user", "content": "run it"},
        {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
    ],
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(seed=1).scaled(0.1), out)
    return out


def trained_spans(tok, ids: list[int], labels: list[int]) -> list[str]:
    """Decoded runs of consecutive trained tokens."""
    spans, run = [], []
    for i, lab in zip(ids, labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == i
            run.append(i)
        elif run:
            spans.append(tok.decode(run))
            run = []
    return [*spans, tok.decode(run)] if run else spans


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ====================================================================== rendering
def test_mask_is_exactly_the_assistant_turns_with_eot(tok) -> None:
    ids, labels = render_conversation(tok, TWO_TURNS)
    assert len(ids) == len(labels)
    assert trained_spans(tok, ids, labels) == ["Paris.<|eot_id|>", "The capital of Italy is Rome.<|eot_id|>"]
    untrained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab == IGNORE_INDEX])
    assert untrained.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert untrained.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "Paris" not in untrained and "What is the capital of France?<|eot_id|>" in untrained


@pytest.mark.parametrize("messages", [TWO_TURNS, *TRICKY])
def test_rendering_equals_the_chat_template(tok, messages) -> None:
    ids, labels = render_conversation(tok, messages)
    assert ids == tok.apply_chat_template(messages)
    assert ids == tok.encode(tok.apply_chat_template(messages, tokenize=False), allowed_special="all")
    assistants = [m for m in messages if m["role"] == "assistant"]
    # a literal "<|eot_id|>" in a content is a special token, as in apply_chat_template
    assert labels.count(tok.eot_id) == sum(1 + m["content"].count("<|eot_id|>") for m in assistants)
    spans = "".join(trained_spans(tok, ids, labels))
    expected = "".join(m["content"] + "<|eot_id|>" for m in assistants)
    # a content starting with a newline shares one token with the header's "\n\n"
    assert spans.replace("\n\n\nleading", "\nleading") == expected


def test_render_rejects_bad_messages(tok) -> None:
    with pytest.raises(ValueError, match="role"):
        render_conversation(tok, [{"role": "robot", "content": "x"}])


# ====================================================================== packing == one by one
def test_packed_row_gives_the_losses_and_gradients_of_single_runs(tok) -> None:
    convs = [TWO_TURNS, TRICKY[0], TRICKY[4]]
    examples = []
    for messages in convs:
        ids, labels = render_conversation(tok, messages)
        examples.append((np.array(ids, dtype=np.uint32) % VOCAB, np.array(labels) != IGNORE_INDEX))
    store = ExampleStore.build([examples], ["chat"])
    seq_len = int(store.lengths.sum()) + 6  # all three plus 7 padding slots
    batch = SFTLoader(store, seq_len=seq_len, batch_size=1, pad_id=0, pack_buffer=3).next_batch()
    x, labels, pos, doc = batch.input_ids, batch.labels, batch.position_ids, batch.doc_ids
    assert doc[0].tolist().count(3) == 6 and (labels[doc == 3] == IGNORE_INDEX).all()
    pieces = [x[0, doc[0] == d].numpy() for d in range(3)]  # the padding comes last: all are whole
    doc_of = {
        e: next(d for d, p in enumerate(pieces) if np.array_equal(p, ids))
        for e, (ids, _) in enumerate(examples)
    }
    assert sorted(doc_of.values()) == [0, 1, 2]

    model = build_model(small_config(), seed=0, dtype=torch.float64)
    params = [p for p in model.parameters() if p.requires_grad]
    token_ce = F.cross_entropy(
        model(x, position_ids=pos, doc_ids=doc)[0], labels[0], ignore_index=IGNORE_INDEX, reduction="none"
    )
    for e, (ids, mask) in enumerate(examples):
        d = doc_of[e]
        ids = torch.from_numpy(ids.astype(np.int64))
        targets = torch.where(torch.from_numpy(mask[1:]), ids[1:], IGNORE_INDEX)
        alone = F.cross_entropy(model(ids[None, :-1])[0], targets, ignore_index=IGNORE_INDEX, reduction="sum")
        packed = token_ce[doc[0] == d].sum()
        torch.testing.assert_close(packed, alone, rtol=1e-10, atol=1e-10)
        g_packed = torch.autograd.grad(packed, params, retain_graph=True)
        g_alone = torch.autograd.grad(alone, params)
        for a, b in zip(g_packed, g_alone, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    leaky = F.cross_entropy(model(x)[0], labels[0], ignore_index=IGNORE_INDEX, reduction="none")
    assert not torch.allclose(leaky[doc[0] == 1].sum(), token_ce[doc[0] == 1].sum())


# ====================================================================== mappers
MAPPED = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
LAYOUTS = [
    ("messages", {"messages": MAPPED}, MAPPED),
    ("messages", {"conversations": MAPPED}, MAPPED),
    (
        "sharegpt",
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}], "system": "S"},
        [{"role": "system", "content": "S"}, *MAPPED],
    ),
    ("tulu3", {"id": "t-1", "messages": MAPPED, "source": "ai2-adapt-dev/x"}, MAPPED),
    ("open_math_reasoning", {"problem": "Q", "generated_solution": "A", "expected_answer": "2"}, MAPPED),
    ("open_science_reasoning", {"input": "Q", "output": "A", "license": "cc"}, MAPPED),
    ("open_code_reasoning", {"question": "-", "input": "Q", "r1_generation": "A", "solution": "c"}, MAPPED),
    ("open_code_reasoning", {"question": "Q", "r1_generation": "A", "dataset": "taco"}, MAPPED),
    ("open_code_reasoning", {"question": "Q", "solution": "A", "dataset": "taco"}, MAPPED),
    ("prompt_response", {"prompt": "Q", "completion": "A"}, MAPPED),
    ("prompt_response", {"question": "Q", "answer": "A"}, MAPPED),
    (
        "prompt_response",
        {"instruction": "Q", "input": "ctx", "output": "A"},
        [{"role": "user", "content": "Q\n\nctx"}, {"role": "assistant", "content": "A"}],
    ),
]


@pytest.mark.parametrize(("name", "row", "expected"), LAYOUTS)
def test_mappers_and_auto_detection(name: str, row: dict, expected: list) -> None:
    assert MAPPERS[name](row, "f.jsonl:1") == expected
    assert get_mapper("auto")(row, "f.jsonl:1") == expected
    assert set(row) & set(MAPPERS[name].fields)


def test_auto_detects_each_layout() -> None:
    assert detect_layout({"problem": "", "generated_solution": ""}) == "open_math_reasoning"
    assert detect_layout({"question": "-", "r1_generation": ""}) == "open_code_reasoning"
    assert detect_layout({"input": "", "output": ""}) == "open_science_reasoning"
    assert detect_layout({"instruction": "", "output": ""}) == "prompt_response"
    assert detect_layout({"text": ""}) is None


def test_system_prompt_is_prepended_unless_present() -> None:
    assert with_system(MAPPED, "math")[0] == {"role": "system", "content": SYSTEM_PROMPTS["math"]}
    assert with_system(with_system(MAPPED, "Be kind."), "math")[0]["content"] == "Be kind."
    assert with_system(MAPPED, None) is MAPPED


@pytest.mark.parametrize(
    ("mapper", "row", "field"),
    [
        ("open_math_reasoning", {"problem": "Q"}, "'generated_solution'"),
        ("open_code_reasoning", {"question": "-", "r1_generation": "A"}, "'question' / 'input'"),
        ("open_science_reasoning", {"input": "Q", "output": None}, "field 'output' is null"),
        ("messages", {"messages": [{"role": "user"}]}, "'messages[0].content'"),
        ("sharegpt", {"conversations": [{"from": "alien", "value": "x"}]}, "'conversations[0].role'"),
        ("prompt_response", {"prompt": "Q"}, "'completion' / 'response'"),
        ("auto", {"text": "plain"}, "no known conversation layout"),
    ],
)
def test_bad_row_names_file_line_and_field(tok, tmp_path: Path, mapper: str, row: dict, field: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", ["", row])  # blank first line, bad row on line 2
    source = ConversationSource("s", str(path), mapper=mapper)
    with pytest.raises(DataError, match=rf"d\.jsonl:2: .*{re.escape(field)}"):
        load_conversations(source, tok, seq_len=256)


def test_skip_counts_bad_rows_and_rows_without_assistant(tok, tmp_path: Path) -> None:
    rows = [
        {"messages": MAPPED},
        "{not json",
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"problem": "Q"},
        {"prompt": "Q", "completion": 7},
    ]
    source = ConversationSource("s", str(write_jsonl(tmp_path / "d.jsonl", rows)), on_error="skip")
    examples, stats = load_conversations(source, tok, seq_len=256)
    assert (stats.read, stats.kept, stats.skipped_bad) == (5, 2, 3)
    assert stats.skipped == {"malformed_json": 1, "no_target": 1, "missing_field": 1}
    assert any("d.jsonl:4" in e and "generated_solution" in e for e in stats.errors)
    assert tok.decode(examples[1][0][examples[1][1]].tolist()) == "7<|eot_id|>"


def test_truncated_gz_is_a_data_error_not_a_raw_eof(tok, tmp_path: Path) -> None:
    """Conversations read through the one format dispatch: a .gz cut short (a killed download)
    raised a raw EOFError from the old second dispatch; now it is the readers' DataError naming
    the file, and with on_error="skip" the rows before the cut are kept."""
    whole = gzip.compress("".join(json.dumps({"messages": MAPPED}) + "\n" for _ in range(3000)).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz: truncated or corrupt file"):
        load_conversations(ConversationSource("s", str(path)), tok, seq_len=256)
    _, stats = load_conversations(ConversationSource("s", str(path), on_error="skip"), tok, seq_len=256)
    assert stats.skipped == {"unreadable_file": 1} and 0 < stats.kept < 3000


def test_parquet_source_with_nested_messages(tok, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": str(i), "messages": TWO_TURNS if i % 2 else TRICKY[0], "n": i} for i in range(6)]
    rows[3]["messages"] = None
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=2)
    source = ConversationSource("tulu", str(tmp_path / "t.parquet"), mapper="tulu3")
    with pytest.raises(DataError, match=r"t\.parquet:row 3: missing field 'messages'"):
        load_conversations(source, tok, seq_len=512)
    source.on_error = "skip"
    examples, stats = load_conversations(source, tok, seq_len=512)
    assert stats.kept == 5 and stats.skipped == {"missing_field": 1}
    assert examples[0][0].tolist() == tok.apply_chat_template(TRICKY[0])


def test_saved_hf_dataset_source(tok, tmp_path: Path) -> None:
    import datasets

    rows = [{"input": f"Q{i}", "output": f"A{i}", "license": "cc"} for i in range(4)]
    rows[2]["output"] = None
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    source = ConversationSource("science", str(tmp_path / "ds"), on_error="skip")
    examples, stats = load_conversations(source, tok, seq_len=64)
    assert stats.kept == 3 and f"{tmp_path / 'ds'}[train]#2: field 'output' is null" in stats.errors[0]
    assert [tok.decode(ids[mask].tolist()) for ids, mask in examples] == [
        f"A{i}<|eot_id|>" for i in (0, 1, 3)
    ]


def test_config_loads_from_plain_data() -> None:
    data = {
        "sources": [
            {
                "name": "omr",
                "path": "nvidia/OpenMathReasoning",
                "format": "hf",
                "hf_split": "cot",
                "mapper": "open_math_reasoning",
                "epochs": 2,
                "system": "math",
            },
            {"name": "tulu", "path": ["a.parquet", "b.parquet"], "mapper": "tulu3", "epochs": 0.5},
        ],
        "overlong": "truncate",
    }
    cfg = from_dict(SFTDataConfig, data)
    assert cfg.sources[0].epochs == 2.0 and cfg.sources[1].path == ["a.parquet", "b.parquet"]
    with pytest.raises(ConfigError, match="mapper"):
        from_dict(SFTDataConfig, {"sources": [{"name": "x", "path": "p", "mapper": "nope"}]})


# ====================================================================== over-long rule
def overlong_rows() -> list[dict]:
    return [
        {"prompt": "short", "completion": "answer"},
        {"prompt": "q", "completion": " ".join(["word"] * 60)},  # long answer: truncation keeps some
        {"prompt": " ".join(["word"] * 60), "completion": "a"},  # long prompt: nothing trained is left
    ]


def test_overlong_drop_and_truncate(tok, tmp_path: Path) -> None:
    source = ConversationSource("s", str(write_jsonl(tmp_path / "d.jsonl", overlong_rows())))
    _, dropped = load_conversations(source, tok, seq_len=40, overlong="drop")
    assert (dropped.read, dropped.kept, dropped.dropped_overlong, dropped.truncated) == (3, 1, 2, 0)
    kept, cut = load_conversations(source, tok, seq_len=40, overlong="truncate")
    assert (cut.read, cut.kept, cut.dropped_overlong, cut.truncated) == (3, 2, 1, 1)
    ids, mask = kept[1]
    full = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}])
    assert len(ids) == 41 and ids[: len(full) - 2].tolist() == full[:-2]
    assert mask[-1] and not mask[0]
    assert cut.tokens == sum(len(i) for i, _ in kept)
    assert cut.trained_tokens == sum(int(m[1:].sum()) for _, m in kept)


# ====================================================================== loader
def sft_config(synth_dir: Path, **kw) -> SFTDataConfig:
    sources = [
        ConversationSource("general", str(synth_dir / "sft" / "general.jsonl")),
        ConversationSource("reasoning", str(synth_dir / "sft" / "reasoning.jsonl"), epochs=1.5),
    ]
    return SFTDataConfig(sources=sources, **{"pack_buffer": 64, "seed": 5, **kw})


def loader_of(tok, synth_dir: Path, batch_size: int = 4, **kw) -> SFTLoader:
    sizes = {k: kw.pop(k) for k in ("rank", "world_size") if k in kw}
    return build_sft_loader(sft_config(synth_dir, **kw), tok, seq_len=384, batch_size=batch_size, **sizes)


def test_synthetic_corpus_loads_and_rows_are_well_formed(tok, synth_dir: Path) -> None:
    source = ConversationSource("general", str(synth_dir / "sft" / "general.jsonl"))
    examples, stats = load_conversations(source, tok, seq_len=1024)
    assert stats.read == stats.kept == 50 and stats.skipped_bad == 0 and len(examples) == 50
    loader = loader_of(tok, synth_dir)
    for _ in range(10):
        batch = loader.next_batch()
        assert batch.input_ids.shape == batch.labels.shape == batch.doc_ids.shape == (4, 384)
        for x, y, pos, doc in zip(
            batch.input_ids, batch.labels, batch.position_ids, batch.doc_ids, strict=True
        ):
            starts = (pos == 0).nonzero().flatten()
            assert torch.equal(doc, (pos == 0).long().cumsum(0) - 1)  # positions restart per document
            assert (y[starts[1:] - 1] == IGNORE_INDEX).all()  # no label crosses into the next example
            assert x[0] == tok.bos_id and all(int(x[i]) in (tok.bos_id, tok.pad_id) for i in starts)
            trained = y != IGNORE_INDEX
            assert torch.equal(y[:-1][trained[:-1]], x[1:][trained[:-1]])
            assert not (x == tok.pad_id).any() or (y[x == tok.pad_id] == IGNORE_INDEX).all()
    report = loader.report()
    assert report["total"]["kept"] == report["examples"]
    assert report["served"]["rows"] == 40 and report["served"]["fill"] > 0.95


def test_trained_token_count_matches_labels(tok, synth_dir: Path) -> None:
    loader = loader_of(tok, synth_dir, batch_size=3)
    labelled = sum(int((loader.next_batch().labels != IGNORE_INDEX).sum()) for _ in range(7))
    assert loader.report()["served"]["trained_tokens"] == labelled


def test_every_example_used_epochs_times_per_epoch() -> None:
    rng = np.random.default_rng(0)
    lengths, source = rng.integers(5, 120, size=300), np.repeat([0, 1, 2], 100)
    sched = PackedConversations(lengths, source, [1, 2, 0.5], capacity=128, seed=3, pack_buffer=16)
    assert sched.epoch_size == 350
    placed: Counter[int] = Counter()
    while sched.state.epoch < 2:
        placed.update(sched.next_row())
    placed.update(sched.buffered())
    expected = Counter(sched.order(0).tolist()) + Counter(sched.order(1).tolist())
    expected += Counter(sched.order(2)[: sched.state.cursor].tolist())
    assert placed == expected
    first = Counter(sched.order(0).tolist())
    assert all(first[i] == 1 for i in range(100)) and all(first[i] == 2 for i in range(100, 200))
    assert sum(first[i] for i in range(200, 300)) == 50
    assert set(sched.order(0)[np.isin(sched.order(0), range(200, 300))]) != set(
        sched.order(1)[np.isin(sched.order(1), range(200, 300))]
    )


def test_best_fit_fills_rows() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(10, 300, size=2000)
    for buffer, min_fill in ((1, 0.5), (256, 0.99)):
        sched = PackedConversations(lengths, np.zeros(2000), [1], capacity=1025, seed=0, pack_buffer=buffer)
        rows = [sched.next_row() for _ in range(200)]
        fill = sum(int(lengths[r].sum()) for r in rows) / (200 * 1025)
        assert fill > min_fill and all(lengths[r].sum() <= 1025 for r in rows)


def test_same_seed_same_batches_and_seed_matters(tok, synth_dir: Path) -> None:
    a, b, c = loader_of(tok, synth_dir), loader_of(tok, synth_dir), loader_of(tok, synth_dir, seed=6)
    first = [a.next_batch().input_ids for _ in range(5)]
    assert all(torch.equal(x, b.next_batch().input_ids) for x in first)
    assert not all(torch.equal(x, c.next_batch().input_ids) for x in first)


def test_resume_in_a_fresh_loader_gives_identical_batches(tok, synth_dir: Path) -> None:
    a = loader_of(tok, synth_dir)
    for _ in range(9):  # past the end of the first epoch
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))
    b = loader_of(tok, synth_dir)
    b.load_state_dict(state)
    for _ in range(6):
        x, y = a.next_batch(), b.next_batch()
        for name in ("input_ids", "labels", "position_ids", "doc_ids", "source"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name
    assert a.report() == b.report()
    with pytest.raises(ValueError, match="state is for"):
        loader_of(tok, synth_dir, seed=9).load_state_dict(state)


def test_ranks_are_disjoint_and_cover_the_single_rank_stream(tok, synth_dir: Path) -> None:
    one = loader_of(tok, synth_dir, batch_size=4)
    ranks = [loader_of(tok, synth_dir, batch_size=2, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(4):
        full, r0, r1 = one.next_batch(), ranks[0].next_batch(), ranks[1].next_batch()
        assert torch.equal(full.input_ids[0::2], r0.input_ids) and torch.equal(
            full.input_ids[1::2], r1.input_ids
        )
        assert torch.equal(full.labels[1::2], r1.labels) and torch.equal(full.source[0::2], r0.source)
    assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()
