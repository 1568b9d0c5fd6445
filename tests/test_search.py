"""Search strategies: batched beam search equals a plain per-utterance reference, beam 1 equals greedy,
scores mean what the docs say, suppression / min_len / sampling / diverse groups behave, bad options
fail clearly."""
from __future__ import annotations

import pytest
import torch
from helpers import spread

from decoders.search import BeamSearch, DecodingOptions, GreedySearch, TokenFilter, length_norm
from decoders.transformer_decoder import TransformerDecoder, transformer_decoder
from zoo.contract import Features

torch.set_num_threads(1)


def random_decoder(seed: int = 1, vocab: int = 40) -> TransformerDecoder:
    """Well-spread random weights; the EOS logit follows a position direction so rows end at varied steps."""
    dec = spread(transformer_decoder(vocab_size=vocab, dim=32, heads=4, layers=2, max_len=32, tie_embeddings=False),
                 seed)
    with torch.no_grad():
        dec.head.weight[dec.dims.eos_id] = 0.6 * dec.pos[10] / dec.pos[10].norm() * dec.dims.dim ** 0.5
    return dec


def memory(seed: int = 1) -> Features:
    g = torch.Generator().manual_seed(seed)
    return Features(torch.randn(4, 9, 32, generator=g), torch.tensor([9, 5, 7, 3]))


def as_lists(result):
    return [r if isinstance(r, list) else [r] for r in result]


@torch.no_grad()
def reference_beam(dec, mem: Features, k: int, max_new: int, penalty, early: bool):
    """Textbook beam search on one utterance, recomputing every prefix from scratch (no cache, no batching)."""
    bos, eos, vocab = dec.dims.bos_id, dec.dims.eos_id, dec.dims.vocab_size
    running, finished = [([], 0.0)], []
    for t in range(max_new):
        last = t == max_new - 1
        cands = []
        for j, (toks, score) in enumerate(running):
            lp = dec.forward_tokens(torch.tensor([[bos, *toks]]), dec.memory(mem))[0, -1].float().log_softmax(-1)
            cands += [(score + lp[v].item(), j, v) for v in range(vocab)]
        top = sorted(cands, key=lambda c: -c[0])[: 2 * k]
        for score, j, v in top[:k]:
            if v == eos or last:
                finished.append((score / length_norm(t + 1, penalty), running[j][0] + ([] if v == eos else [v])))
        finished = sorted(finished, key=lambda h: -h[0])[:k]
        if last:
            break
        running = [(running[j][0] + [v], score) for score, j, v in top if v != eos][:k]
        if len(finished) >= k and (early or running[0][1] / length_norm(t + 1, penalty) <= finished[-1][0]):
            break
    return finished


@pytest.mark.parametrize("k,early,penalty", [(3, True, None), (3, False, None), (4, False, 0.6), (2, True, 1.0)])
def test_batched_beam_search_equals_reference(k, early, penalty):
    dec, mem = random_decoder(), memory()
    opts = DecodingOptions(beam_size=k, max_len=10, early_stopping=early, length_penalty=penalty, n_best=k)
    ours = as_lists(dec.decode(mem, opts))
    for b in range(4):
        ref = reference_beam(dec, mem.select(torch.tensor([b])), k, 10, penalty, early)
        assert [h.tokens for h in ours[b]] == [tokens for _, tokens in ref]
        assert [h.score for h in ours[b]] == pytest.approx([s for s, _ in ref], abs=1e-4)
    assert len({len(h[0].tokens) for h in ours}) > 1


def test_beam_size_one_equals_greedy():
    dec, mem = random_decoder(), memory()
    greedy = dec.decode(mem, DecodingOptions(max_len=12))
    prefix = torch.full((4, 1), dec.dims.bos_id)
    flt = TokenFilter(DecodingOptions(), dec.dims.eos_id, dec.dims.vocab_size, "cpu")
    with torch.no_grad():  # decode() picks GreedySearch at k = 1; run BeamSearch at k = 1 explicitly
        beam = BeamSearch(DecodingOptions(max_len=12), dec.dims.eos_id, flt).run(dec.state(mem, 13), prefix, 12)
        again = GreedySearch(DecodingOptions(max_len=12), dec.dims.eos_id, flt).run(dec.state(mem, 13), prefix, 12)
    assert [h.tokens for h in greedy] == [h[0].tokens for h in beam] == [h[0].tokens for h in again]
    assert [h.score for h in greedy] == pytest.approx([h[0].score for h in beam], abs=1e-5)
    assert len({len(h.tokens) for h in greedy}) > 1


@pytest.mark.parametrize("penalty", [None, 0.8])
def test_scores_are_length_normalised_log_probs(penalty):
    dec, mem = random_decoder(), memory()
    max_len = 10
    hyps = as_lists(dec.decode(mem, DecodingOptions(beam_size=3, n_best=3, max_len=max_len, length_penalty=penalty)))
    eos = dec.dims.eos_id
    with torch.no_grad():
        for b, row in enumerate(hyps):
            scores = [h.score for h in row]
            assert scores == sorted(scores, reverse=True)
            assert len({tuple(h.tokens) for h in row}) == 3
            for h in row:
                seq = h.tokens + ([eos] if len(h.tokens) < max_len else [])
                inp = torch.tensor([[dec.dims.bos_id, *seq[:-1]]])
                lp = dec.forward_tokens(inp, dec.memory(mem.select(torch.tensor([b]))))[0].log_softmax(-1)
                total = lp[torch.arange(len(seq)), torch.tensor(seq)].sum().item()
                assert h.score == pytest.approx(total / length_norm(len(seq), penalty), abs=1e-4)


def test_suppression_and_min_len():
    dec, mem = random_decoder(), memory()
    free = as_lists(dec.decode(mem, DecodingOptions(beam_size=2, n_best=2, max_len=12)))
    common = max({t for row in free for h in row for t in h.tokens}, key=lambda t: sum(
        h.tokens.count(t) for row in free for h in row))
    firsts = {h.tokens[0] for row in free for h in row if h.tokens}
    opts = DecodingOptions(beam_size=2, n_best=2, max_len=12, suppress_tokens=(common,),
                           suppress_at_start=tuple(firsts), min_len=5)
    for row in as_lists(dec.decode(mem, opts)):
        for h in row:
            assert common not in h.tokens and h.tokens[0] not in firsts and len(h.tokens) >= 5
    assert min(len(h.tokens) for row in free for h in row) < 5  # min_len changed something


def test_sampling():
    dec, mem = random_decoder(), memory()
    greedy = [h.tokens for h in dec.decode(mem, DecodingOptions(max_len=12))]
    cold = [h.tokens for h in dec.decode(mem, DecodingOptions(max_len=12, temperature=1e-4, seed=0))]
    hot = [[h.tokens for h in dec.decode(mem, DecodingOptions(max_len=12, temperature=1.5, seed=s))] for s in (3, 3, 4)]
    assert cold == greedy
    assert hot[0] == hot[1] and hot[0] != hot[2] and hot[0] != greedy


def test_diverse_beam_search_groups():
    dec, mem = random_decoder(), memory()
    greedy = [h.tokens for h in dec.decode(mem, DecodingOptions(max_len=10))]
    plain = as_lists(dec.decode(mem, DecodingOptions(beam_size=2, n_best=2, max_len=10)))
    diverse = as_lists(dec.decode(mem, DecodingOptions(beam_size=2, n_best=2, max_len=10, groups=2,
                                                       diversity=1e3)))
    first = lambda h: (h.tokens + [dec.dims.eos_id])[0]
    for b, row in enumerate(diverse):
        assert greedy[b] in [h.tokens for h in row]  # group 1 (one beam, no penalty) is greedy search
        assert first(row[0]) != first(row[1])  # group 2 was pushed off group 1's first choice
    assert any(first(row[0]) == first(row[1]) for row in plain)  # plain beams do share it


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="n_best"):
        DecodingOptions(beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="temperature"):
        DecodingOptions(beam_size=2, temperature=0.5)
    with pytest.raises(ValueError, match="divide"):
        DecodingOptions(beam_size=3, groups=2, diversity=1.0)
    with pytest.raises(ValueError, match="diversity > 0"):
        DecodingOptions(beam_size=4, groups=2)
    with pytest.raises(ValueError, match="propose"):
        DecodingOptions(draft=object())
    dec, mem = random_decoder(), memory()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        dec.decode(mem, DecodingOptions(suppress_tokens=(99,)))
    with pytest.raises(ValueError, match="ctc_attention"):
        dec.decode(mem, DecodingOptions(ctc_weight=0.3))
    with pytest.raises(TypeError, match="DecodingOptions"):
        dec.decode(mem, {"beam_size": 2})
