"""SI-SNR, pairwise SI-SNR, PIT (exhaustive and Hungarian) and MixIT against references and invariants."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.functional.audio import permutation_invariant_training, scale_invariant_signal_noise_ratio

from zoo.losses import (
    mixit,
    pairwise_si_snr,
    pit_from_matrix,
    pit_si_snr,
    reorder,
    si_snr,
    thresholded_snr,
)


def test_si_snr_equals_torchmetrics():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(5, 3, 800, generator=g)
    est = 0.7 * ref + 0.3 * torch.randn(5, 3, 800, generator=g) + 0.2  # offset: zero-mean matters
    torch.testing.assert_close(
        si_snr(est, ref), scale_invariant_signal_noise_ratio(est, ref), atol=1e-4, rtol=0
    )


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-2, 1e2), seed=st.integers(0, 10_000))
def test_si_snr_is_scale_invariant(scale, seed):
    g = torch.Generator().manual_seed(seed)
    ref, noise = (
        torch.randn(2, 400, generator=g, dtype=torch.float64),
        torch.randn(2, 400, generator=g, dtype=torch.float64),
    )
    est = ref + 0.5 * noise
    base = si_snr(est, ref)
    torch.testing.assert_close(si_snr(scale * est, ref), base)
    torch.testing.assert_close(si_snr(est, scale * ref), base)
    torch.testing.assert_close(si_snr(est + 3.0, ref - 1.0), base)  # zero-mean: offsets do not count


def test_si_snr_lengths_ignore_padding():
    g = torch.Generator().manual_seed(1)
    ref, est = torch.randn(2, 2, 300, generator=g), torch.randn(2, 2, 300, generator=g)
    lengths = torch.tensor([300, 170])
    masked = si_snr(est, ref, lengths)
    torch.testing.assert_close(masked[1], si_snr(est[1, :, :170], ref[1, :, :170]))
    torch.testing.assert_close(masked[0], si_snr(est[0], ref[0]))
    pw = pairwise_si_snr(est, ref, lengths)
    torch.testing.assert_close(pw[1, 0, 1], si_snr(est[1, 1, :170], ref[1, 0, :170]))


def test_pairwise_matrix_layout():
    g = torch.Generator().manual_seed(2)
    ref, est = torch.randn(3, 4, 200, generator=g), torch.randn(3, 4, 200, generator=g)
    pw = pairwise_si_snr(est, ref)
    for i, j in itertools.product(range(4), range(4)):
        torch.testing.assert_close(pw[:, i, j], si_snr(est[:, j], ref[:, i]))


@settings(max_examples=30, deadline=None)
@given(n_src=st.integers(2, 4), seed=st.integers(0, 10_000), data=st.data())
def test_pit_invariant_to_reference_order(n_src, seed, data):
    """Shuffling the references changes neither the loss nor the matched pairs (4 sources: Hungarian)."""
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(3, n_src, 256, generator=g, dtype=torch.float64)
    est = ref[:, torch.randperm(n_src, generator=g)] + 0.8 * torch.randn(
        3, n_src, 256, generator=g, dtype=torch.float64
    )
    sigma = torch.tensor(data.draw(st.permutations(range(n_src))))
    a, b = pit_si_snr(est, ref), pit_si_snr(est, ref[:, sigma])
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(a.metric, b.metric)
    torch.testing.assert_close(reorder(est, b.perm), reorder(est, a.perm)[:, sigma])


@pytest.mark.parametrize("n_src", [2, 3, 4, 5])
def test_pit_equals_torchmetrics(n_src):
    g = torch.Generator().manual_seed(n_src)
    ref = torch.randn(6, n_src, 300, generator=g)
    est = ref[:, torch.randperm(n_src, generator=g)] + torch.randn(6, n_src, 300, generator=g)
    ours = pit_si_snr(est, ref)
    metric, perm = permutation_invariant_training(
        est, ref, scale_invariant_signal_noise_ratio, "speaker-wise", "max"
    )
    torch.testing.assert_close(ours.metric, metric, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.loss, -metric.mean(), atol=1e-4, rtol=0)
    assert torch.equal(ours.perm.cpu(), perm.cpu())


@pytest.mark.parametrize("n_src", [4, 5, 6])
def test_hungarian_equals_exhaustive(n_src):
    metric = torch.randn(16, n_src, n_src, generator=torch.Generator().manual_seed(n_src))
    for maximize in (True, False):
        best_h, perm_h = pit_from_matrix(metric, maximize, "hungarian")
        best_e, perm_e = pit_from_matrix(metric, maximize, "exhaustive")
        torch.testing.assert_close(best_h, best_e)
        assert torch.equal(perm_h, perm_e)


def test_pit_recovers_known_permutation_and_gradients_flow():
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(2, 4, 500, generator=g)
    order = torch.tensor([2, 0, 3, 1])
    est = (ref[:, order] + 0.05 * torch.randn(2, 4, 500, generator=g)).requires_grad_()
    out = pit_si_snr(est, ref)  # 4 sources: the Hungarian path
    assert torch.equal(out.perm, torch.argsort(order).expand(2, 4))
    out.loss.backward()
    assert est.grad is not None and torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0


def test_mixit_finds_the_true_remix():
    g = torch.Generator().manual_seed(4)
    sources = torch.randn(3, 4, 400, generator=g)  # mixture 0 = s0 + s1, mixture 1 = s2 + s3
    mixtures = torch.stack([sources[:, :2].sum(1), sources[:, 2:].sum(1)], 1)
    order = torch.tensor([3, 0, 2, 1])
    out = mixit(sources[:, order], mixtures)
    torch.testing.assert_close(out.remixed, mixtures)
    torch.testing.assert_close(out.loss, torch.tensor(-60.0), atol=1e-3, rtol=0)  # 2 mixtures x 30 dB ceiling
    expected = torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]], dtype=out.assignment.dtype)
    assert torch.equal(out.assignment, expected.expand(3, 2, 4))


def test_mixit_is_the_minimum_over_all_assignments():
    g = torch.Generator().manual_seed(5)
    est, mixtures = torch.randn(2, 3, 300, generator=g), torch.randn(2, 2, 300, generator=g)
    out = mixit(est, mixtures)
    for choice in itertools.product(range(2), repeat=3):
        a = torch.zeros(2, 3)
        a[list(choice), range(3)] = 1
        loss = -thresholded_snr(torch.einsum("mc,bct->bmt", a, est), mixtures).sum(-1).mean()
        assert out.loss <= loss + 1e-5


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="same number of sources"):
        pit_si_snr(torch.randn(2, 3, 10), torch.randn(2, 2, 10))
    with pytest.raises(ValueError, match="trim or pad"):
        si_snr(torch.randn(2, 10), torch.randn(2, 12))
    with pytest.raises(ValueError, match="at least as many estimates"):
        mixit(torch.randn(1, 1, 10), torch.randn(1, 2, 10))
    with pytest.raises(ValueError, match="one per row"):
        si_snr(torch.randn(2, 10), torch.randn(2, 10), lengths=torch.tensor([3]))
