"""Mask-CTC: greedy CTC tokens carry the best posterior of their run, nothing masked is CTC greedy without an
MLM pass, the batched easy-first refinement equals ESPnet's one-utterance loop, and a small hybrid model with
the masked LM learns to fill every token of a copy task from the encoder."""
from __future__ import annotations

import math

import pytest
import torch

from decoders.hybrid import ctc_attention
from decoders.mask_ctc import MaskCTCOptions, ctc_tokens_with_confidence
from decoders.search import DecodingOptions
from zoo.contract import Features
from zoo.graph import ModelSpec, Node

torch.set_num_threads(1)


def small(seed: int = 0):
    torch.manual_seed(seed)
    return ctc_attention(vocab_size=12, dim=32, heads=2, layers=2, max_len=24, bos_id=1, eos_id=2, mlm_weight=0.3)


def test_ctc_tokens_keep_the_best_posterior_of_their_run():
    probs = torch.tensor([[.9, .05, .05], [.1, .6, .3], [.2, .7, .1], [.8, .1, .1], [.3, .3, .4], [.1, .1, .8],
                          [.2, .5, .3]])  # best path 0 1 1 0 2 2 1 -> tokens 1 2 1
    tokens, lengths, conf = ctc_tokens_with_confidence(probs.log()[None], torch.tensor([7]), blank=0)
    assert tokens[0].tolist() == [1, 2, 1] and lengths.tolist() == [1 * 3]
    assert conf[0].tolist() == pytest.approx([0.7, 0.8, 0.5])
    tokens, lengths, _ = ctc_tokens_with_confidence(probs.log()[None], torch.tensor([3]), blank=0)  # 0 1 1
    assert tokens[0, :1].tolist() == [1] and lengths.tolist() == [1]


def test_nothing_masked_is_ctc_greedy_and_runs_no_mlm_pass():
    dec = small().eval()
    g = torch.Generator().manual_seed(1)
    mem = Features(torch.randn(4, 12, 32, generator=g), torch.tensor([12, 9, 5, 11]))
    hyps = dec.decode(mem, MaskCTCOptions(threshold=0.0))
    assert dec.mlm.passes == 0
    best = dec.ctc.log_probs(mem).argmax(-1)
    for b, h in enumerate(hyps):
        path = best[b, : mem.lengths[b]].tolist()
        assert h.tokens == [p for i, p in enumerate(path) if p != 0 and (i == 0 or p != path[i - 1])]


def test_a_large_ctc_weight_gives_back_ctc_greedy_and_runs_carry_the_confidence():
    """Every frame of a run has the run's token as its argmax, so that token also has the run's best posterior:
    with a dominant ctc_weight, masking everything still returns the CTC greedy tokens."""
    dec = small().eval()
    with torch.no_grad():
        dec.ctc.proj.bias[[1, 2]] = -1e4  # a trained CTC never writes bos/eos, which Mask-CTC never fills in
    mem = Features(torch.randn(4, 12, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([12, 9, 5, 11]))
    tokens, lengths, conf, runs = ctc_tokens_with_confidence(dec.ctc.log_probs(mem), mem.lengths, 0, run_log_probs=True)
    valid = torch.arange(tokens.shape[1])[None] < lengths[:, None]
    assert torch.allclose(runs.gather(-1, tokens[..., None]).squeeze(-1).exp()[valid], conf[valid])
    assert torch.equal(runs.argmax(-1)[valid], tokens[valid])
    greedy = dec.decode(mem, MaskCTCOptions(threshold=0.0))
    fused = dec.decode(mem, MaskCTCOptions(threshold=1.0, iterations=2, ctc_weight=1e4))
    assert dec.mlm.passes >= 1 and [h.tokens for h in fused] == [h.tokens for h in greedy]
    with pytest.raises(ValueError, match="ctc_weight"):
        MaskCTCOptions(ctc_weight=-1.0)


def espnet_loop(dec, mem: Features, b: int, threshold: float, iterations: int) -> list[int]:
    """ESPnet's ``MaskCTCInference`` for utterance ``b`` alone (no padding in the batch)."""
    one = Features(mem.x[b: b + 1, : mem.lengths[b]], mem.lengths[b: b + 1])
    tokens, lengths, conf = ctc_tokens_with_confidence(dec.ctc.log_probs(one), one.lengths, 0)
    y, conf = tokens[0, : lengths[0]].clone(), conf[0, : lengths[0]]
    mask_id, banned = dec.mlm.mask_id, [0, 1, 2]
    y[conf < threshold] = mask_id
    masks = int((y == mask_id).sum())
    if masks == 0:
        return y.tolist()
    mm, pad = dec.mlm.memory(one)

    def predict():
        lp = dec.mlm.token_logits(y[None], torch.tensor([len(y)]), mm, pad)[0].float().log_softmax(-1)
        lp[:, banned] = -math.inf
        return lp

    num_iter = min(iterations, masks)
    for _ in range(num_iter - 1):
        idx = torch.nonzero(y == mask_id).squeeze(-1)
        score, ids = predict()[idx].max(-1)
        cand = torch.topk(score, masks // num_iter).indices
        y[idx[cand]] = ids[cand]
    idx = torch.nonzero(y == mask_id).squeeze(-1)
    y[idx] = predict()[idx].argmax(-1)
    return y.tolist()


@pytest.mark.parametrize("quantile,iterations", [(1.0, 3), (1.0, 1), (0.5, 10), (0.6, 2), (0.15, 3)])
def test_batched_refinement_equals_espnets_one_utterance_loop(quantile, iterations):
    dec = small(seed=2).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        dec.ctc.proj.weight.mul_(3.0)  # a spread of confidences: some tokens sure, some not
    mem = Features(torch.randn(5, 14, 32, generator=g), torch.tensor([14, 6, 11, 9, 13]))
    with torch.no_grad():
        _, lengths, conf = ctc_tokens_with_confidence(dec.ctc.log_probs(mem), mem.lengths, 0)
    sure = conf[torch.arange(conf.shape[1])[None] < lengths[:, None]]
    threshold = 1.0 if quantile == 1.0 else float(sure.quantile(quantile))  # mask all, or about half
    hyps = dec.decode(mem, MaskCTCOptions(threshold=threshold, iterations=iterations))
    assert [h.tokens for h in hyps] == [espnet_loop(dec, mem, b, threshold, iterations) for b in range(5)]
    assert 1 <= dec.mlm.passes <= iterations


def copy_batch(n: int, gen: torch.Generator, head: str = "text") -> dict:
    """Copy task: each target token (no token twice in a row: the CTC length is then learnable) appears twice
    in the source."""
    lens = torch.randint(2, 6, (n,), generator=gen)
    tgt = torch.zeros(n, 5, dtype=torch.long)
    for i, length in enumerate(lens.tolist()):
        steps = torch.randint(1, 9, (length,), generator=gen)  # 3..11, each differing from the one before
        tgt[i, :length] = 3 + torch.cumsum(steps, 0) % 9
    return dict(src=tgt.repeat_interleave(2, 1), src_lengths=lens * 2,
                targets={head: {"tokens": tgt, "lengths": lens}})


def test_mask_ctc_model_learns_to_fill_every_token():
    """Copy task (each source token repeated twice): after training, masking EVERY CTC token leaves the MLM
    alone to write the transcript from the encoder memory (and the CTC length), in 3 passes."""
    torch.manual_seed(0)
    model = ModelSpec(
        encoders={"frames": Node("token_embedding", input="src", vocab_size=12, dim=32)},
        decoders={"text": Node("ctc_attention", source="frames", vocab_size=12, dim=32, heads=2, layers=2,
                               max_len=16, ctc_weight=0.3, mlm_weight=0.5)},
        task="asr",
    ).build()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    for _ in range(250):
        out = model(copy_batch(32, g))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    test = copy_batch(60, torch.Generator().manual_seed(99))
    ref = test["targets"]["text"]
    want = [ref["tokens"][i, : ref["lengths"][i]].tolist() for i in range(60)]
    hyps = model.generate(test, options=MaskCTCOptions(threshold=1.0, iterations=3))["text"]
    assert model.decoders["text"].mlm.passes >= 2
    assert sum(h.tokens == w for h, w in zip(hyps, want)) >= 55
    ar = model.generate(test, options=DecodingOptions(beam_size=1, max_len=8, ctc_weight=0.0))["text"]
    assert sum(h.tokens == w for h, w in zip(ar, want)) >= 55  # the attention decoder still learns beside it


def test_masked_lm_stage_adds_the_lm_to_a_hybrid_and_trains_only_it(tmp_path):
    """recipes.asr_subtitle.train_mask_ctc: a hybrid model without the masked LM gets one; training it on the
    frozen encoder's cached memory lifts its masked-token accuracy on held-out rows, leaves every other weight
    bit-identical, and the saved model loads back with the LM (config updated)."""
    from recipes.asr_subtitle.train_mask_ctc import (
        cache_batches,
        fit_masked_lm,
        masked_accuracy,
        with_masked_lm,
    )
    from recipes.asr_subtitle.train_medusa import EncodedBatches
    from zoo.graph import ZooModel

    torch.manual_seed(0)
    hybrid = ModelSpec({"frames": Node("token_embedding", input="src", vocab_size=12, dim=32)},
                       {"verbatim": Node("ctc_attention", source="frames", vocab_size=12, dim=32, heads=2, layers=2,
                                         max_len=16)}, task="asr").build()
    assert hybrid.decoders["verbatim"].mlm is None
    model = with_masked_lm(hybrid, "verbatim").eval()
    assert with_masked_lm(model, "verbatim") is model
    before = {k: v.clone() for k, v in model.state_dict().items() if ".mlm." not in k}
    assert all(torch.equal(v, hybrid.state_dict()[k]) for k, v in before.items())
    for p in model.parameters():
        p.requires_grad_(False)
    mlm = model.decoders["verbatim"].mlm
    mlm.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    train = cache_batches(EncodedBatches(model, "verbatim", [copy_batch(32, g, "verbatim") for _ in range(8)]),
                          progress=False)
    held_out = cache_batches(EncodedBatches(model, "verbatim", [copy_batch(64, torch.Generator().manual_seed(9),
                                                                           "verbatim")]), progress=False)
    start = masked_accuracy(mlm, held_out)
    losses = fit_masked_lm(mlm, train, steps=240, lr=3e-3, warmup=20, progress=False)
    end = masked_accuracy(mlm, held_out)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10]), (losses[:10], losses[-10:])
    assert start < 0.3 and end > 0.9, (start, end)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.save_pretrained(tmp_path)
    loaded = ZooModel.from_pretrained(tmp_path)
    assert loaded.decoders["verbatim"].mlm is not None and loaded.task == "asr"
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    from recipes.asr_subtitle.train_mask_ctc import main as train_mask_ctc
    with pytest.raises(ValueError, match="--out must differ from --model"):
        train_mask_ctc(["--model", str(tmp_path), "--out", str(tmp_path)])
    with pytest.raises(TypeError, match="ctc_attention"):
        with_masked_lm(ModelSpec({"frames": Node("token_embedding", input="src", vocab_size=12, dim=32)},
                                 {"verbatim": Node("ctc", source="frames", in_dim=32, vocab_size=12)}).build(), "verbatim")
