"""Text tokenizers that travel with the model: characters or SentencePiece (BPE / unigram,
Kudo & Richardson 2018), trained on a recipe's text and stored in the model's config.json.

Ids 0, 1 are reserved everywhere: 0 = blank (CTC) and padding, 1 = unknown. AR decoders use
``bos_id`` / ``eos_id``.
"""
from __future__ import annotations

import base64
import io
import unicodedata
from collections import Counter
from typing import Iterable

BLANK, UNK = "<blank>", "<unk>"


class Tokenizer:
    blank_id = pad_id = 0
    unk_id = 1
    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str, strict: bool = True) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def _special(self) -> set[int]:
        return {self.blank_id, self.unk_id, self.bos_id, self.eos_id}


class CharTokenizer(Tokenizer):
    """One id per character; ``<blank>``=0, ``<unk>``=1, ``<s>``=2, ``</s>``=3, then the symbols."""

    def __init__(self, symbols: list[str]):
        self.symbols = [BLANK, UNK, "<s>", "</s>", *symbols]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.bos_id, self.eos_id, self.vocab_size = 2, 3, len(self.symbols)

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        counts = Counter(ch for t in texts for ch in normalize_unicode(t))
        return cls(sorted(counts))

    def encode(self, text: str, strict: bool = True) -> list[int]:
        text = normalize_unicode(text)
        unknown = sorted({ch for ch in text if ch not in self.index})
        if unknown and strict:
            raise ValueError(
                f"text {text[:60]!r} has characters outside the tokenizer: {unknown}. Normalise the text "
                "(the recipe's normaliser), retrain the tokenizer on it, or encode with strict=False to map them to <unk>."
            )
        return [self.index.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        special = self._special()
        return "".join(self.symbols[i] for i in ids if i not in special and 0 <= i < self.vocab_size)

    def to_dict(self) -> dict:
        return {"type": "char", "symbols": self.symbols[4:]}


class SentencePieceTokenizer(Tokenizer):
    """SentencePiece model with pad(=blank)=0, unk=1, bos=2, eos=3."""

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.bos_id, self.eos_id, self.vocab_size = self.sp.bos_id(), self.sp.eos_id(), self.sp.get_piece_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 256, model_type: str = "bpe",
              character_coverage: float = 1.0) -> "SentencePieceTokenizer":
        import sentencepiece as spm

        if model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter([normalize_unicode(t) for t in texts]), model_writer=buffer,
            vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece=BLANK, hard_vocab_limit=False,
            minloglevel=2, num_threads=1,
        )
        return cls(buffer.getvalue())

    def encode(self, text: str, strict: bool = True) -> list[int]:
        ids = self.sp.encode(normalize_unicode(text))
        if strict and self.unk_id in ids:
            pieces = self.sp.encode(normalize_unicode(text), out_type=str)
            bad = sorted({p for p, i in zip(pieces, ids) if i == self.unk_id})
            raise ValueError(f"text {text[:60]!r} has pieces outside the tokenizer: {bad}; retrain it on this text "
                             "or encode with strict=False")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        special = self._special()
        return self.sp.decode([int(i) for i in ids if int(i) not in special])

    def to_dict(self) -> dict:
        return {"type": "sentencepiece", "model": base64.b64encode(self.proto).decode("ascii")}


def tokenizer_from_dict(d: dict) -> Tokenizer:
    if d.get("type") == "char":
        return CharTokenizer(list(d["symbols"]))
    if d.get("type") == "sentencepiece":
        return SentencePieceTokenizer(base64.b64decode(d["model"]))
    raise ValueError(f"unknown tokenizer type {d.get('type')!r}; expected 'char' or 'sentencepiece'")


def train_tokenizer(texts: Iterable[str], kind: str = "char", vocab_size: int = 256) -> Tokenizer:
    """``kind`` is ``char``, ``bpe`` or ``unigram``."""
    texts = list(texts)
    if kind == "char":
        return CharTokenizer.train(texts)
    return SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type=kind)


def normalize_unicode(text: str) -> str:
    return unicodedata.normalize("NFC", text)
