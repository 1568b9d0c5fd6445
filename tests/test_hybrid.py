"""Hybrid CTC/attention: the vectorised prefix scorer equals brute-force path enumeration, the loss is the
weighted sum of its parts, ctc_weight=0 decodes exactly like attention alone, ctc_weight=1 scores are CTC
likelihoods, and a small model learns a copy task through a ZooModel graph."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from decoders.ctc_prefix_score import CTCPrefixScorer
from decoders.hybrid import ctc_attention
from decoders.search import DecodingOptions, decode
from decoders.speculative import speculative_decode
from zoo.contract import Features
from zoo.graph import ModelSpec, Node

torch.set_num_threads(1)
BLANK, BOS, EOS = 0, 1, 2


def collapse(path) -> tuple[int, ...]:
    out, prev = [], None
    for p in path:
        if p != prev and p != BLANK:
            out.append(p)
        prev = p
    return tuple(out)


def brute_force(lp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """P(label sequence) for every sequence, summing exp(path score) over all V^T CTC paths."""
    frames, vocab = lp.shape
    table, prob = lp.double().tolist(), {}
    for path in itertools.product(range(vocab), repeat=frames):
        seq = collapse(path)
        prob[seq] = prob.get(seq, 0.0) + math.exp(sum(table[t][c] for t, c in enumerate(path)))
    return prob


def prefix_prob(prob, prefix) -> float:
    return sum(p for seq, p in prob.items() if seq[: len(prefix)] == prefix)


def test_prefix_scores_equal_brute_force():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(2, 5, 5, generator=g).mul(1.5).log_softmax(-1)  # 2 utterances, 5 frames, 5 tokens
    lengths = torch.tensor([5, 3])
    probs = [brute_force(lp[0]), brute_force(lp[1, :3])]  # utterance 1 has only 3 valid frames
    scorer = CTCPrefixScorer(lp, lengths, BLANK, EOS, weight=0.5)
    cand = torch.tensor([[3, 4, EOS, BLANK]] * 2)
    psi = scorer.score(cand).exp()
    for b in range(2):
        expected = [prefix_prob(probs[b], (3,)), prefix_prob(probs[b], (4,)), probs[b].get((), 0.0), 0.0]
        assert psi[b].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-12)
    # two beams per utterance: (3,) and (4,) for utterance 0, (4,) and (3,) for utterance 1
    scorer.select(torch.tensor([0, 0, 1, 1]), torch.tensor([3, 4, 4, 3]))
    cand = torch.tensor([[3, 4, EOS]] * 4)
    psi = scorer.score(cand).exp()
    for row, (b, first) in enumerate([(0, 3), (0, 4), (1, 4), (1, 3)]):
        expected = [prefix_prob(probs[b], (first, 3)), prefix_prob(probs[b], (first, 4)),
                    probs[b].get((first,), 0.0)]
        assert psi[row].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-12)
    full = torch.exp(-F.ctc_loss(lp[1, :3, None], torch.tensor([[4]]), torch.tensor([3]), torch.tensor([1]),
                                 reduction="sum"))
    assert psi[2, 2].item() == pytest.approx(full.item(), rel=1e-5)  # EOS score = torch's CTC likelihood


def small_hybrid(ctc_weight=0.3, seed=0):
    torch.manual_seed(seed)
    return ctc_attention(vocab_size=12, dim=32, heads=2, layers=2, max_len=16, ctc_weight=ctc_weight)


def batch(n: int, g: torch.Generator, repeat: int = 2):
    """Source tokens, each repeated ``repeat`` frames; the target is the token sequence itself."""
    lens = torch.randint(2, 6, (n,), generator=g)
    tgt = torch.zeros(n, 5, dtype=torch.long)
    for i, length in enumerate(lens.tolist()):
        tgt[i, :length] = torch.randint(3, 12, (length,), generator=g)
    return dict(src=tgt.repeat_interleave(repeat, 1), src_lengths=lens * repeat,
                targets={"text": {"tokens": tgt, "lengths": lens}})


def test_hybrid_loss_is_weighted_sum():
    dec = small_hybrid(ctc_weight=0.3)
    g = torch.Generator().manual_seed(1)
    b = batch(4, g)
    mem = Features(torch.randn(4, 10, 32, generator=g), b["src_lengths"])
    targets = b["targets"]["text"]
    out = dec(mem, targets)
    ctc, att = dec.ctc(mem, targets).loss, dec.attention(mem, targets).loss
    assert out.loss.item() == pytest.approx(0.3 * ctc.item() + 0.7 * att.item(), rel=1e-6)
    assert out.extras["ctc_loss"].item() == pytest.approx(ctc.item())
    dec.ctc_weight = 0.0
    assert dec(mem, targets).loss.item() == pytest.approx(att.item(), rel=1e-6)
    dec.ctc_weight = 1.0
    assert dec(mem, targets).loss.item() == pytest.approx(ctc.item(), rel=1e-6)


@pytest.mark.parametrize("beam", [1, 3])
def test_ctc_weight_zero_equals_attention_decoding(beam):
    dec = small_hybrid().eval()
    g = torch.Generator().manual_seed(2)
    mem = Features(torch.randn(5, 10, 32, generator=g), torch.tensor([10, 7, 9, 4, 6]))
    opts = DecodingOptions(beam_size=beam, n_best=beam, max_len=8, early_stopping=False)
    plain = decode(dec.attention, mem, opts)
    scorer = CTCPrefixScorer(dec.ctc.log_probs(mem), mem.lengths, BLANK, EOS, weight=0.0)
    joint = decode(dec.attention, mem, opts, scorer=scorer)  # the joint path, with lambda = 0
    flat = lambda r: [h for row in r for h in (row if isinstance(row, list) else [row])]
    assert [h.tokens for h in flat(joint)] == [h.tokens for h in flat(plain)]
    assert [h.score for h in flat(joint)] == pytest.approx([h.score for h in flat(plain)], abs=1e-5)
    assert [h.tokens for h in flat(dec.decode(mem, DecodingOptions(beam_size=beam, n_best=beam, max_len=8,
                                                                   early_stopping=False)))] == \
           [h.tokens for h in flat(plain)]


def test_ctc_weight_one_scores_are_ctc_likelihoods():
    dec = small_hybrid().eval()
    g = torch.Generator().manual_seed(3)
    mem = Features(torch.randn(3, 6, 32, generator=g), torch.tensor([6, 4, 5]))
    with torch.no_grad():  # make CTC confident so hypotheses end (with EOS) well before max_len
        dec.ctc.proj.weight.mul_(4.0)
    hyps = dec.decode(mem, DecodingOptions(beam_size=3, n_best=3, max_len=12, ctc_weight=1.0, length_penalty=0.0))
    lp = dec.ctc.log_probs(mem)
    checked = 0
    for b, row in enumerate(hyps):
        for h in row:
            if len(h.tokens) == 12 or not h.tokens:
                continue
            nll = F.ctc_loss(lp[b, : mem.lengths[b], None], torch.tensor([h.tokens]), mem.lengths[b: b + 1],
                             torch.tensor([len(h.tokens)]), reduction="sum")
            assert h.score == pytest.approx(-nll.item(), abs=1e-4)  # GNMT alpha 0: no length normalisation
            checked += 1
    assert checked >= 3


def test_hybrid_learns_copy_in_a_graph():
    torch.manual_seed(0)
    model = ModelSpec(
        encoders={"frames": Node("token_embedding", input="src", vocab_size=12, dim=32)},
        decoders={"text": Node("ctc_attention", source="frames", vocab_size=12, dim=32, heads=2, layers=2,
                               max_len=16, ctc_weight=0.3)},
        task="asr",
    ).build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        out = model(batch(32, g))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.loss.item() < 0.1
    model.eval()
    test = batch(60, torch.Generator().manual_seed(99))
    hyps = model.generate(test, options=DecodingOptions(beam_size=3, max_len=8, ctc_weight=0.3))["text"]
    ref = test["targets"]["text"]
    correct = sum(h.tokens == ref["tokens"][i, : ref["lengths"][i]].tolist() for i, h in enumerate(hyps))
    assert correct >= 57
    # the attention branch drafted by its own CTC hypothesis: greedy's tokens, in fewer passes
    greedy = model.generate(test, options=DecodingOptions(max_len=8))["text"]
    drafted = model.generate(test, options=DecodingOptions(max_len=8, draft="ctc"))["text"]
    assert [h.tokens for h in drafted] == [h.tokens for h in greedy]


def test_ctc_drafts_keep_greedy_tokens_and_need_a_hybrid():
    dec = small_hybrid().eval()
    g = torch.Generator().manual_seed(4)
    mem = Features(torch.randn(6, 10, 32, generator=g), torch.tensor([10, 7, 9, 4, 6, 10]))
    plain = dec.decode(mem, DecodingOptions(max_len=12))
    for active in (None, 2):
        drafted = dec.decode(mem, DecodingOptions(max_len=12, draft="ctc", max_active=active))
        assert [h.tokens for h in drafted] == [h.tokens for h in plain]
    for run in (decode, speculative_decode):
        with pytest.raises(ValueError, match="ctc_attention"):
            run(dec.attention, mem, DecodingOptions(max_len=12, draft="ctc"))
    with pytest.raises(ValueError, match="greedy only"):
        DecodingOptions(draft="ctc", ctc_weight=0.3)
