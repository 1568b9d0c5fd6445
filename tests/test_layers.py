"""FastDropout: the drop rate, the expectation and the gradient of inverted dropout; few_row_linear:
every layout equals F.linear and decoding through it gives the tokens of plain F.linear decoding."""
import pytest
import torch

from zoo.layers import FastDropout


def test_drop_rate_and_expectation_match_quantised_p():
    torch.manual_seed(0)
    drop = FastDropout(0.1)
    y = drop(torch.ones(400_000))
    p = round(0.1 * 256) / 256
    assert abs((y == 0).float().mean().item() - p) < 3e-3
    assert abs(y.mean().item() - 1.0) < 5e-3          # kept units scaled by 1 / (1 - p)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))


def test_every_byte_of_the_random_words_is_uniform():
    torch.manual_seed(1)
    y = FastDropout(0.5)(torch.ones(8 * 50_000)).view(-1, 8)
    rates = (y == 0).float().mean(0)  # byte position within each 64-bit word
    assert torch.all((rates - 0.5).abs() < 0.02), rates


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = FastDropout(0.25)(x)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.75))


def test_eval_mode_and_zero_p_are_identity_and_seeded_masks_repeat():
    x = torch.randn(10, 10)
    assert FastDropout(0.3).eval()(x) is x
    assert FastDropout(0.0)(x) is x
    torch.manual_seed(3)
    a = FastDropout(0.3)(x)
    torch.manual_seed(3)
    assert torch.equal(a, FastDropout(0.3)(x))


@pytest.mark.parametrize("rows", [1, 3, 8, 11, 13])
@pytest.mark.parametrize("shape", [(1536, 384), (384, 1536), (8192, 64)])
def test_few_row_linear_equals_linear_in_every_layout(rows, shape):
    """The decoding-step product matches F.linear (fp32 rounding only), bias or not, for every branch."""
    from zoo.layers import DecodingLinear

    layer = DecodingLinear(shape[1], shape[0])
    x = torch.randn(rows, 1, shape[1])
    with torch.no_grad():
        ref = torch.nn.functional.linear(x, layer.weight, layer.bias)
        torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
        layer.bias = None
        torch.testing.assert_close(layer(x), x @ layer.weight.T, rtol=1e-5, atol=1e-5)


def test_few_row_linear_rebuilds_its_transposed_copy_when_the_weight_changes():
    from zoo.layers import DecodingLinear

    layer = DecodingLinear(16, 64)
    x = torch.randn(1, 16)
    with torch.no_grad():
        first = layer(x)
        layer.weight.mul_(2)  # in-place update (an optimizer step, load_state_dict)
        torch.testing.assert_close(layer(x), 2 * first - layer.bias, rtol=1e-5, atol=1e-5)
    y = layer(x.requires_grad_())  # training takes F.linear and keeps autograd working
    y.sum().backward()
    assert layer.weight.grad is not None and x.grad is not None


def test_large_vocabulary_greedy_and_beam_tokens_equal_the_f_linear_path(monkeypatch):
    """Decoding with the layout-picking projection gives the tokens of plain F.linear decoding."""
    import decoders.transformer_decoder as td
    from decoders.search import DecodingOptions
    from decoders.transformer_decoder import transformer_decoder
    from zoo import layers
    from zoo.contract import Features

    torch.manual_seed(0)
    dec = transformer_decoder(vocab_size=8192, dim=64, heads=4, layers=2, max_len=40).eval()
    mems = [Features(torch.randn(n, 20, 64)) for n in (1, 3)]  # 1, 3, 4 and 12 rows per step
    runs = [(mem, k) for mem in mems for k in (1, 4)]
    with torch.no_grad():
        fast = [dec.decode(mem, DecodingOptions(beam_size=k, max_len=30)) for mem, k in runs]
        def plain_linear(owner, x, w, b=None):
            return torch.nn.functional.linear(x, w, b)

        monkeypatch.setattr(layers, "few_row_linear", plain_linear)
        monkeypatch.setattr(td, "few_row_linear", plain_linear)
        plain = [dec.decode(mem, DecodingOptions(beam_size=k, max_len=30)) for mem, k in runs]
    for a, b in zip(fast, plain):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
