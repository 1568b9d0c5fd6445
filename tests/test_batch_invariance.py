"""Every non-AR search and the hybrid's joint searches decode a padded batch as each row alone: CTC greedy and
prefix beam search, Mask-Predict (one or two sources), joint CTC/attention beam search, CTC-drafted speculative
greedy (static and continuous) and Mask-CTC. The padding holds loud noise, so a frame read past a row's end
would show. (The AR searches: tests/test_ar_decoder.py::test_a_padded_batch_decodes_as_each_row_alone.)"""
from __future__ import annotations

import pytest
import torch
from helpers import spread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoders.ctc import CTCDecodingOptions, ctc
from decoders.hybrid import ctc_attention
from decoders.mask_ctc import MaskCTCOptions
from decoders.parallel import MaskPredictOptions, mask_predict_decoder
from decoders.search import DecodingOptions
from zoo.contract import Features

DIM, ROWS = 32, 4


def padded(seed: int, sources: int = 1, frames: int = 14) -> list[Features]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(sources):
        n = frames - 4 * i
        x, lengths = torch.randn(ROWS, n, DIM, generator=g), torch.randint(2, n + 1, (ROWS,), generator=g)
        out.append(Features(x.masked_fill(torch.arange(n)[None, :, None] >= lengths[:, None, None], 1e3), lengths))
    return out


def row_alone(feats: list[Features], row: int) -> list[Features]:
    return [Features(f.x[row: row + 1, : int(f.lengths[row])]) for f in feats]


def one(feats: list[Features]):
    return feats[0] if len(feats) == 1 else feats


def assert_rows_alone(decode, feats: list[Features]):
    batch = decode(one(feats))
    for row in range(ROWS):
        single = decode(one(row_alone(feats, row)))[0]
        assert batch[row].tokens == single.tokens, row
        assert batch[row].score == pytest.approx(single.score, abs=1e-4)


SEARCHES = ["ctc greedy", "ctc beam 3", "mask-predict", "mask-predict, 2 sources", "joint ctc/attention beam 3",
            "ctc-drafted greedy", "ctc-drafted greedy, continuous", "mask-ctc"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), search=st.sampled_from(SEARCHES))
def test_a_padded_batch_decodes_as_each_row_alone(seed, search):
    if search.startswith("ctc "):
        head = spread(ctc(DIM, 12), seed)
        opts = CTCDecodingOptions(beam_size=3 if "beam" in search else 1)
        assert_rows_alone(lambda m: head.decode(m, opts), padded(seed))
    elif search.startswith("mask-predict"):
        sources = 2 if "2 sources" in search else 1
        dec = spread(mask_predict_decoder(16, dim=DIM, heads=4, layers=2, max_len=12, sources=sources), seed)
        opts = MaskPredictOptions(iterations=3, length_beam=2)
        assert_rows_alone(lambda m: dec.decode(m, opts), padded(seed, sources))
    else:
        hybrid = spread(ctc_attention(16, dim=DIM, heads=4, layers=2, max_len=24, mlm_weight=0.3), seed)
        opts = {"joint ctc/attention beam 3": DecodingOptions(beam_size=3, ctc_weight=0.3, max_len=12),
                "ctc-drafted greedy": DecodingOptions(draft="ctc", max_len=12),
                "ctc-drafted greedy, continuous": DecodingOptions(draft="ctc", max_len=12, max_active=2),
                "mask-ctc": MaskCTCOptions(threshold=0.9, iterations=2)}[search]
        assert_rows_alone(lambda m: hybrid.decode(m, opts), padded(seed))
