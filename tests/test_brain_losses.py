"""Retrieval losses and metrics against hand-computed references."""
import math

import pytest
import torch
import torch.nn.functional as F

from decoders.retrieval import clip_loss, info_nce, mixco_nce, soft_clip_loss
from zoo.metrics_retrieval import rank_candidates, topk_among, two_way_identification


def _loops_soft_clip(p, t, temp):
    """MindEye's soft-CLIP written out element by element."""
    n, total = len(p), 0.0
    for direction in (0, 1):
        for i in range(n):
            logits = [float(p[i] @ t[j] if direction == 0 else p[j] @ t[i]) / temp for j in range(n)]
            soft = [float(t[i] @ t[j]) / temp for j in range(n)]
            lse, slse = math.log(sum(math.exp(v) for v in logits)), math.log(sum(math.exp(v) for v in soft))
            total -= sum(math.exp(soft[j] - slse) * (logits[j] - lse) for j in range(n)) / n
    return total / 2


def test_soft_clip_equals_the_element_wise_reference():
    torch.manual_seed(0)
    p, t = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1), F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    assert soft_clip_loss(p, t, 0.3).item() == pytest.approx(_loops_soft_clip(p, t, 0.3), rel=1e-10)


def test_info_nce_and_mixco_reduce_to_cross_entropy():
    torch.manual_seed(1)
    p, t = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    logits = p @ t.T / 0.1
    ce = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.T, torch.arange(6))) / 2
    assert info_nce(p, t, 0.1).item() == pytest.approx(ce.item(), rel=1e-6)
    # no mixing (betas 1) is plain InfoNCE; a mixed row's label splits between itself and its partner
    perm = torch.tensor([1, 0, 2, 3, 5, 4])
    assert mixco_nce(p, t, 0.1, perm, torch.ones(6)).item() == pytest.approx(ce.item(), rel=1e-6)
    betas = torch.tensor([0.7, 1.0, 1.0, 1.0, 1.0, 1.0])
    probs = torch.eye(6)
    probs[0, 0], probs[0, 1] = 0.7, 0.3
    ref = (-(logits.log_softmax(-1) * probs).sum(-1).mean() - (logits.T.log_softmax(-1) * probs.T).sum(-1).mean()) / 2
    assert mixco_nce(p, t, 0.1, perm, betas).item() == pytest.approx(ref.item(), rel=1e-6)
    # a row mixed with itself keeps its whole label mass on the diagonal
    assert mixco_nce(p, t, 0.1, torch.arange(6), torch.full((6,), 0.4)).item() == pytest.approx(ce.item(), rel=1e-6)


def test_clip_loss_normalises_by_the_candidate_norm_only():
    torch.manual_seed(2)
    est, cand = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    e, c = est.flatten(1), cand.flatten(1)
    scores = torch.stack([torch.stack([(e[i] * c[j]).sum() / c[j].norm() for j in range(4)]) for i in range(4)])
    assert clip_loss(est, cand).item() == pytest.approx(F.cross_entropy(scores, torch.arange(4)).item(), rel=1e-6)
    # scaling a candidate does not change the loss; scaling the estimates does
    assert clip_loss(est, cand * torch.tensor([1.0, 3.0, 0.5, 2.0])[:, None, None]).item() == pytest.approx(
        clip_loss(est, cand).item(), rel=1e-5)
    assert clip_loss(3 * est, cand).item() != pytest.approx(clip_loss(est, cand).item(), rel=1e-3)


def test_identical_embeddings_retrieve_perfectly_and_shuffled_ones_at_chance():
    torch.manual_seed(3)
    x = torch.randn(500, 32)
    r = topk_among(x, x, n=100, ks=(1, 5))
    assert r.top[1] == 1.0 and r.top[5] == 1.0 and r.n == 100
    assert two_way_identification(x, x) == 1.0
    shuffled = topk_among(x, x[torch.randperm(500)], n=100, ks=(1, 5), trials=50)
    assert abs(shuffled.top[1] - 0.01) < 0.01 and abs(shuffled.top[5] - 0.05) < 0.02
    assert abs(two_way_identification(x, x[torch.randperm(500)]) - 0.5) < 0.03


def test_candidate_set_smaller_than_k_is_a_clear_error():
    with pytest.raises(ValueError, match="candidate set has 3 entries but top-5"):
        rank_candidates(torch.randn(8), torch.randn(3, 8), k=5)
    with pytest.raises(ValueError, match="top-10 needs at least 10 candidates"):
        topk_among(torch.randn(20, 4), torch.randn(20, 4), n=5, ks=(1, 10))
    with pytest.raises(ValueError, match="NaN"):
        topk_among(torch.full((4, 2), float("nan")), torch.randn(4, 2), n=4, ks=(1,))
    idx, scores = rank_candidates(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 1.0], [2.0, 0.1], [-1.0, 0.0]]), k=2)
    assert idx.tolist() == [1, 0] and scores[0] > scores[1]
