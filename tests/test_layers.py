"""FastDropout: the drop rate, the expectation and the gradient of inverted dropout."""
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
