"""TransformerDecoder: cached == uncached decoding, incremental logits == full forward, padding masks,
per-row EOS, multi-source memory, clear errors, and learning to reverse a sequence from memory."""
from __future__ import annotations

import pytest
import torch
from helpers import spread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoders.search import DecodingOptions
from decoders.transformer_decoder import KEYS_LAST_MIN_FRAMES, TransformerDecoder, transformer_decoder
from zoo.contract import Features
from zoo.registry import create_decoder, create_encoder

torch.set_num_threads(1)
V, PAD, BOS, EOS = 11, 0, 1, 2


def random_decoder(**overrides) -> TransformerDecoder:
    """A random untied decoder whose EOS logit follows a position direction, so rows end at varied steps."""
    kw = dict(vocab_size=40, dim=32, heads=4, layers=2, max_len=32, tie_embeddings=False) | overrides
    dec = spread(transformer_decoder(**kw), seed=1)
    with torch.no_grad():
        dec.head.weight[dec.dims.eos_id] = 0.6 * dec.pos[10] / dec.pos[10].norm() * dec.dims.dim ** 0.5
    return dec


def nbest(result):
    """decode() gives one Hypothesis per row when n_best == 1, else a list per row."""
    return [r if isinstance(r, list) else [r] for r in result]


def memory(batch=4, frames=9, dim=32, seed=1, lengths=(9, 5, 7, 3)):
    g = torch.Generator().manual_seed(seed)
    return Features(torch.randn(batch, frames, dim, generator=g), torch.tensor(lengths[:batch]))


@pytest.fixture(scope="module")
def reverser():
    """Token-embedding encoder + decoder trained to output the memory's tokens reversed."""
    torch.manual_seed(0)
    enc = create_encoder("token_embedding", vocab_size=V, dim=32)
    dec = create_decoder("transformer_decoder", vocab_size=V, dim=32, heads=2, layers=2, max_len=16)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    g, losses = torch.Generator().manual_seed(0), []
    for _ in range(220):
        src, lens, tgt = reverse_batch(48, g)
        out = dec(enc(src, lens), {"tokens": tgt, "lengths": lens})
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return enc.eval(), dec.eval(), losses


def reverse_batch(n, g):
    lens = torch.randint(2, 7, (n,), generator=g)
    src, tgt = torch.zeros(n, 6, dtype=torch.long), torch.zeros(n, 6, dtype=torch.long)
    for i, length in enumerate(lens.tolist()):
        src[i, :length] = torch.randint(3, V, (length,), generator=g)
        tgt[i, :length] = src[i, :length].flip(0)
    return src, lens, tgt


def test_learns_to_reverse_from_memory(reverser):
    enc, dec, losses = reverser
    assert sum(losses[-10:]) / 10 < 0.1 * sum(losses[:10]) / 10
    src, lens, tgt = reverse_batch(100, torch.Generator().manual_seed(123))  # held-out rows
    with torch.no_grad():
        hyps = dec.decode(enc(src, lens), DecodingOptions(max_len=10))
    correct = sum(h.tokens == tgt[i, : lens[i]].tolist() for i, h in enumerate(hyps))
    assert correct >= 95


@pytest.mark.parametrize("beam", [1, 2])
def test_per_row_eos_matches_decoding_each_row_alone(reverser, beam):
    enc, dec, _ = reverser
    src, lens, _ = reverse_batch(6, torch.Generator().manual_seed(7))
    opts = DecodingOptions(beam_size=beam, max_len=10, n_best=beam)
    with torch.no_grad():
        mem = enc(src, lens)
        together = nbest(dec.decode(mem, opts))
        alone = [nbest(dec.decode(mem.select(torch.tensor([i])), opts))[0] for i in range(6)]
    for a, b in zip(together, alone):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    assert len({len(h[0].tokens) for h in together}) > 1  # rows did finish at different steps


@pytest.mark.parametrize("beam,early", [(1, True), (3, True), (3, False)])
def test_cached_and_uncached_decoding_agree(beam, early):
    dec = random_decoder()
    mem = memory()
    base = dict(beam_size=beam, max_len=14, early_stopping=early, n_best=beam)
    cached = nbest(dec.decode(mem, DecodingOptions(**base)))
    uncached = nbest(dec.decode(mem, DecodingOptions(**base, use_cache=False)))
    for a, b in zip(cached, uncached):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
    assert len({len(h[0].tokens) for h in cached}) > 1  # some rows ended early


@pytest.mark.parametrize("beam", [1, 3])
def test_fixed_shape_path_agrees(monkeypatch, beam):
    """The compile path (static buffers, masked full-length attention, no row dropping), run eagerly."""
    dec = random_decoder()
    monkeypatch.setattr(dec, "compiled_step", lambda: dec.forward_tokens)
    mem = memory()
    plain = dec.decode(mem, DecodingOptions(beam_size=beam, max_len=14))
    static = dec.decode(mem, DecodingOptions(beam_size=beam, max_len=14, compile=True))
    assert [h.tokens for h in plain] == [h.tokens for h in static]
    assert len({len(h.tokens) for h in plain}) > 1


@pytest.mark.slow
def test_torch_compile_decoding_agrees():
    dec = random_decoder()
    mem = memory()
    plain = dec.decode(mem, DecodingOptions(max_len=12))
    compiled = dec.decode(mem, DecodingOptions(max_len=12, compile=True))
    assert [h.tokens for h in plain] == [h.tokens for h in compiled]


def test_incremental_logits_equal_full_forward():
    dec = spread(transformer_decoder(vocab_size=40, dim=32, heads=4, layers=3, max_len=32))
    mem = memory()
    tokens = torch.randint(0, 40, (4, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = dec.forward_tokens(tokens, dec.memory(mem))
        state = dec.state(mem, max_tokens=7)
        steps = [state.step(tokens[:, :3])]  # a 3-token prefix, then one token at a time
        steps += [state.step(tokens[:, t:t + 1]) for t in range(3, 7)]
    assert torch.allclose(torch.stack(steps, 1), full[:, 2:], atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_keys_last_memory_gives_the_same_logits(bias):
    """CPU decoding stores cross-attention K/V as (B, heads, head_dim, T) and attends by two plain
    products: the same keys/values transposed, the same logits, padded frames still ignored."""
    dec = spread(transformer_decoder(vocab_size=40, dim=32, heads=4, layers=2, max_len=32, bias=bias))
    mem = memory()
    noisy = mem.x.clone()
    for b, n in enumerate(mem.lengths.tolist()):
        noisy[b, n:] = 100.0 * torch.randn_like(noisy[b, n:])
    tokens = torch.randint(0, 40, (4, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain, last = dec.memory(mem), dec.memory(mem, keys_last=True)
        assert last.keys_last and not plain.keys_last
        for a, b in zip(plain.k + plain.v, last.k + last.v):
            assert b.is_contiguous() and torch.allclose(a, b.transpose(-1, -2), atol=1e-6)
        noisy_last = dec.memory(Features(noisy, mem.lengths), keys_last=True)
        assert torch.allclose(dec.forward_tokens(tokens, plain), dec.forward_tokens(tokens, noisy_last), atol=1e-5)
        long = Features(torch.randn(2, KEYS_LAST_MIN_FRAMES, mem.x.shape[-1]))
        assert dec.state(long, max_tokens=5).mem.keys_last  # what decoding a long memory on CPU uses
        assert not dec.state(mem, max_tokens=5).mem.keys_last  # short memories keep SDPA's layout
    assert not dec.state(long, max_tokens=5).mem.keys_last  # so does the training-time forward


def test_both_memory_layouts_decode_the_same_tokens(monkeypatch):
    """Greedy, beam search and continuous-batching greedy read the memory as (head_dim, T) from
    KEYS_LAST_MIN_FRAMES frames on, in SDPA's layout below: the same tokens either way, padded frames ignored."""
    import decoders.transformer_decoder as td

    dec = spread(transformer_decoder(vocab_size=40, dim=32, heads=4, layers=2, max_len=32))
    mem = memory()
    out = {}
    for threshold in (0, 10**9):
        monkeypatch.setattr(td, "KEYS_LAST_MIN_FRAMES", threshold)
        with torch.no_grad():
            assert dec.state(mem, max_tokens=5).mem.keys_last == (threshold == 0)
        out[threshold] = [[h.tokens for h in dec.decode(mem, DecodingOptions(max_len=12, **kw))]
                          for kw in (dict(beam_size=1), dict(beam_size=3), dict(max_active=2))]
    assert out[0] == out[10**9]
    assert out[0][2] == out[0][0]  # continuous batching (memory cut to the active rows' longest) = greedy


def test_padded_frames_are_ignored():
    dec = spread(transformer_decoder(vocab_size=40, dim=32, heads=4, layers=2, max_len=32))
    mem = memory()
    noisy = mem.x.clone()
    for b, n in enumerate(mem.lengths.tolist()):
        noisy[b, n:] = 100.0 * torch.randn_like(noisy[b, n:])
    tokens = torch.randint(0, 40, (4, 5))
    with torch.no_grad():
        a = dec.forward_tokens(tokens, dec.memory(mem))
        b = dec.forward_tokens(tokens, dec.memory(Features(noisy, mem.lengths)))
        c = dec.forward_tokens(tokens, dec.memory(Features(noisy, None)))
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-2)  # without lengths the noise is attended


def test_teacher_forcing_targets_and_loss():
    dec = spread(transformer_decoder(vocab_size=20, dim=16, heads=2, layers=1, max_len=16, bos_id=1, eos_id=2))
    dec.train()
    targets = {"tokens": torch.tensor([[5, 6, 7], [8, 0, 0]]), "lengths": torch.tensor([3, 1])}
    inputs, labels = dec.teacher_forcing(targets)
    assert inputs.tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
    assert labels.tolist() == [[5, 6, 7, 2], [8, 2, -100, -100]]
    mem = memory(batch=2, dim=16, lengths=(9, 4))
    out = dec(mem, targets)
    logp = out.logits.log_softmax(-1)
    picked = [logp[0, t, labels[0, t]] for t in range(4)] + [logp[1, t, labels[1, t]] for t in range(2)]
    assert out.loss.item() == pytest.approx(-torch.stack(picked).mean().item(), rel=1e-5)
    out.loss.backward()
    assert dec.embed.weight.grad is not None


def test_two_sources_concatenate_with_their_masks():
    dec = spread(transformer_decoder(vocab_size=30, dim=32, heads=4, layers=2, max_len=32, sources=2,
                                     memory_dim=24))
    a = Features(torch.randn(2, 6, 24), torch.tensor([6, 3]))
    b = Features(torch.randn(2, 4, 24), torch.tensor([2, 4]))
    hyps = dec.decode([a, b], DecodingOptions(beam_size=2, max_len=8))
    b_noisy = Features(b.x.clone(), b.lengths)
    b_noisy.x[0, 2:] += 50.0  # padding of source 2, row 0
    assert [h.tokens for h in dec.decode([a, b_noisy], DecodingOptions(beam_size=2, max_len=8))] == \
           [h.tokens for h in hyps]
    with pytest.raises(ValueError, match="sources=2"):
        dec.decode(a)


def test_bad_inputs_raise_clear_errors():
    dec = transformer_decoder(vocab_size=20, dim=16, heads=2, layers=1, max_len=8)
    with pytest.raises(ValueError, match="memory_dim"):
        dec.decode(Features(torch.randn(1, 3, 12)))
    with pytest.raises(ValueError, match=r"\[0, 20\)"):
        dec(Features(torch.randn(1, 3, 16)), {"tokens": torch.tensor([[3, -100]]), "lengths": torch.tensor([1])})
    with pytest.raises(ValueError, match="max_len"):
        dec.decode(Features(torch.randn(1, 3, 16)), DecodingOptions(max_len=20))
    with pytest.raises(ValueError, match="divisible"):
        transformer_decoder(vocab_size=20, dim=18, heads=4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        transformer_decoder(vocab_size=20, eos_id=25)


SEARCHES = {  # every decoding path of a TransformerDecoder that takes a padded batch
    "greedy": dict(), "uncached": dict(use_cache=False), "beam 3": dict(beam_size=3),
    "beam 4, n_best 2, GNMT penalty": dict(beam_size=4, n_best=2, length_penalty=0.6),
    "diverse beam 4 in 2 groups": dict(beam_size=4, groups=2, diversity=0.5),
    "continuous greedy, 2 places": dict(max_active=2), "vocab screen": dict(vocab_screen=True),
    "fixed shapes (the compile path, run eagerly)": dict(compile=True),
    "fixed shapes, beam 3": dict(compile=True, beam_size=3),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), search=st.sampled_from(sorted(SEARCHES)), sources=st.sampled_from([1, 2]),
       keys_last=st.booleans(), min_len=st.sampled_from([0, 2]), prefix=st.sampled_from([(), (7,)]))
def test_a_padded_batch_decodes_as_each_row_alone(seed, search, sources, keys_last, min_len, prefix):
    """Rows of a padded batch (their padding filled with loud noise; with two sources each is padded, so a row's
    frames are not one prefix of the concatenated memory) decode as each row alone, unpadded, for every search
    and both memory layouts."""
    import decoders.transformer_decoder as td

    dec = random_decoder(sources=sources)
    g = torch.Generator().manual_seed(seed)
    feats = []
    for i in range(sources):
        frames = 9 - 3 * i
        x, lengths = torch.randn(4, frames, 32, generator=g), torch.randint(1, frames + 1, (4,), generator=g)
        x = x.masked_fill(torch.arange(frames)[None, :, None] >= lengths[:, None, None], 1e3)
        feats.append(Features(x, lengths))
    opts = DecodingOptions(max_len=10, min_len=min_len, prefix=prefix, **SEARCHES[search])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(td, "KEYS_LAST_MIN_FRAMES", 0 if keys_last else 10**9)
        mp.setattr(dec, "compiled_step", lambda: dec.forward_tokens)  # compile=True's path, without compiling
        batch = nbest(dec.decode(feats if sources > 1 else feats[0], opts))
        for row in range(4):
            alone = [Features(f.x[row: row + 1, : int(f.lengths[row])]) for f in feats]
            single = nbest(dec.decode(alone if sources > 1 else alone[0], opts))[0]
            assert [h.tokens for h in batch[row]] == [h.tokens for h in single], (search, row)
            if search != "vocab screen":  # its log-normaliser comes from the int8 logits (tests/test_vocab_screen.py)
                assert [h.score for h in batch[row]] == pytest.approx([h.score for h in single], abs=1e-4)
