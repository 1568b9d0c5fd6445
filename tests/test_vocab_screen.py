"""The int8 vocabulary screen picks the fp32 argmax exactly (decoders.vocab_screen)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoders.search import DecodingOptions
from decoders.transformer_decoder import transformer_decoder
from decoders.vocab_screen import VocabScreen
from zoo.contract import Features

pytestmark = pytest.mark.skipif("fbgemm" not in torch.backends.quantized.supported_engines,
                                reason="the screen needs fbgemm's int8 product (x86 builds of torch)")


def near_tie_problem(seed: int, vocab: int, dim: int, rows: int, ties: int, gap: float, scale: float):
    """Weights and hidden states whose top logits are ``ties`` near-copies ``gap`` apart."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(vocab, dim, generator=g) * scale / dim ** 0.5
    h = torch.nn.functional.layer_norm(torch.randn(rows, dim, generator=g), (dim,))
    top = torch.randperm(vocab, generator=g)[:ties]
    for j, v in enumerate(top):  # rows aligned with h[0], each a hair below the last
        w[v] = h[0] / h[0].norm() * scale * (1 - gap * j) + 1e-3 * torch.randn(dim, generator=g) / dim ** 0.5
    return w, h


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**16), vocab=st.integers(2, 3000), dim=st.integers(2, 96), rows=st.integers(1, 9),
       ties=st.integers(1, 6), gap=st.sampled_from([0.0, 1e-6, 1e-3, 1e-2, 0.1]),
       scale=st.sampled_from([0.05, 1.0, 30.0]))
def test_bound_holds_and_the_argmax_is_the_fp32_argmax(seed, vocab, dim, rows, ties, gap, scale):
    ties = min(ties, vocab)
    w, h = near_tie_problem(seed, vocab, dim, rows, ties, gap, scale)
    screen = VocabScreen.build(w)
    assert screen is not None and screen.exact  # fbgemm's product matched float64 at construction
    approx, bound = screen.approx(h)
    exact = h.double() @ w.double().T
    assert ((approx.double() - exact).abs() <= bound.double()[:, None]).all()  # the proven bound holds
    token, logit = screen.argmax(h, approx, bound)
    full = h @ w.T  # fp32, as the default decoding path computes it
    best = full.max(1).values
    # the chosen token is an fp32 maximum (up to the summation order of fp32 dot products) ...
    assert torch.allclose(full.gather(1, token[:, None]).squeeze(1), best, rtol=1e-5, atol=1e-5 * scale)
    assert torch.allclose(logit, best, rtol=1e-5, atol=1e-5 * scale)
    # ... and where the maximum is unique beyond rounding it is exactly torch's argmax
    second = exact.topk(min(2, vocab), 1).values[:, -1]
    clear = (exact.max(1).values - second) > 1e-4 * (1 + exact.abs().max(1).values)
    assert torch.equal(token[clear], full.argmax(1)[clear])


def test_exact_ties_take_the_lowest_id_and_suppressed_tokens_are_never_chosen():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(500, 16, generator=g) / 4
    u = torch.randn(16, generator=g)
    w[[7, 40, 123, 300]] = u / u.norm() * 3  # four identical longest rows: equal top logits
    screen = VocabScreen(w, candidates=1)  # force the 32x round
    h = u[None]
    approx, bound = screen.approx(h)
    token, _ = screen.argmax(h, approx.clone(), bound)
    assert token.tolist() == [7]
    approx[:, [7, 40]] = float("-inf")  # suppressed
    token, _ = screen.argmax(h, approx, bound)
    assert token.tolist() == [123]
    tied = torch.randperm(500, generator=g)[:40]  # more ties than the 32 candidates: the full fp32 product
    w[tied] = u / u.norm() * 3
    screen = VocabScreen(w, candidates=1)
    approx, bound = screen.approx(h)
    token, logit = screen.argmax(h, approx, bound)
    lowest = min(int(tied.min()), 7)  # rows 7, 40, 123, 300 still hold the same vector
    assert token.tolist() == [lowest] and torch.allclose(logit, (w @ u).max())


def test_greedy_with_the_screen_gives_the_same_tokens_and_close_scores():
    torch.manual_seed(0)
    dec = transformer_decoder(6000, dim=64, heads=4, layers=2, memory_dim=48).eval()
    with torch.no_grad():  # spread logits (the default init is nearly uniform): a real argmax each step
        dec.embed.weight.mul_(8)
    memory = Features(torch.randn(5, 30, 48), torch.tensor([30, 12, 25, 30, 7]))
    plain = DecodingOptions(max_len=20, suppress_tokens=(5, 9), suppress_at_start=(dec.dims.eos_id,))
    screened = DecodingOptions(max_len=20, suppress_tokens=(5, 9), suppress_at_start=(dec.dims.eos_id,),
                               vocab_screen=True)
    want, got = dec.decode(memory, plain), dec.decode(memory, screened)
    assert [h.tokens for h in got] == [h.tokens for h in want]
    assert any(len(h.tokens) > 3 for h in want)
    for a, b in zip(got, want):  # only the log-normaliser comes from int8 logits
        assert abs(a.score - b.score) < 0.05


def test_screen_is_declined_where_it_cannot_help_and_options_are_checked():
    assert VocabScreen.build(torch.randn(100, 8, dtype=torch.float64)) is None
    assert VocabScreen.build(torch.randn(100, 1)) is None
    with pytest.raises(ValueError, match="vocab_screen speeds up plain greedy"):
        DecodingOptions(beam_size=2, vocab_screen=True)
    with pytest.raises(ValueError, match="vocab_screen speeds up plain greedy"):
        DecodingOptions(temperature=0.5, vocab_screen=True)


def test_screen_falls_back_with_a_warning_when_int8_tensors_are_gone(monkeypatch):
    """torch deprecates quantized tensors: once they are removed, decoding warns and keeps fp32 logits."""
    def removed(*args, **kwargs):
        raise RuntimeError("quantize_per_channel was removed")

    monkeypatch.setattr(torch, "quantize_per_channel", removed)
    with pytest.warns(UserWarning, match="vocab_screen disabled"):
        assert VocabScreen.build(torch.randn(100, 8)) is None
    dec = transformer_decoder(300, dim=16, heads=2, layers=1).eval()
    memory = Features(torch.randn(2, 5, 16))
    with pytest.warns(UserWarning, match="vocab_screen disabled"):
        got = dec.decode(memory, DecodingOptions(max_len=6, vocab_screen=True))
    assert [h.tokens for h in got] == [h.tokens for h in dec.decode(memory, DecodingOptions(max_len=6))]
