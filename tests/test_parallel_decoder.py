"""Mask-Predict decoder: learns a toy task as a graph head (held-out accuracy), decodes in fewer forward
passes than the sequence length, its masking follows the paper, bad input fails clearly."""
from __future__ import annotations

import pytest
import torch

from decoders.parallel import MaskPredictOptions, mask_predict_decoder
from zoo.contract import Features
from zoo.graph import ModelSpec, Node

VOCAB = 16


def reverse_batch(g: torch.Generator, batch: int = 32, lo: int = 4, hi: int = 10):
    """Source tokens -> the same tokens reversed (ids 4.., 0 = pad)."""
    lengths = torch.randint(lo, hi + 1, (batch,), generator=g)
    src = torch.randint(4, VOCAB, (batch, hi), generator=g)
    pad = torch.arange(hi)[None] >= lengths[:, None]
    src = src.masked_fill(pad, 0)
    idx = (lengths[:, None] - 1 - torch.arange(hi)[None]).clamp(min=0)
    tgt = src.gather(1, idx).masked_fill(pad, 0)
    return {"src": src, "src_lengths": lengths,
            "targets": {"text": {"tokens": tgt, "lengths": lengths}}}


def test_mask_predict_learns_reversal_in_few_passes():
    torch.manual_seed(0)
    spec = ModelSpec({"enc": Node("token_embedding", input="src", vocab_size=VOCAB, dim=64)},
                     {"text": Node("mask_predict_decoder", source="enc", vocab_size=VOCAB, dim=64, heads=4,
                                   layers=2, max_len=16, dropout=0.0, length_weight=1.0)})
    model = spec.build()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for step in range(350):
        loss = model(reverse_batch(g)).loss
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = reverse_batch(torch.Generator().manual_seed(123), batch=64)
    hyps = model.generate(test, "text", MaskPredictOptions(iterations=4, length_beam=2))["text"]
    tgt, lengths = test["targets"]["text"]["tokens"], test["targets"]["text"]["lengths"]
    exact = [h.tokens == tgt[i, : int(lengths[i])].tolist() for i, h in enumerate(hyps)]
    length_ok = [len(h.tokens) == int(lengths[i]) for i, h in enumerate(hyps)]
    correct = sum(a == b for i, h in enumerate(hyps) for a, b in zip(h.tokens, tgt[i, : int(lengths[i])].tolist()))
    assert float(loss) < 0.3 * first
    assert sum(length_ok) / len(hyps) > 0.9
    assert correct / int(lengths.sum()) > 0.8, correct / int(lengths.sum())
    assert sum(exact) / len(hyps) > 0.4
    assert model.decoders["text"].passes == 4 < int(lengths.max())  # fewer passes than tokens
    # more refinement never needs more than T passes, and T=1 is worse or equal
    one = model.generate(test, "text", MaskPredictOptions(iterations=1, length_beam=2))["text"]
    one_correct = sum(a == b for i, h in enumerate(one) for a, b in zip(h.tokens, tgt[i, : int(lengths[i])].tolist()))
    assert one_correct <= correct + 3


def test_training_loss_reads_one_to_all_tokens_per_row():
    """§3.3: a uniform 1..N tokens of each row are masked, and only they carry the token loss."""
    torch.manual_seed(0)
    dec = mask_predict_decoder(vocab_size=VOCAB, dim=32, heads=4, layers=1, max_len=12, length_weight=0.0)
    batch = reverse_batch(torch.Generator().manual_seed(0), batch=300)
    tg = batch["targets"]["text"]
    out = dec(Features(torch.randn(300, 10, 32), batch["src_lengths"]), tg)
    out.logits.retain_grad()
    out.loss.backward()
    counted = (out.logits.grad.abs().sum(-1) > 0).sum(1)          # positions that carry loss, per row
    assert bool((counted >= 1).all()) and bool((counted <= tg["lengths"]).all())
    frac = (counted.float() / tg["lengths"]).mean()
    assert 0.45 < float(frac) < 0.65                               # uniform 1..N: about (N + 1) / 2N
    assert bool((counted == tg["lengths"]).any()) and bool((counted == 1).any())


def test_bad_input_fails_clearly():
    dec = mask_predict_decoder(vocab_size=VOCAB, dim=32, heads=4, layers=1, max_len=12)
    mem = Features(torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match="memory_dim"):
        dec(Features(torch.randn(2, 5, 8)), {"tokens": torch.ones(2, 3, dtype=torch.long), "lengths": torch.tensor([3, 3])})
    with pytest.raises(ValueError, match="outside|lie in"):
        dec(mem, {"tokens": torch.full((2, 3), VOCAB), "lengths": torch.tensor([3, 3])})
    with pytest.raises(TypeError, match="MaskPredictOptions"):
        dec.decode(mem, {"iterations": 2})
    with pytest.raises(ValueError, match="iterations"):
        MaskPredictOptions(iterations=0)
