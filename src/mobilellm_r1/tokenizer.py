"""Llama-3 byte-level BPE tokenizer (tiktoken) with the MobileLLM-R1 chat format.

The vocabulary is the Llama-3 BPE shipped in the ``llama-models`` package: 128,000 ranks plus 256
special tokens with the Llama-3.1 ids (128000 ``<|begin_of_text|>`` ... 128255).  Encoding runs in
tiktoken; :meth:`Tokenizer.save` writes a Hugging Face fast-tokenizer directory that
``transformers.AutoTokenizer`` loads to identical ids and an identical chat template.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import os
import re
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import tiktoken
from tiktoken.load import load_tiktoken_bpe

from .atomic import atomic_write
from .chat_template import compile_template, render_template

# Split regex of Llama 3 (identical to ``llama_models.llama3.tokenizer.Tokenizer.pat_str``).
LLAMA3_PAT_STR = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The same regex with every digit its own piece (as Qwen2's tokenizer splits numbers): numbers
# are then spelled digit by digit, which lets a small model learn arithmetic as an algorithm
# instead of a table of whole-number tokens. llama.cpp's `qwen2` pre-tokenizer is this regex.
SINGLE_DIGIT_PAT_STR = LLAMA3_PAT_STR.replace(r"\p{N}{1,3}", r"\p{N}")
NUM_SPECIAL_TOKENS = 256
# The first 11 Llama-3.1 special tokens (ids 128000-128010); the rest are reserved_special_token_{2+i}.
_NAMED_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"

# Llama-3 header format.  Rendered like transformers does (sandboxed, trim_blocks, lstrip_blocks),
# and saved verbatim as ``chat_template.jinja``.
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)
CHAT_ROLES = ("system", "user", "assistant", "ipython", "tool")
_REQUIRED_CHAT_TOKENS = (
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|finetune_right_pad_id|>",
)

_CODE_PROMPT = (
    "\nYou are a helpful and harmless assistant. You should think step-by-step before responding "
    "to the instruction below.\n\nPlease use {lang} programming language only.\nYou must use ```{tag} "
    "for just the final solution code block with the following format:\n```{tag}\n# Your code here\n```\n"
)
# System prompts from the MobileLLM-R1 model card.
SYSTEM_PROMPTS: dict[str, str] = {
    "math": "Please reason step by step, and put your final answer within \\boxed{}.",
    "python": _CODE_PROMPT.format(lang="python", tag="python"),
    "cpp": _CODE_PROMPT.format(lang="c++", tag="cpp"),
}

# Runs longer than this many characters are cut into pieces of this size before encoding: tiktoken's
# regex engine overflows its stack (a Rust panic, not an exception) on whitespace runs of roughly
# 800k characters, and its BPE merge grows faster than linearly with a piece's length (8 MB without
# whitespace: 6 s; 200 MB: > 10 min at 10 GB). Ids change only next to a cut; decoding is unchanged.
_MAX_RUN = 25_000
# Matched only from the start of a run (the look-behind), so scanning stays linear in the text.
_LONG_RUN_RE = re.compile(rf"(?<!\s)\s{{{_MAX_RUN},}}|(?<!\S)\S{{{_MAX_RUN},}}")
_SPECIAL_OPEN, _SPECIAL_CLOSE = "<|", "|>"
_MAX_SPECIAL_LEN = 64  # a cut is moved off any `<|...|>` up to this long (special tokens stay whole)

_ADDED_TOKEN_FLAGS = {
    **dict.fromkeys(("lstrip", "normalized", "rstrip", "single_word"), False),
    "special": True,
}
# tokenizer.json text per tiktoken Encoding; building it takes ~2-3 s (see _build_tokenizer_json).
_TOKENIZER_JSON_CACHE: weakref.WeakKeyDictionary[tiktoken.Encoding, str] = weakref.WeakKeyDictionary()


def llama3_special_tokens(num_base_tokens: int = 128_000) -> dict[str, int]:
    """Return the 256 Llama-3.1 special tokens mapped to ids starting at ``num_base_tokens``."""
    reserved = [
        f"<|reserved_special_token_{2 + i}|>" for i in range(NUM_SPECIAL_TOKENS - len(_NAMED_SPECIAL_TOKENS))
    ]
    names = [*_NAMED_SPECIAL_TOKENS, *reserved]
    return {name: num_base_tokens + i for i, name in enumerate(names)}


def chat_messages(user: str, system: str | None = None) -> list[dict[str, str]]:
    """Build a chat: optional system message, then the user message.

    ``system`` is looked up in :data:`SYSTEM_PROMPTS` ("math", "python", "cpp"); any other string
    (including an unknown key) is used literally as the system prompt.
    """
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": SYSTEM_PROMPTS.get(system, system)})
    messages.append({"role": "user", "content": user})
    return messages


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise ValueError naming the index and field of the first malformed chat message."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {i} must be a dict, got {type(message).__name__}")
        for field in ("role", "content"):
            if field not in message:
                raise ValueError(f"message {i} is missing the required field {field!r}")
        if message["role"] not in CHAT_ROLES:
            raise ValueError(f"message {i} has invalid 'role' {message['role']!r}; expected {CHAT_ROLES}")
        if not isinstance(content := message["content"], str):
            raise ValueError(f"message {i} has invalid 'content': {type(content).__name__}, not str")


def _has_long_run(text: str) -> bool:
    return len(text) > _MAX_RUN and _LONG_RUN_RE.search(text) is not None


def split_long_runs(text: str) -> Iterator[str]:
    """Cut whitespace and non-whitespace runs longer than ``_MAX_RUN`` into ``_MAX_RUN`` pieces,
    so encoding takes linear time and bounded memory whatever the text. Only texts with such runs
    are affected, and only at the cut points inside those runs (never inside a ``<|...|>``).
    Yields the pieces in order, lazily (``text`` itself when it has no such run); ``encode(text)``
    is the concatenation of the pieces' ordinary encodings."""
    if not _has_long_run(text):
        yield text
        return
    pos = 0
    for match in _LONG_RUN_RE.finditer(text):
        cut = match.start() + _MAX_RUN
        while cut < match.end():
            cut = _off_special(text, cut, pos)
            yield text[pos:cut]
            pos, cut = cut, cut + _MAX_RUN
    yield text[pos:]


def _off_special(text: str, cut: int, floor: int) -> int:
    """`cut` moved back to the start of a ``<|...|>`` it would split (not below `floor` + 1)."""
    start = text.rfind(_SPECIAL_OPEN, max(cut - _MAX_SPECIAL_LEN, floor + 1), cut + 1)
    if start < 0:
        return cut
    end = text.find(_SPECIAL_CLOSE, start + 2, start + _MAX_SPECIAL_LEN)
    return start if end >= 0 and end + 2 > cut else cut


class Tokenizer:
    """Llama-3 BPE tokenizer backed by ``tiktoken`` with the Llama-3 chat header format.

    Use :func:`load_tokenizer` to build one; ``Tokenizer()`` gives the default llama-models vocabulary.

    Attributes:
        vocab_size: number of ids, ranks + specials (128256 for Llama 3).
        bos_id, eos_id, eot_id, eom_id, pad_id: ids of ``<|begin_of_text|>``, ``<|end_of_text|>``,
            ``<|eot_id|>``, ``<|eom_id|>`` and ``<|finetune_right_pad_id|>``.
        stop_ids: ids that end generation (end_of_text, eom, eot).
        pat_str: the pre-tokenization split regex.
        chat_template: the Jinja chat template source.
        name_or_path: where the tokenizer was loaded from.
    """

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int] | None = None,
        special_tokens: Mapping[str, int] | None = None,
        *,
        pat_str: str = LLAMA3_PAT_STR,
        chat_template: str | None = None,
        name_or_path: str | None = None,
    ) -> None:
        if mergeable_ranks is None and special_tokens is None and pat_str == LLAMA3_PAT_STR:
            self._enc, self._ranks = _default_encoding()
            specials = llama3_special_tokens(len(self._ranks))
            name_or_path = str(_default_model_path()) if name_or_path is None else name_or_path
        else:
            self._ranks = mergeable_ranks if mergeable_ranks is not None else _default_encoding()[1]
            specials = dict(special_tokens or llama3_special_tokens(len(self._ranks)))
            name = Path(name_or_path or "custom").name
            self._enc = tiktoken.Encoding(
                name, pat_str=pat_str, mergeable_ranks=self._ranks, special_tokens=specials
            )
        missing = [t for t in (BOS_TOKEN, EOS_TOKEN, *_REQUIRED_CHAT_TOKENS) if t not in specials]
        if missing:
            raise ValueError(f"tokenizer {name_or_path or ''!r} lacks the special tokens {missing}")
        self._special_tokens = specials
        self._special_ids = frozenset(specials.values())
        self.vocab_size: int = self._enc.n_vocab
        self.bos_id: int = specials[BOS_TOKEN]
        self.eos_id: int = specials[EOS_TOKEN]
        self.eot_id: int = specials["<|eot_id|>"]
        self.eom_id: int = specials["<|eom_id|>"]
        self.pad_id: int = specials["<|finetune_right_pad_id|>"]
        self.stop_ids: tuple[int, ...] = (self.eos_id, self.eom_id, self.eot_id)
        self.pat_str = pat_str
        self.chat_template = chat_template or CHAT_TEMPLATE
        self.name_or_path = name_or_path or ""

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The underlying ``tiktoken.Encoding``."""
        return self._enc

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token strings mapped to ids (a copy)."""
        return dict(self._special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size})"

    # ------------------------------------------------------------------ encode / decode
    def encode(
        self,
        text: str,
        bos: bool = False,
        eos: bool = False,
        allowed_special: Literal["all"] | Iterable[str] = frozenset(),
    ) -> list[int]:
        """Encode text; special-token strings are plain text unless listed in ``allowed_special``."""
        allowed = allowed_special if allowed_special == "all" else frozenset(allowed_special)
        ids = [self.bos_id] if bos else []
        for piece in split_long_runs(text):
            if allowed:
                ids.extend(self._enc.encode(piece, allowed_special=allowed, disallowed_special=()))
            else:
                ids.extend(self._enc.encode_ordinary(piece))
        if eos:
            ids.append(self.eos_id)
        return ids

    def encode_batch(
        self, texts: Iterable[str], bos: bool = False, eos: bool = False, num_threads: int = 8
    ) -> list[list[int]]:
        """Encode many texts as ordinary text in parallel (tiktoken releases the GIL)."""
        texts = list(texts)
        risky = {i for i, t in enumerate(texts) if _has_long_run(t)}
        safe = ["" if i in risky else t for i, t in enumerate(texts)]
        batch = self._enc.encode_ordinary_batch(safe, num_threads=num_threads)
        for i in risky:
            batch[i] = self.encode(texts[i])
        prefix, suffix = ([self.bos_id] if bos else []), ([self.eos_id] if eos else [])
        if prefix or suffix:
            batch = [prefix + ids + suffix for ids in batch]
        return batch

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Decode ids to text (invalid UTF-8 becomes U+FFFD)."""
        ids = list(ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self._enc.decode(ids)

    def token_to_id(self, token: str) -> int:
        """Id of a single token given by its text (e.g. ``" the"`` or ``"<|eot_id|>"``)."""
        if token in self._special_tokens:
            return self._special_tokens[token]
        try:
            return self._enc.encode_single_token(token)
        except KeyError:
            raise KeyError(f"{token!r} is not a single token of {self.name_or_path}") from None

    def id_to_token(self, token_id: int) -> str:
        """Text of one token; bytes that are not valid UTF-8 on their own become U+FFFD."""
        return self._enc.decode_single_token_bytes(token_id).decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ chat
    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
    ) -> list[int] | str:
        """Validate and render a chat like ``transformers`` (sandboxed, within the limits of
        :func:`~.chat_template.render_template`).

        Returns the string if not ``tokenize``, else its ids (special-token strings become specials).
        """
        validate_messages(messages)
        text = render_template(
            compile_template(self.chat_template),
            messages=[dict(m) for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=BOS_TOKEN,
            eos_token=EOS_TOKEN,
        )
        return self.encode(text, allowed_special="all") if tokenize else text

    # ------------------------------------------------------------------ save
    def save(self, directory: str | os.PathLike, model_max_length: int | None = None) -> Path:
        """Write a Hugging Face tokenizer directory loadable by ``AutoTokenizer`` and :func:`load_tokenizer`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        specials = sorted(self._special_tokens.items(), key=lambda kv: kv[1])
        config: dict[str, Any] = {
            "added_tokens_decoder": {str(i): {"content": name, **_ADDED_TOKEN_FLAGS} for name, i in specials},
            "bos_token": BOS_TOKEN,
            "clean_up_tokenization_spaces": False,
            "eos_token": EOS_TOKEN,
            "model_input_names": ["input_ids", "attention_mask"],
            "pad_token": None,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }
        if model_max_length is not None:
            config["model_max_length"] = int(model_max_length)
        atomic_write(directory / "tokenizer.json", self.to_hf_json())
        atomic_write(
            directory / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        )
        special_map = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN}
        atomic_write(directory / "special_tokens_map.json", json.dumps(special_map, indent=2) + "\n")
        atomic_write(directory / "chat_template.jinja", self.chat_template)
        return directory

    def fingerprint(self) -> str:
        """sha256 of what decides the ids: the ranks, the special tokens and the split regex
        (not the chat template, nor where the tokenizer was loaded from)."""
        digest = hashlib.sha256(self.pat_str.encode())
        for token, rank in sorted(self._ranks.items(), key=lambda kv: kv[1]):
            digest.update(b"%d:%s;" % (rank, token.hex().encode()))
        for name, i in sorted(self._special_tokens.items(), key=lambda kv: kv[1]):
            digest.update(f"{i}:{name};".encode())
        return digest.hexdigest()

    def to_hf_json(self) -> str:
        """The Hugging Face ``tokenizer.json`` text of this tokenizer (byte-level BPE: vocab of
        byte-level strings, merges, the split regex and the special tokens)."""
        text = _TOKENIZER_JSON_CACHE.get(self._enc)
        if text is None:
            text = _build_tokenizer_json(self._ranks, self._special_tokens, self.pat_str)
            _TOKENIZER_JSON_CACHE[self._enc] = text
        return text


def _build_tokenizer_json(ranks: dict[bytes, int], specials: Mapping[str, int], pat_str: str) -> str:
    """Serialize to HF ``tokenizer.json`` with transformers' TikTokenConverter.

    Slow: recovering ~280k merges from the ranks takes ~1.3 s and building the ``tokenizers`` BPE
    another ~1 s on one CPU core, hence the per-Encoding cache in ``Tokenizer.to_hf_json``.
    """
    from tokenizers import AddedToken, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _InMemoryConverter(TikTokenConverter):
        def load_tiktoken_bpe(self, tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    backend = _InMemoryConverter(vocab_file="<in-memory>", pattern=pat_str).converted()
    ordered = sorted(specials.items(), key=lambda kv: kv[1])
    backend.add_special_tokens([AddedToken(name, normalized=False, special=True) for name, _ in ordered])
    wrong = [(name, i) for name, i in ordered if backend.token_to_id(name) != i]
    if wrong:
        raise ValueError(
            f"special tokens must follow the ranks contiguously to be saved; mismatched: {wrong[:3]}"
        )
    add_bos = processors.TemplateProcessing(  # prepend BOS like the official Llama-3 tokenizer.json
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B:1",
        special_tokens=[(BOS_TOKEN, specials[BOS_TOKEN])],
    )
    backend.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), add_bos])
    return backend.to_str(pretty=False)


# ---------------------------------------------------------------------- loading
def _default_model_path() -> Path:
    return Path(str(importlib.resources.files("llama_models.llama3") / "tokenizer.model"))


def _read_tiktoken_file(path: Path) -> dict[bytes, int]:
    """Parse a tiktoken BPE file.

    tiktoken caches files by *path* in a temp dir; passing the content hash makes it notice edits.
    """
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return load_tiktoken_bpe(str(path), expected_hash=digest)


@functools.lru_cache(maxsize=1)
def _default_encoding() -> tuple[tiktoken.Encoding, dict[bytes, int]]:
    """The llama-models Llama-3 Encoding and its ranks, parsed once per process."""
    ranks = _read_tiktoken_file(_default_model_path())
    enc = tiktoken.Encoding(
        name="llama3",
        pat_str=LLAMA3_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens=llama3_special_tokens(len(ranks)),
    )
    return enc, ranks


def _split_regex(pre_tokenizer: Mapping[str, Any] | None) -> str | None:
    """Find the regex of a ``Split`` pre-tokenizer (possibly inside a ``Sequence``)."""
    if not pre_tokenizer:
        return None
    if pre_tokenizer.get("type") == "Split":
        return pre_tokenizer.get("pattern", {}).get("Regex")
    for child in pre_tokenizer.get("pretokenizers", []) or []:
        found = _split_regex(child)
        if found:
            return found
    return None


def _is_byte_level(node: Any) -> bool:
    """True when a tokenizer.json component (or one nested in it) has type ``ByteLevel``."""
    if isinstance(node, Mapping):
        return node.get("type") == "ByteLevel" or any(_is_byte_level(v) for v in node.values())
    if isinstance(node, list):
        return any(_is_byte_level(v) for v in node)
    return False


def _read_tokenizer_json(path: Path) -> tuple[dict[bytes, int], dict[str, int], str]:
    """Turn an HF byte-level BPE ``tokenizer.json`` into tiktoken ranks, specials and split regex.

    Ranks are the token ids, which is exact for vocabularies converted from tiktoken (Llama 3).  Without
    a ``Split`` pre-tokenizer the Llama-3 split regex is used.
    """
    return parse_hf_tokenizer_json(path.read_text(encoding="utf-8"), str(path))


def parse_hf_tokenizer_json(text: str, source: str) -> tuple[dict[bytes, int], dict[str, int], str]:
    """`tokenizer.json` text -> (tiktoken ranks, special tokens, split regex); errors name `source`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: tokenizer.json is not valid JSON ({exc})") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level([data.get("pre_tokenizer"), data.get("decoder")]):
        raise ValueError(f"{source}: not a byte-level BPE tokenizer.json (model type {model.get('type')!r})")
    specials = {tok["content"]: int(tok["id"]) for tok in data.get("added_tokens", [])}
    try:
        ranks = ranks_from_byte_level_vocab(model["vocab"], set(specials.values()))
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    return ranks, specials, _split_regex(data.get("pre_tokenizer")) or LLAMA3_PAT_STR


def ranks_from_byte_level_vocab(vocab: Mapping[str, int], special_ids: set[int]) -> dict[bytes, int]:
    """BPE ranks from a byte-level vocabulary (token text in GPT-2's byte-to-unicode alphabet ->
    id), leaving out the special ids. Ranks are the ids, which is exact for vocabularies converted
    from tiktoken (Llama 3)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    try:
        return {
            bytes(byte_of[c] for c in token): int(i) for token, i in vocab.items() if i not in special_ids
        }
    except KeyError as exc:
        raise ValueError(f"vocab entry uses a character outside the byte-level alphabet: {exc}") from None


def _read_chat_template(directory: Path) -> str | None:
    """Chat template from ``chat_template.jinja`` or ``tokenizer_config.json`` in ``directory``."""
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    config_file = directory / "tokenizer_config.json"
    if not config_file.is_file():
        return None
    template = json.loads(config_file.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def _from_file(path: Path, chat_template: str | None, name: str) -> Tokenizer:
    if path.suffix == ".json":
        ranks, specials, pat_str = _read_tokenizer_json(path)
        return Tokenizer(ranks, specials, pat_str=pat_str, chat_template=chat_template, name_or_path=name)
    return Tokenizer(_read_tiktoken_file(path), chat_template=chat_template, name_or_path=name)


def load_tokenizer(path: str | os.PathLike | None = None) -> Tokenizer:
    """Load a tokenizer.

    * ``None``: the Llama-3 tokenizer from ``llama-models`` (parsed once per process).
    * a directory: its ``tokenizer.json`` (HF byte-level BPE), else its ``tokenizer.model`` (tiktoken
      file), else the default tokenizer (e.g. a bare ``save_pretrained`` model dir).  The chat template
      comes from ``chat_template.jinja`` / ``tokenizer_config.json`` there, else :data:`CHAT_TEMPLATE`.
    * a file: ``*.json`` is read as tokenizer.json, anything else as a tiktoken BPE file.
    """
    if path is None:
        return Tokenizer()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer path does not exist: {path}")
    if path.is_file():
        return _from_file(path, _read_chat_template(path.parent), str(path))
    chat_template = _read_chat_template(path)
    for filename in ("tokenizer.json", "tokenizer.model"):
        if (path / filename).is_file():
            return _from_file(path / filename, chat_template, str(path))
    return Tokenizer(chat_template=chat_template, name_or_path=str(path))
