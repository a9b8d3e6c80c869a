"""Tests for the multiple-choice tasks: loaders on the shared data, exact lm-eval prompts, errors,
and batched scoring against per-item `score_multiple_choice` / `score_partial`."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

import pytest

from helpers import SHARED_DATA, VOCAB, small_config
from mobilellm_r1.eval.choice_tasks import (
    ChoiceItem,
    evaluate_choice_task,
    hellaswag_preprocess,
    load_hellaswag,
    load_mmlu,
)
from mobilellm_r1.eval.loglik import continuation_logprobs, encode_pair, score_multiple_choice, score_partial
from mobilellm_r1.eval.registry import TASKS
from mobilellm_r1.model import Transformer, build_model
from mobilellm_r1.tokenizer import load_tokenizer

DATA = SHARED_DATA / "eval"
FIXTURES = Path(__file__).parent / "fixtures"


@functools.cache
def items(name: str) -> list[ChoiceItem]:
    return TASKS[name].items(DATA)


# name -> (number of items, Counter of options per item)
COUNTS = {
    "mmlu": (14042, {4: 14042}),
    "arc_easy": (2376, {4: 2365, 3: 7, 5: 4}),
    "arc_challenge": (1172, {4: 1165, 3: 4, 5: 3}),
    "boolq": (3270, {2: 3270}),
    "piqa": (1838, {2: 1838}),
    "siqa": (1954, {3: 1954}),
    "openbookqa": (500, {4: 500}),
    "winogrande": (1267, {2: 1267}),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_counts_and_gold_in_range(name: str) -> None:
    loaded = items(name)
    count, options = COUNTS[name]
    assert len(loaded) == count
    assert Counter(it.num_options for it in loaded) == options
    assert all(0 <= it.gold < it.num_options for it in loaded)
    assert all(c.startswith(" ") for it in loaded for c in it.choices)
    assert len({it.id for it in loaded}) == count
    partial = name == "winogrande"
    assert all(it.partial == partial for it in loaded)
    if partial:
        assert all(len(it.contexts) == 2 and len(it.choices) == 1 for it in loaded)
    else:
        assert all(len(it.contexts) == 1 for it in loaded)


def test_mmlu_five_shot_prompt() -> None:
    loaded = items("mmlu")
    assert len({it.subject for it in loaded}) == 57
    assert all(it.contexts[0].endswith("Answer:") and it.contexts[0].count("\nAnswer:") == 6 for it in loaded)
    assert all(it.choices == [" A", " B", " C", " D"] for it in loaded)
    first = loaded[0]
    assert (first.id, first.subject, first.gold) == ("abstract_algebra/0", "abstract_algebra", 1)
    assert first.contexts[0] == (
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
        "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. "
        "Statement 2 | If H and K are subgroups of G then HK is a subgroup of G.\n"
        "A. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: B\n\n"
        "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The "
        "symmetric group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\n"
        "D. False, True\nAnswer: C\n\n"
        "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every "
        "subgroup of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\n"
        "D. False, True\nAnswer: A\n\n"
        "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\n"
        "A. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    )
    us_policy = next(it for it in loaded if it.subject == "us_foreign_policy")
    assert us_policy.contexts[0].startswith(
        "The following are multiple choice questions (with answers) about us foreign policy.\n\n"
    )


# name -> (item index, expected contexts, expected choices, expected gold)
PROMPTS = {
    "arc_easy": (
        0,
        [
            "Question: Which statement best explains why photosynthesis is the foundation of most food webs?"
            "\nAnswer:"
        ],
        [
            " Sunlight is the source of energy for nearly all ecosystems.",
            " Most ecosystems are found on land instead of in water.",
            " Carbon dioxide is more available than other gases.",
            " The producers in all ecosystems are plants.",
        ],
        0,
    ),
    "arc_challenge": (
        836,
        ["Question: How are warm-blooded animals different from cold-blooded animals?\nAnswer:"],
        [
            " Warm-blooded animals have a higher metabolism in warm weather.",
            " Warm-blooded animals are more aggressive in captivity.",
            " Warm-blooded animals always have a higher blood temperature.",
            " Warm-blooded animals normally maintain a fairly constant internal temperature at all air "
            "temperatures.",
            " Warm-blooded animals are found only in warm climates.",
        ],
        3,
    ),
    "boolq": (
        2644,
        [
            "The season is set for release in 2019.\nQuestion: are they going to make a punisher season 2?\n"
            "Answer:"
        ],
        [" no", " yes"],
        1,
    ),
    "piqa": (
        1,
        ["Question: dresser\nAnswer:"],
        [" replace drawer with bobby pin ", " finish, woodgrain with  bobby pin "],
        1,
    ),
    "siqa": (
        1,
        [
            "Q: Sydney walked past a homeless woman asking for change but did not have any money they "
            "could give to her. Sydney felt bad afterwards. How would you describe Sydney?\nA:"
        ],
        [" sympathetic", " like a person who was unable to help", " incredulous"],
        0,
    ),
    "openbookqa": (
        1,
        ["There is most likely going to be fog around:"],
        [" a marsh", " a tundra", " the plains", " a desert"],
        0,
    ),
    "winogrande": (
        0,
        [
            "Sarah was a much better surgeon than Maria so Sarah",
            "Sarah was a much better surgeon than Maria so Maria",
        ],
        [" always got the easier cases."],
        1,
    ),
}


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_exact_prompt(name: str) -> None:
    index, contexts, choices, gold = PROMPTS[name]
    item = items(name)[index]
    assert (item.contexts, item.choices, item.gold) == (contexts, choices, gold)


def test_hellaswag_fixture_preprocessing() -> None:
    loaded = load_hellaswag(FIXTURES, hub=False)
    assert len(loaded) == 5 and [it.gold for it in loaded] == [0, 2, 0, 0, 0]
    assert loaded[0].contexts == ["Baking cookies: A woman pours flour into a large bowl in her kitchen. She"]
    assert (
        loaded[0].choices[0] == " cracks two eggs into the bowl and stirs them in."
    )  # leading space stripped
    # " [title]" -> ". ", "[...]" dropped, double spaces collapsed once; an ending that opened with a tag
    # keeps the space after it (so its continuation starts with two spaces, as in lm-eval).
    assert loaded[1].contexts == [
        "Home and Garden: How to repot a fern. Choose a slightly larger pot. Pick a pot one size up from the "
        "current one."
    ]
    assert loaded[1].choices == [
        "  Make sure the pot has drainage holes.. Loosen the roots gently.",
        " Fill the old pot with sand. and leave it outside.",
        "  Water the fern until the soil is soaked.",
        " Throw the fern away and buy a plastic one.",
    ]
    # ctx_b.capitalize() lower-cases the rest; a string label ("0", HF style) is accepted.
    assert loaded[2].contexts == [
        "Weightlifting: A man in a red shirt stands in front of a barbell in a gym. "
        "The man then lifts the bar"
    ]
    assert loaded[3].contexts == [
        "Food and Entertaining: How to brew green tea. Heat the water. Bring fresh water to about 80 degrees "
        "celsius. do not"
    ]
    assert loaded[3].choices[2:] == [" freeze the tea leaves. overnight.", "  add ketchup to the cup."]
    assert hellaswag_preprocess("  a [title] b   c ") == "a. b  c"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("arc_easy", "commonsense/arc_easy/llm_adapters/test.json"),
        ("arc_challenge", "commonsense/arc_challenge/llm_adapters/test.json"),
        ("boolq", "commonsense/boolq/llm_foundry/boolq.jsonl"),
        ("piqa", "commonsense/piqa/ybisk/valid.jsonl"),
        ("siqa", "commonsense/siqa/llm_adapters/test.json"),
        ("openbookqa", "commonsense/openbookqa/llm_foundry/openbook_qa.jsonl"),
        ("winogrande", "commonsense/winogrande/llm_foundry/winogrande.jsonl"),
        ("mmlu", "mmlu/test/<subject>_test.csv"),
    ],
)
def test_missing_file_names_path(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(FileNotFoundError, match=r"SOURCES\.md") as err:
        TASKS[name].items(tmp_path)
    assert str(tmp_path / expected) in str(err.value)


def test_missing_hellaswag_and_mmlu_dev(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_hellaswag(tmp_path, hub=False)
    assert str(tmp_path / "commonsense/hellaswag/hellaswag_val.jsonl") in str(err.value)
    (tmp_path / "mmlu/test").mkdir(parents=True)
    (tmp_path / "mmlu/test/anatomy_test.csv").write_text("q?,a,b,c,d,A\n")
    with pytest.raises(FileNotFoundError) as err:
        load_mmlu(tmp_path)
    assert str(tmp_path / "mmlu/dev/anatomy_dev.csv") in str(err.value)


def test_flat_task_layout(tmp_path: Path) -> None:
    """`D/<task>/<variant>/<file>` works as well as `D/commonsense/...`."""
    src = DATA / "commonsense/openbookqa/llm_foundry/openbook_qa.jsonl"
    (tmp_path / "openbookqa/llm_foundry").mkdir(parents=True)
    (tmp_path / "openbookqa/llm_foundry/openbook_qa.jsonl").write_bytes(src.read_bytes())
    assert TASKS["openbookqa"].items(tmp_path) == items("openbookqa")


def write_synthetic_mmlu(root: Path) -> None:
    """Tiny MMLU in the layout the synthetic-data generator writes (subject synthetic_world)."""
    for split, n in (("dev", 5), ("test", 4)):
        (root / "mmlu" / split).mkdir(parents=True)
        rows = [f"What is item {split} {i}?,w{i},x{i},y{i},z{i},{'ABCD'[i % 4]}\n" for i in range(n)]
        (root / "mmlu" / split / f"synthetic_world_{split}.csv").write_text("".join(rows))


def test_synthetic_mmlu(tmp_path: Path) -> None:
    write_synthetic_mmlu(tmp_path)
    loaded = TASKS["mmlu"].items(tmp_path)
    assert [it.id for it in loaded] == [f"synthetic_world/{i}" for i in range(4)]
    assert [it.gold for it in loaded] == [0, 1, 2, 3]
    header = "The following are multiple choice questions (with answers) about synthetic world.\n\n"
    shots = "".join(
        f"What is item dev {i}?\nA. w{i}\nB. x{i}\nC. y{i}\nD. z{i}\nAnswer: {'ABCD'[i % 4]}\n\n"
        for i in range(5)
    )
    assert loaded[2].contexts == [
        header + shots + "What is item test 2?\nA. w2\nB. x2\nC. y2\nD. z2\nAnswer:"
    ]


# --- end-to-end scoring with a tiny random model ----------------------------------------------


class ModTokenizer:
    """The real Llama-3 tokenizer with ids folded into the small model's vocabulary."""

    def __init__(self) -> None:
        self.inner = load_tokenizer()

    def encode(self, text: str, bos: bool = False) -> list[int]:
        return [i % VOCAB for i in self.inner.encode(text, bos=bos)]


@pytest.fixture(scope="module")
def model() -> Transformer:
    return build_model(small_config(), seed=0).eval()


@pytest.fixture(scope="module")
def tokenizer() -> ModTokenizer:
    return ModTokenizer()


def _reference(item: ChoiceItem, model: Transformer, tokenizer: ModTokenizer) -> dict:
    if item.partial:
        return score_partial(model, tokenizer, item.contexts, item.choices[0], item.gold)
    return score_multiple_choice(model, tokenizer, item.contexts[0], item.choices, item.gold)


def test_batched_matches_per_item_mc(model: Transformer, tokenizer: ModTokenizer) -> None:
    loaded = items("arc_challenge")
    chosen = [loaded[i] for i in (0, 1, 2, 3, 836)] + [next(it for it in loaded if it.num_options == 3)]
    summary, records = evaluate_choice_task(TASKS["arc_challenge"], chosen, model, tokenizer, batch_size=4)
    assert [r["id"] for r in records] == [it.id for it in chosen]
    for item, rec in zip(chosen, records, strict=True):
        ref = _reference(item, model, tokenizer)
        assert rec["logprobs"] == pytest.approx(ref["logprobs"], abs=1e-4)
        assert (rec["pred"], rec["acc"], rec["gold"]) == (ref["pred"], ref["acc"], item.gold)
        # lm-eval's acc_norm: divide by the choice's character length without the leading " "
        normed = [lp / len(c[1:]) for lp, c in zip(ref["logprobs"], item.choices, strict=True)]
        assert rec["pred_norm"] == max(range(len(normed)), key=normed.__getitem__)
        assert rec["acc_norm"] == float(rec["pred_norm"] == item.gold)
    assert summary["n"] == 6.0 and set(summary) == {"acc", "acc_se", "acc_norm", "acc_norm_se", "n"}
    assert summary["acc"] == pytest.approx(sum(r["acc"] for r in records) / 6)
    assert summary["acc_norm"] == pytest.approx(sum(r["acc_norm"] for r in records) / 6)
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for k, v in summary.items() if k != "n")


def test_batched_matches_per_item_partial(model: Transformer, tokenizer: ModTokenizer) -> None:
    chosen = items("winogrande")[:20]
    calls: list[int] = []
    summary, records = evaluate_choice_task(
        TASKS["winogrande"], chosen, model, tokenizer, batch_size=1, progress=calls.append
    )
    assert calls == [16, 4]  # chunks of 16 * batch_size items
    for item, rec in zip(chosen, records, strict=True):
        ref = _reference(item, model, tokenizer)
        assert rec["logprobs"] == pytest.approx(ref["logprobs"], abs=1e-4)
        assert (rec["pred"], rec["acc"]) == (ref["pred"], ref["acc"])
        assert "acc_norm" not in rec
    assert set(summary) == {"acc", "acc_se", "n"} and summary["n"] == 20.0


def test_mmlu_subject_accuracy_and_truncation(
    tmp_path: Path, model: Transformer, tokenizer: ModTokenizer
) -> None:
    write_synthetic_mmlu(tmp_path)
    loaded = load_mmlu(tmp_path)
    summary, records = evaluate_choice_task(TASKS["mmlu"], loaded, model, tokenizer, max_length=40)
    assert summary["acc/synthetic_world"] == summary["acc"]
    assert all(r["subject"] == "synthetic_world" for r in records)
    # left truncation to the last max_length + 1 tokens of context + continuation (lm-eval)
    for item, rec in zip(loaded, records, strict=True):
        requests = []
        for cont in item.choices:
            ctx, cont_ids = encode_pair(tokenizer, item.contexts[0], cont)
            requests.append((ctx[len(ctx) + len(cont_ids) - 41 :], cont_ids))
        expected = [lp for lp, _ in continuation_logprobs(model, requests)]
        assert rec["logprobs"] == pytest.approx(expected, abs=1e-4)


def test_mmlu_shares_one_forward_row_per_item(model: Transformer, tokenizer: ModTokenizer) -> None:
    """MMLU's four continuations " A" .. " D" follow one context: one forward row per item (it was
    four), with the same log-probs as four separate passes and the same predictions."""
    chosen = items("mmlu")[::2341]  # 6 items over 6 subjects
    rows: list[int] = []
    hook = model.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    try:
        _, records = evaluate_choice_task(
            TASKS["mmlu"], chosen, model, tokenizer, batch_size=3, max_length=127
        )
    finally:
        hook.remove()
    assert sum(rows) == len(chosen) == 6 and len(rows) == 2
    for item, rec in zip(chosen, records, strict=True):
        four = []
        for cont in item.choices:  # one pass per letter, as before
            ctx, cont_ids = encode_pair(tokenizer, item.contexts[0], cont)
            assert len(cont_ids) == 1
            request = (ctx[max(0, len(ctx) + 1 - 128) :], cont_ids)
            four.append(continuation_logprobs(model, [request], batch_size=1)[0][0])
        assert rec["logprobs"] == pytest.approx(four, abs=1e-4)
        assert rec["pred"] == max(range(4), key=four.__getitem__)


def test_empty_items_rejected(model: Transformer, tokenizer: ModTokenizer) -> None:
    with pytest.raises(ValueError, match="no items"):
        evaluate_choice_task(TASKS["piqa"], [], model, tokenizer)
