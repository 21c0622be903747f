"""Phone vocabulary with the ids and vocab.json format of transformers' Wav2Vec2 CTC tokenizers.

Phones are whole tokens (``"t͡ʃ a"`` is two tokens), so encoding splits on whitespace, as
``Wav2Vec2PhonemeCTCTokenizer(do_phonemize=False)`` does. Id 0 is ``<pad>``, which is also the CTC blank
(transformers' convention, unlike fairseq's ``<s>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
VOCAB_NAME = "vocab.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_NAME = "special_tokens_map.json"
WORD_DELIMITER = "|"
"""Word boundary token of character vocabularies (transformers' Wav2Vec2 convention); phone vocabularies lack it."""


class PhoneTokenizer:
    """Maps space-separated phone strings to ids and back."""

    def __init__(self, vocab: dict[str, int]):
        for tok in SPECIAL_TOKENS:
            if tok not in vocab:
                raise ValueError(f"vocabulary lacks the special token {tok!r}")
        ids = sorted(vocab.values())
        if ids != list(range(len(ids))):
            raise ValueError("vocabulary ids must be 0..N-1 without gaps or repeats")
        self.vocab = dict(vocab)
        self.id_to_token = {i: t for t, i in vocab.items()}

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_phones(cls, phones: Iterable[str]) -> PhoneTokenizer:
        """Build a vocabulary from phone tokens (or phone strings); specials first, then phones sorted."""
        inventory: set[str] = set()
        for item in phones:
            inventory.update(item.split())
        inventory.difference_update(SPECIAL_TOKENS)
        tokens = list(SPECIAL_TOKENS) + sorted(inventory)
        return cls({t: i for i, t in enumerate(tokens)})

    @classmethod
    def from_file(cls, path: str | Path) -> PhoneTokenizer:
        """vocab.json (or a directory holding it). Every error names the file: a user may pass a vocabulary to
        several jobs, and "lacks '<s>'" alone does not say which of them is wrong."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_NAME
        if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
            raise ValueError(f"{path}: not a regular file (expected a vocab.json)")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"vocabulary file not found: {path}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a vocab.json (not UTF-8 at byte {e.start})") from None
        except OSError as e:
            raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
        return cls.from_json(text, str(path))

    @classmethod
    def from_json(cls, text: str, source: str) -> PhoneTokenizer:
        """A vocabulary from the text of a vocab.json read from ``source`` (a path or URI), which every error
        names: not JSON, not a phone -> id mapping, a special token missing, ids with gaps."""
        try:
            vocab = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise ValueError(f"{source}: expected a JSON object mapping phone -> integer id")
        try:
            return cls(vocab)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    def save(self, path: str | Path) -> Path:
        """Write vocab.json (a file path or a directory); loadable by Wav2Vec2CTCTokenizer."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / VOCAB_NAME
        path.write_text(json.dumps(self.vocab, ensure_ascii=False, indent=1), encoding="utf-8")
        return path

    def save_pretrained(self, directory: str | Path) -> Path:
        """vocab.json, tokenizer_config.json and special_tokens_map.json: the files with which transformers'
        ``AutoTokenizer`` builds the same tokenizer (``Wav2Vec2PhonemeCTCTokenizer`` without phonemizing: tokens
        are split on spaces, decoded ids are joined with spaces). Written by hand, so the model library needs no
        transformers (docs/architecture.md#layers)."""
        directory = Path(directory)
        self.save(directory)
        specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": PAD}
        config = {
            "tokenizer_class": "Wav2Vec2PhonemeCTCTokenizer",
            "processor_class": "Wav2Vec2Processor",
            **specials,
            "do_phonemize": False,
            "phone_delimiter_token": " ",
            "word_delimiter_token": WORD_DELIMITER if WORD_DELIMITER in self.vocab else None,
            "clean_up_tokenization_spaces": False,
            "model_max_length": 1_000_000_000_000_000_019_884_624_838_656,  # transformers' "no limit"
        }
        for name, content in ((TOKENIZER_CONFIG_NAME, config), (SPECIAL_TOKENS_MAP_NAME, specials)):
            (directory / name).write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")
        return directory

    # -- properties ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def pad_token_id(self) -> int:
        return self.vocab[PAD]

    @property
    def unk_token_id(self) -> int:
        return self.vocab[UNK]

    @property
    def phones(self) -> list[str]:
        """The phone inventory (no special tokens), in id order."""
        return [self.id_to_token[i] for i in range(len(self)) if self.id_to_token[i] not in SPECIAL_TOKENS]

    def unknown_phones(self, phones: str) -> list[str]:
        return [p for p in phones.split() if p not in self.vocab]

    # -- encode / decode ----------------------------------------------------------------------------
    def encode(self, phones: str, *, strict: bool = False) -> list[int]:
        """Ids of a space-separated phone string. Unknown phones map to <unk>, or raise when ``strict``."""
        out = []
        for p in phones.split():
            i = self.vocab.get(p)
            if i is None:
                if strict:
                    raise KeyError(f"phone {p!r} is not in the vocabulary")
                i = self.unk_token_id
            out.append(i)
        return out

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Phone string of ids (no CTC collapsing here: see decoding.ctc_greedy_decode)."""
        toks = [self.id_to_token[int(i)] for i in ids if int(i) >= 0]
        if skip_special_tokens:
            toks = [t for t in toks if t not in SPECIAL_TOKENS]
        return " ".join(toks)
