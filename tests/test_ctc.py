"""CTC head: loss equals torch's, greedy and prefix beam search against brute force, LM hook, alignment,
and clear errors for targets CTC cannot align."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from decoders.ctc import CTCDecodingOptions, CTCHead, prefix_beam_search
from zoo.contract import Features
from zoo.registry import create_decoder



def head_with_logits(logits: torch.Tensor, lengths=None, shift=None) -> tuple[CTCHead, Features]:
    """A head whose projection is the identity, so memory.x are the logits."""
    v = logits.shape[-1]
    head = CTCHead(v, v, frame_shift_s=shift)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(v))
        head.proj.bias.zero_()
    return head, Features(logits, lengths)


def collapse(path, blank=0) -> tuple[int, ...]:
    out, prev = [], None
    for s in path:
        if s != blank and s != prev:
            out.append(s)
        prev = s
    return tuple(out)


def brute_force(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """log P(labels) for every label sequence: sum over all V**T alignments."""
    t, v = log_probs.shape
    scores: dict[tuple[int, ...], list[float]] = {}
    for path in itertools.product(range(v), repeat=t):
        lp = sum(float(log_probs[i, s]) for i, s in enumerate(path))
        scores.setdefault(collapse(path), []).append(lp)
    return {k: float(torch.logsumexp(torch.tensor(v, dtype=torch.float64), 0)) for k, v in scores.items()}


def test_loss_equals_torch_ctc_loss():
    torch.manual_seed(0)
    head = create_decoder("ctc", in_dim=16, vocab_size=7)
    x = torch.randn(3, 12, 16, requires_grad=True)
    memory = Features(x, torch.tensor([12, 9, 5]))
    targets = dict(tokens=torch.tensor([[1, 2, 2, 3], [4, 5, 0, 0], [6, 0, 0, 0]]),
                   lengths=torch.tensor([4, 2, 1]))
    out = head(memory, targets)
    lp = head.proj(x).log_softmax(-1)
    ref = F.ctc_loss(lp.transpose(0, 1), targets["tokens"], memory.lengths, targets["lengths"], blank=0)
    torch.testing.assert_close(out.loss, ref)
    out.loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    head_sum = CTCHead(16, 7, reduction="sum")
    head_sum.load_state_dict(head.state_dict())
    ref_sum = F.ctc_loss(lp.transpose(0, 1), targets["tokens"], memory.lengths, targets["lengths"],
                         reduction="sum")
    torch.testing.assert_close(head_sum(memory, targets).loss, ref_sum)


def test_greedy_tokens_and_timestamps_on_a_known_path():
    path = [[0, 1, 1, 0, 2, 2, 2, 0, 1, 3], [3, 3, 0, 3, 1, 0, 0, 0, 0, 0]]
    logits = F.one_hot(torch.tensor(path), 4).float() * 10
    head, memory = head_with_logits(logits, torch.tensor([10, 5]), shift=0.04)
    a, b = head.decode(memory)
    assert a.tokens == [1, 2, 1, 3] and b.tokens == [3, 3, 1]  # row b: padded frames 5.. are ignored
    assert a.timestamps == [(0.04, 0.12), (0.16, 0.28), (0.32, 0.36), (0.36, 0.4)]
    assert b.timestamps == [(0.0, 0.08), (0.12, 0.16), (0.16, 0.2)]
    best = logits.log_softmax(-1).max(-1).values
    assert a.score == pytest.approx(float(best[0].sum()), abs=1e-5)
    assert b.score == pytest.approx(float(best[1, :5].sum()), abs=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_prefix_beam_search_equals_brute_force(seed):
    torch.manual_seed(seed)
    lp = (torch.randn(5, 4) * 1.5).log_softmax(-1)
    truth = brute_force(lp)
    found = prefix_beam_search(lp, beam_size=10_000, prune_top_k=None, prune_threshold=None)
    assert len(found) == len(truth)  # every label sequence with non-zero probability
    best = max(truth, key=truth.get)
    assert found[0][0] == best
    for tokens, score, ctc_score in found:
        assert score == pytest.approx(truth[tokens], abs=1e-5)
        assert ctc_score == pytest.approx(truth[tokens], abs=1e-5)
    assert math.isclose(float(torch.tensor([s for _, s, _ in found]).logsumexp(0)), 0.0, abs_tol=1e-5)


def test_beam_one_equals_greedy_on_peaky_outputs():
    torch.manual_seed(1)
    for _ in range(10):
        path = torch.randint(0, 6, (2, 30))
        logits = F.one_hot(path, 6).float() * 6 + torch.randn(2, 30, 6) * 0.5
        head, memory = head_with_logits(logits, torch.tensor([30, 21]))
        greedy = head.decode(memory, CTCDecodingOptions(beam_size=1))
        lp = head.log_probs(memory)
        for b, n in enumerate([30, 21]):
            beam = prefix_beam_search(lp[b, :n], beam_size=1, prune_top_k=None, prune_threshold=None)
            assert list(beam[0][0]) == greedy[b].tokens


def test_beam_search_sums_alignments_where_greedy_does_not():
    # best path is "blank, blank" (0.36) but P("1") = 0.4*0.4*... summed over 3 alignments beats it
    probs = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]]).clamp_min(1e-9)
    head, memory = head_with_logits(probs.log()[None])
    assert head.decode(memory)[0].tokens == []
    beam = head.decode(memory, CTCDecodingOptions(beam_size=4, prune_threshold=None))[0]
    assert beam.tokens == [1] and beam.score == pytest.approx(math.log(0.64), abs=1e-5)


class PreferTwo:
    def __init__(self):
        self.calls = 0

    def score(self, prefix, token):
        self.calls += 1
        return math.log(0.9) if token == 2 else math.log(0.05)


def test_lm_hook_changes_the_ranking():
    # CTC alone slightly prefers token 1 over token 2; an LM preferring 2 flips it, by weight
    probs = torch.tensor([[0.1, 0.5, 0.4]])
    head, memory = head_with_logits(probs.log()[None])
    plain = head.decode(memory, CTCDecodingOptions(beam_size=3))[0]
    assert plain.tokens == [1]
    lm = PreferTwo()
    fused = head.decode(memory, CTCDecodingOptions(beam_size=3, lm=lm, lm_weight=1.0))[0]
    assert fused.tokens == [2] and lm.calls > 0
    assert fused.score == pytest.approx(math.log(0.4) + math.log(0.9), abs=1e-5)
    weak = head.decode(memory, CTCDecodingOptions(beam_size=3, lm=lm, lm_weight=0.05))[0]
    assert weak.tokens == [1]  # a small weight does not overturn the acoustic evidence
    as_fn = head.decode(memory, CTCDecodingOptions(beam_size=3, lm=lambda seq: lm.score(seq[:-1], seq[-1]),
                                                   lm_weight=1.0))[0]
    assert as_fn.tokens == [2] and as_fn.score == pytest.approx(fused.score)


def test_forced_alignment_spans_are_monotone_and_cover_the_tokens():
    torch.manual_seed(0)
    logits = torch.randn(3, 20, 6) * 2
    head, memory = head_with_logits(logits, torch.tensor([20, 14, 9]), shift=0.04)
    tokens = [[1, 2, 2, 5], [3, 3, 3], [4]]
    spans = head.align(memory, tokens)
    for row, toks, n in zip(spans, tokens, [20, 14, 9]):
        assert [s.token for s in row] == toks
        assert all(0 <= s.start < s.end <= n for s in row)
        assert all(a.end <= b.start for a, b in itertools.pairwise(row))
        # a blank separates repeated tokens
        assert all(a.end < b.start for a, b in itertools.pairwise(row) if a.token == b.token)
    # peaky outputs along a known path: the spans are its runs
    path = torch.tensor([[0, 1, 1, 0, 2, 0, 0, 2, 2, 0]])
    head, memory = head_with_logits(F.one_hot(path, 3).float() * 8)
    [[a, b, c]] = head.align(memory, torch.tensor([[1, 2, 2]]))
    assert (a.start, a.end, b.start, b.end, c.start, c.end) == (1, 3, 4, 5, 7, 9)


def test_beam_timestamps_come_from_forced_alignment():
    path = torch.tensor([[0, 1, 1, 0, 2, 0, 0, 3, 3, 0]])
    head, memory = head_with_logits(F.one_hot(path, 4).float() * 8, shift=0.02)
    [hyp] = head.decode(memory, CTCDecodingOptions(beam_size=4))
    assert hyp.tokens == [1, 2, 3] and hyp.timestamps == [(0.02, 0.06), (0.08, 0.1), (0.14, 0.18)]


def test_targets_longer_than_frames_name_the_utterance():
    head = CTCHead(8, 5)
    memory = Features(torch.randn(2, 6, 8), torch.tensor([6, 4]))
    ok = dict(tokens=torch.tensor([[1, 2, 3], [1, 1, 0]]), lengths=torch.tensor([3, 2]))
    head(memory, ok)  # 2 tokens + 1 repeat fit 4 frames
    bad = dict(tokens=torch.tensor([[1, 2, 3, 4, 1, 2, 3], [1, 1, 1, 0, 0, 0, 0]]),
               lengths=torch.tensor([7, 3]),
               ids=["news-001", "news-002"])
    with pytest.raises(ValueError, match=r"news-001.*news-002.*subsampling") as err:
        head(memory, bad)
    assert "7 tokens" in str(err.value) and "2 repeats" in str(err.value)
    del bad["ids"]
    with pytest.raises(ValueError, match="row 0"):
        head(memory, bad)
    with pytest.raises(ValueError, match="row 1"):
        head.align(memory, [[1, 2], [2, 2, 2]])
    with pytest.raises(ValueError, match="blank id 0"):
        head(memory, dict(tokens=torch.tensor([[1, 0, 2], [1, 2, 3]]), lengths=torch.tensor([3, 3])))


def test_decode_options_n_best_and_tokenizer():
    class Chars:
        def decode(self, ids):
            return "".join(" abcdefg"[i] for i in ids)

    torch.manual_seed(0)
    head, memory = head_with_logits(torch.randn(2, 8, 5) * 3, torch.tensor([8, 6]))
    rows = head.decode(memory, CTCDecodingOptions(beam_size=4, n_best=3, tokenizer=Chars()))
    assert len(rows) == 2 and all(len(r) == 3 for r in rows)
    for r in rows:
        assert [h.score for h in r] == sorted((h.score for h in r), reverse=True)
        assert all(h.text == Chars().decode(h.tokens) for h in r)
        assert r[0].timestamps is None  # no frame shift known
    with pytest.raises(ValueError, match="n_best"):
        CTCDecodingOptions(beam_size=2, n_best=3)


def test_intermediate_ctc_mixes_the_final_and_intermediate_losses_with_one_projection():
    torch.manual_seed(0)
    x, mid = torch.randn(2, 12, 16), torch.randn(2, 12, 16)
    memory = Features(x, torch.tensor([12, 9]), intermediates=[mid])
    targets = {"tokens": torch.tensor([[1, 2, 3], [4, 4, 0]]), "lengths": torch.tensor([3, 2])}
    head = CTCHead(16, 7, inter_weight=0.3)

    def ctc(h):
        lp = head.proj(h).log_softmax(-1)
        return F.ctc_loss(lp.transpose(0, 1), targets["tokens"], memory.lengths, targets["lengths"])

    torch.testing.assert_close(head(memory, targets).loss, 0.7 * ctc(x) + 0.3 * ctc(mid))
    with pytest.raises(ValueError, match="intermediate_layers"):
        head(Features(x, memory.lengths), targets)
    with pytest.raises(ValueError, match="inter_weight"):
        CTCHead(16, 7, inter_weight=1.0)


def test_intermediate_ctc_preset_trains_through_the_graph():
    from recipes.asr_subtitle.presets import asr_spec
    from zoo.graph import ZooModel

    torch.manual_seed(0)
    model = ZooModel(**asr_spec("cascaded", "tiny", 12, 12, inter_ctc=0.3).to_config())
    plain = ZooModel(**asr_spec("cascaded", "tiny", 12, 12).to_config())
    plain.load_state_dict(model.state_dict())  # strict: InterCTC adds no weights
    assert model.encoders["acoustic"].stack.intermediate_layers == [3]
    from recipes.asr_subtitle.data import collate

    batch = collate([{"id": "a", "audio": torch.randn(16000) * 0.1, "verbatim": torch.tensor([4, 5, 6])},
                     {"id": "b", "audio": torch.randn(12000) * 0.1, "verbatim": torch.tensor([7, 8])}])
    model.train(), plain.train()
    torch.manual_seed(1)
    loss = model(batch).losses["verbatim"]
    torch.manual_seed(1)
    assert not torch.isclose(loss, plain(batch).losses["verbatim"])  # the intermediate layer is scored too
    loss.backward()
    assert all(p.grad is not None for p in model.encoders["acoustic"].stack.blocks[0].parameters())
