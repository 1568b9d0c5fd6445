"""Dataset and collate for the ASR + subtitling recipe: one audio, two label domains.

Every row of a corpus manifest (recipes/asr_subtitle/corpus.py) carries a verbatim transcript and a
subtitle. ``label_mode`` chooses which the dataset exposes, so the same audio trains a verbatim-only,
a subtitle-only or a joint model, or (``partial``) a mix of rows labelled for one branch only, as with
broadcast archives where subtitles exist for far more hours than verbatim transcripts.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from zoo.tokenizers import Tokenizer

HEADS = ("verbatim", "subtitle")
LABEL_MODES = ("both", "verbatim", "subtitle", "partial")


class SpeechTextDataset(Dataset):
    """Rows of a manifest with audio held in memory as int16 (2,000 utterances of ~4 s: ~250 MB).

    ``pad_noise`` = (probability, max seconds): training-time context augmentation. With that probability
    an utterance gets 0..max s of its own background (noisy minus clean, from the row's
    ``clean_filepath``) before and after it, as it would sit inside a broadcast; a model trained on
    utterance-bounded audio alone degrades badly inside long-form windows (BENCHMARKS.md). With probability
    ``switch_background`` the background after it is another row's instead (at a cut in a broadcast the
    background changes where speech stops). Draws use torch's global generator, so a resumed run repeats them.
    """

    def __init__(self, rows: Sequence[dict], tokenizers: dict[str, Tokenizer], sample_rate: int = 16000,
                 label_mode: str = "both", partial_fraction: float = 0.5, seed: int = 0,
                 pad_noise: tuple[float, float] = (0.0, 0.0), switch_background: float = 0.0):
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        if not 0.0 <= pad_noise[0] <= 1.0 or pad_noise[1] < 0:
            raise ValueError(f"pad_noise={pad_noise}: give (probability in [0, 1], max seconds >= 0)")
        self.rows, self.tokenizers, self.sample_rate = list(rows), tokenizers, sample_rate
        if not 0.0 <= switch_background <= 1.0:
            raise ValueError(f"switch_background={switch_background}: give a probability in [0, 1]")
        self.pad_noise, self.switch_background = tuple(pad_noise), switch_background
        self._clean: dict[int, np.ndarray] = {}
        rng = random.Random(seed)
        self.labels = []
        for row in self.rows:
            if label_mode == "partial":  # each row keeps one branch's label with prob partial_fraction each
                has = {"verbatim": rng.random() >= partial_fraction / 2, "subtitle": True}
                if not has["verbatim"]:
                    has["subtitle"] = True
                elif rng.random() < partial_fraction / 2:
                    has["subtitle"] = False
            else:
                has = {h: label_mode in ("both", h) for h in HEADS}
            self.labels.append({h: has[h] and h in tokenizers for h in HEADS})
        self._audio: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def audio(self, i: int) -> np.ndarray:
        if i not in self._audio:
            row = self.rows[i]
            wav, sr = sf.read(row["audio_filepath"], dtype="int16", always_2d=False)
            if sr != self.sample_rate:
                raise ValueError(f"{row['audio_filepath']}: {sr} Hz, the recipe expects {self.sample_rate} Hz; "
                                 "rebuild the corpus at that rate")
            self._audio[i] = wav if wav.ndim == 1 else wav.mean(1).astype(np.int16)
        return self._audio[i]

    def background(self, i: int) -> np.ndarray:
        """The row's noise alone (noisy minus clean), int32."""
        if i not in self._clean:
            self._clean[i], _ = sf.read(self.rows[i]["clean_filepath"], dtype="int16", always_2d=False)
        return self.audio(i).astype(np.int32) - self._clean[i].astype(np.int32)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        audio = self.audio(i)
        prob, max_s = self.pad_noise
        if prob > 0 and max_s > 0 and float(torch.rand(())) < prob:
            bed = after_bed = self.background(i)
            before, after = (int(float(torch.rand(())) * max_s * self.sample_rate) for _ in range(2))
            if len(self.rows) > 1 and self.switch_background > 0 and float(torch.rand(())) < self.switch_background:
                j = int(torch.randint(len(self.rows) - 1, ()))
                after_bed = self.background(j + (j >= i))  # any row but this one
            audio = np.concatenate([np.resize(bed[::-1], before)[::-1], audio, np.resize(after_bed, after)])
        item = {"id": row["id"], "audio": torch.from_numpy(audio.astype(np.float32) / 32768.0)}
        for head in HEADS:
            if self.labels[i][head]:
                item[head] = torch.tensor(self.tokenizers[head].encode(row[f"text_{head}"]), dtype=torch.long)
        return item


def collate(items: list[dict]) -> dict:
    """Pad audio and token targets; a row without a head's label is marked absent for that head."""
    lengths = torch.tensor([len(it["audio"]) for it in items])
    audio = torch.nn.utils.rnn.pad_sequence([it["audio"] for it in items], batch_first=True)
    ids = [it["id"] for it in items]
    targets = {}
    for head in HEADS:
        present = torch.tensor([head in it for it in items])
        if not present.any():
            continue
        seqs = [it.get(head, torch.zeros(0, dtype=torch.long)) for it in items]
        targets[head] = dict(
            tokens=torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=0),
            lengths=torch.tensor([len(s) for s in seqs]), present=present, ids=ids,
        )
    return dict(ids=ids, audio=audio, audio_lengths=lengths, targets=targets)


def load_split(manifest: str | Path) -> list[dict]:
    from zoo.data.manifest import read_manifest

    from recipes.asr_subtitle.corpus import MANIFEST_SCHEMA

    return read_manifest(manifest, MANIFEST_SCHEMA)
