"""Speculative greedy decoding is lossless: token for token equal to plain greedy (fp32) for every drafter,
random and adversarial drafts included, at batch 1 and 8 with rows accepting different lengths and ending
at different steps; the copy drafter maps through text; Medusa / early-exit drafters train on a frozen
decoder that stays bit-identical."""
from __future__ import annotations

import pytest
import torch
from helpers import spread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoders.drafters import (
    CopyDrafter,
    EarlyExitDrafter,
    FallbackDrafter,
    MedusaHeads,
    TokenCopyDrafter,
    train_drafter,
)
from decoders.search import DecodingOptions
from decoders.speculative import speculative_decode
from decoders.transformer_decoder import TransformerDecoder, transformer_decoder
from zoo.contract import Features, Hypothesis
from zoo.graph import ModelSpec, Node
from zoo.tokenizers import CharTokenizer

VOCAB = 40


def random_decoder(seed: int, layers: int = 2, max_len: int = 40, sources: int = 1) -> TransformerDecoder:
    """Well-spread random weights; the EOS logit follows a position direction so rows end at varied steps."""
    dec = spread(transformer_decoder(vocab_size=VOCAB, dim=32, heads=4, layers=layers, max_len=max_len,
                                     tie_embeddings=False, sources=sources), seed)
    with torch.no_grad():
        at = 6 + seed % 8
        dec.head.weight[dec.dims.eos_id] = 0.6 * dec.pos[at] / dec.pos[at].norm() * dec.dims.dim ** 0.5
    return dec


def random_memory(seed: int, batch: int, sources: int = 1) -> Features | list[Features]:
    """Padded memories; with several sources (a cascade's decoder reads them concatenated, each padded) the
    attended frames of a row are not one prefix."""
    g = torch.Generator().manual_seed(seed)
    feats = [Features(torch.randn(batch, 9 - 2 * i, 32, generator=g), torch.randint(2, 10 - 2 * i, (batch,), generator=g))
             for i in range(sources)]
    return feats[0] if sources == 1 else feats


class RandomDrafter:
    """Adversarial: random tokens, random width (a row's first tokens too)."""

    drafts_from_start = True

    def __init__(self, seed: int, k: int):
        self.g, self.k = torch.Generator().manual_seed(seed), k

    def propose(self, ctx):
        width = int(torch.randint(0, self.k + 1, (1,), generator=self.g))
        return torch.randint(0, VOCAB, (ctx.rows.numel(), width), generator=self.g)


class NoisyOracle:
    """Greedy's own continuation with random corruptions: long, row-dependent acceptances, from the first token."""

    drafts_from_start = True

    def __init__(self, truth: list[list[int]], eos: int, seed: int, k: int, p_bad: float):
        self.truth, self.eos, self.k, self.p = truth, eos, k, p_bad
        self.g = torch.Generator().manual_seed(seed)

    def propose(self, ctx):
        out = []
        for row in ctx.rows.tolist():
            seq = self.truth[row] + [self.eos] * self.k
            at = len(ctx.generated[row])
            out.append(seq[at: at + min(self.k, ctx.max_draft)])
        drafts = torch.tensor(out, dtype=torch.long).view(ctx.rows.numel(), -1)
        bad = torch.rand(drafts.shape, generator=self.g) < self.p
        return torch.where(bad, torch.randint(0, VOCAB, drafts.shape, generator=self.g), drafts)


class RaggedOracle(NoisyOracle):
    """Rows draft different lengths (some none at all), as lists: the verify pass packs them."""

    def propose(self, ctx):
        drafts = super().propose(ctx).tolist()
        widths = torch.randint(0, self.k + 1, (len(drafts),), generator=self.g).tolist()
        return [d[:w] for d, w in zip(drafts, widths)]


def perturb(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g) / max(p.shape[-1], 1) ** 0.5)
    return module.eval()


def assert_same(plain: list[Hypothesis], spec: list[Hypothesis]):
    assert [h.tokens for h in spec] == [h.tokens for h in plain]
    assert [h.score for h in spec] == pytest.approx([h.score for h in plain], abs=1e-4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), batch=st.sampled_from([1, 8]), kind=st.sampled_from(
    ["random", "oracle", "ragged", "medusa", "early_exit", "fallback", "none"]), k=st.integers(1, 6),
    min_len=st.sampled_from([0, 0, 3]), max_len=st.integers(1, 24), schedule=st.sampled_from(["constant", "heuristic"]),
    max_active=st.sampled_from([None, None, 1, 3]), sources=st.sampled_from([1, 1, 2]))
def test_speculative_equals_greedy(seed, batch, kind, k, min_len, max_len, schedule, max_active, sources):
    dec, mem = random_decoder(seed % 7, layers=3, sources=sources), random_memory(seed, batch, sources)
    base = dict(max_len=max_len, min_len=min(min_len, max_len - 1), suppress_tokens=(5,) if seed % 2 else (),
                suppress_at_start=(6, 7) if seed % 3 == 0 else (), prefix=(7, 8) if seed % 5 == 0 else ())
    plain = dec.decode(mem, DecodingOptions(**base))
    drafter = {"random": lambda: RandomDrafter(seed, k),
               "oracle": lambda: NoisyOracle([h.tokens for h in plain], dec.dims.eos_id, seed, k, 0.15),
               "ragged": lambda: RaggedOracle([h.tokens for h in plain], dec.dims.eos_id, seed, k, 0.15),
               "medusa": lambda: perturb(MedusaHeads(dec, k), seed),
               "early_exit": lambda: perturb(EarlyExitDrafter(dec, 1 + seed % 2, k), seed),
               "fallback": lambda: FallbackDrafter(RaggedOracle([h.tokens for h in plain], dec.dims.eos_id, seed, k, 0.15),
                                                   perturb(MedusaHeads(dec, 1 + seed % 3), seed)),
               "none": lambda: None}[kind]()
    if drafter is None and max_active is None:
        max_active = 2  # no drafter: continuous-batching greedy
    spec = dec.decode(mem, DecodingOptions(**base, draft=drafter, draft_schedule=schedule, max_active=max_active))
    assert_same(plain, spec)


@pytest.mark.parametrize("max_active", [None, 3])
def test_two_source_memory_keeps_every_attended_frame(max_active):
    """Regression: the active rows' memory was cut after their count of attended frames, which drops frames
    of a second source (a cascade's subtitle decoder reads the written and the acoustic encoders)."""
    dec = random_decoder(3, sources=2)
    for seed in range(6):
        mem = random_memory(seed, 8, sources=2)
        plain = dec.decode(mem, DecodingOptions(max_len=20))
        truth = [h.tokens for h in plain]
        for drafter in (None, RaggedOracle(truth, dec.dims.eos_id, seed, 4, 0.15)):
            spec = dec.decode(mem, DecodingOptions(max_len=20, draft=drafter, max_active=max_active or
                                                   (None if drafter else 8)))
            assert_same(plain, spec)


def test_continuous_batching_admits_the_next_utterance_where_a_row_ends():
    """8 utterances through 2 places: fewer passes than 4 static batches of 2, and the same tokens."""
    dec, mem = random_decoder(3), random_memory(3, 8)
    plain = dec.decode(mem, DecodingOptions(max_len=30))
    assert len({len(h.tokens) for h in plain}) >= 3                # rows end at different steps
    truth = [h.tokens for h in plain]
    for drafted in (False, True):
        draft = lambda rows: NoisyOracle(truth[rows], dec.dims.eos_id, 0, 3, 0.0) if drafted else None
        static = 0
        for i in range(0, 8, 2):
            part = Features(mem.x[i: i + 2], mem.lengths[i: i + 2])
            _, stats = speculative_decode(dec, part, DecodingOptions(max_len=30, draft=draft(slice(i, i + 2)), max_active=2))
            static += stats.rounds
        hyps, stats = speculative_decode(dec, mem, DecodingOptions(max_len=30, draft=draft(slice(0, 8)), max_active=2))
        assert_same(plain, hyps)
        assert stats.rounds < static, (stats.rounds, static)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 8, 10, 11])
def test_continuous_batching_with_a_forced_prefix_up_to_the_decoders_last_position(seed):
    """A row admitted beside rows near max_len pads the pass to its forced prefix: it waits until that fits."""
    dec, mem = random_decoder(seed % 7, max_len=16), random_memory(seed, 8)
    base = dict(max_len=13, prefix=(7, 8))                       # 3 forced + 13 generated = all 16 positions
    plain = dec.decode(mem, DecodingOptions(**base))
    assert max(len(h.tokens) for h in plain) == 13
    for drafter in (None, NoisyOracle([h.tokens for h in plain], dec.dims.eos_id, seed, 4, 0.1)):
        assert_same(plain, dec.decode(mem, DecodingOptions(**base, draft=drafter, max_active=3)))


def test_continuous_batching_admits_the_longest_memories_first():
    class Recorder(NoisyOracle):
        seen: list[list[int]] = []

        def propose(self, ctx):
            self.seen.append(ctx.rows.tolist())
            return super().propose(ctx)

    dec, mem = random_decoder(5), random_memory(5, 6)
    plain = dec.decode(mem, DecodingOptions(max_len=20))
    drafter = Recorder([h.tokens for h in plain], dec.dims.eos_id, 0, 3, 0.0)
    hyps, _ = speculative_decode(dec, mem, DecodingOptions(max_len=20, draft=drafter, max_active=2))
    assert_same(plain, hyps)
    frames = mem.lengths.tolist()
    first = sorted(range(6), key=lambda r: -frames[r])[:2]     # LPT: the two longest memories start
    assert sorted(drafter.seen[0]) == sorted(first), (drafter.seen[0], frames)


def test_rows_accept_different_lengths_and_end_at_different_steps():
    dec, mem = random_decoder(3), random_memory(3, 8)
    plain = dec.decode(mem, DecodingOptions(max_len=30))
    ends = {len(h.tokens) for h in plain}
    assert len(ends) >= 3, ends                                   # rows end at different steps
    spec, stats = speculative_decode(dec, mem, DecodingOptions(
        max_len=30, draft=NoisyOracle([h.tokens for h in plain], dec.dims.eos_id, 0, 5, 0.2)))
    assert_same(plain, spec)
    assert len(set(stats.accepted)) >= 3                          # per-row, per-round acceptances differ
    assert stats.rounds < max(len(h.tokens) for h in plain)       # fewer decoder passes than tokens
    perfect, stats = speculative_decode(dec, mem, DecodingOptions(
        max_len=30, draft=NoisyOracle([h.tokens for h in plain], dec.dims.eos_id, 0, 5, 0.0)))
    assert_same(plain, perfect)
    assert stats.mean_accepted > 3


def test_ragged_drafts_are_packed_and_the_heuristic_schedule_shortens_rejected_drafts():
    dec, mem = random_decoder(4), random_memory(4, 8)
    plain = dec.decode(mem, DecodingOptions(max_len=30))
    truth = [h.tokens for h in plain]
    runs = {}
    for name, drafter, schedule in [("full", NoisyOracle(truth, dec.dims.eos_id, 1, 6, 0.3), "constant"),
                                    ("ragged", RaggedOracle(truth, dec.dims.eos_id, 1, 6, 0.3), "constant"),
                                    ("heuristic", NoisyOracle(truth, dec.dims.eos_id, 1, 6, 0.3), "heuristic")]:
        spec, stats = speculative_decode(dec, mem, DecodingOptions(max_len=30, draft=drafter, draft_schedule=schedule))
        assert_same(plain, spec)
        runs[name] = stats
    slots = {k: v.verified / len(v.accepted) for k, v in runs.items()}  # positions run per row and round
    assert 6 < slots["full"] <= 7, slots                                # rectangular: 1 + 6 (less near the end)
    assert slots["ragged"] < 0.8 * slots["full"], slots                 # short and empty drafts cost less
    assert slots["heuristic"] < 0.8 * slots["full"], slots              # 30% bad drafts: caps fall below 6


def test_copy_drafter_maps_through_text():
    symbols = [chr(ord("a") + i) for i in range(VOCAB - 4)]
    target = CharTokenizer(symbols)                            # the decoder's ids (eos 3 unused by the decoder: 2)
    source = CharTokenizer(symbols[::-1])                      # another head: same characters, other ids
    dec, mem = random_decoder(5), random_memory(5, 8)
    opts = dict(max_len=25, suppress_tokens=(0, 1, 3))         # decodable tokens only (eos is 2)
    plain = dec.decode(mem, DecodingOptions(**opts))
    texts = [target.decode(h.tokens) for h in plain]
    source_hyps = [Hypothesis(source.encode(t)) for t in texts]
    assert [h.tokens for h in source_hyps] != [h.tokens for h in plain]  # the ids really differ
    drafter = CopyDrafter.from_hypotheses(source_hyps, source, target, k=6)
    spec, stats = speculative_decode(dec, mem, DecodingOptions(**opts, draft=drafter))
    assert_same(plain, spec)
    assert stats.mean_accepted > 2.5                           # copying the same text is accepted
    assert drafter.continuation(0, texts[0][:3]) == texts[0][3:3 + 24]
    # a wrong reference still decodes identically
    wrong = CopyDrafter(["".join(reversed(t)) for t in texts], target, k=6)
    assert_same(plain, dec.decode(mem, DecodingOptions(**opts, draft=wrong)))


def test_token_copy_drafter_copies_ids_case_sensitively_and_stays_lossless():
    dec, mem = random_decoder(6), random_memory(6, 8)
    opts = dict(max_len=25, suppress_tokens=(0, 1, 3))
    plain = dec.decode(mem, DecodingOptions(**opts))
    drafter = TokenCopyDrafter.from_hypotheses(plain, k=6)     # a same-vocabulary reference (a CTC branch's)
    spec, stats = speculative_decode(dec, mem, DecodingOptions(**opts, draft=drafter))
    assert_same(plain, spec)
    assert max(stats.accepted) == 7                             # whole drafts accepted, from the first pass on
    assert stats.rounds < max(len(h.tokens) for h in plain) / 3, (stats.rounds, [len(h.tokens) for h in plain])
    assert TokenCopyDrafter([[65, 66, 67, 97, 98, 99]]).continuation(0, "".join(map(chr, [97, 98]))) == "c"  # 'ab' != 'AB'
    wrong = TokenCopyDrafter([h.tokens[::-1] for h in plain], k=6)
    assert_same(plain, dec.decode(mem, DecodingOptions(**opts, draft=wrong)))


def toy_batches(n: int = 3, batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(3, 9, (batch,), generator=g)
        tokens = torch.randint(4, VOCAB, (batch, 8), generator=g)
        tokens = tokens.masked_fill(torch.arange(8)[None] >= lengths[:, None], 0)
        mem = Features(torch.randn(batch, 9, 32, generator=g), torch.full((batch,), 9))
        out.append((mem, {"tokens": tokens, "lengths": lengths}))
    return out


@pytest.mark.parametrize("kind", ["medusa", "early_exit"])
def test_drafters_train_on_a_frozen_decoder(kind):
    torch.manual_seed(0)
    dec = random_decoder(1)
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    drafter = MedusaHeads(dec, 3) if kind == "medusa" else EarlyExitDrafter(dec, 1, 4)
    losses = train_drafter(drafter, dec, toy_batches(), steps=60, lr=3e-3)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, (losses[:5], losses[-5:])
    assert all(torch.equal(before[k], v) for k, v in dec.state_dict().items())
    assert not any(p.grad is not None for p in dec.parameters())
    mem = random_memory(2, 8)
    assert_same(dec.decode(mem, DecodingOptions(max_len=20)), dec.decode(mem, DecodingOptions(max_len=20, draft=drafter)))


@pytest.mark.parametrize("layers", [1, 2])
def test_medusa_batched_proposals_equal_the_heads_one_by_one(layers):
    from types import SimpleNamespace

    dec = random_decoder(2)
    medusa = perturb(MedusaHeads(dec, 4, layers), 3)
    hidden = torch.randn(8, dec.dims.dim, generator=torch.Generator().manual_seed(0))
    for max_draft in (4, 2):
        ctx = SimpleNamespace(decoder=dec, hidden=hidden, max_draft=max_draft)
        with torch.no_grad():
            assert torch.equal(medusa.propose(ctx), medusa(dec, hidden)[:, :max_draft].argmax(-1))
    with torch.no_grad():                                   # weights changed in place: the stacked copy follows
        medusa.out[1].weight.mul_(-1.0)
        assert torch.equal(medusa.propose(ctx), medusa(dec, hidden)[:, :2].argmax(-1))


def test_fallback_drafter_fills_only_the_rows_the_first_leaves_empty():
    class Fixed:
        def __init__(self, k, drafts):
            self.k, self.drafts, self.calls = k, drafts, 0

        def propose(self, ctx):
            self.calls += 1
            return self.drafts

    first, second = Fixed(3, [[], [5, 6, 7], []]), Fixed(2, torch.tensor([[1, 2], [3, 4], [8, 9]]))
    chained = FallbackDrafter(first, second)
    assert chained.k == 3
    assert chained.propose(None) == [[1, 2], [5, 6, 7], [8, 9]]
    full = FallbackDrafter(Fixed(2, [[4], [5]]), second)
    assert full.propose(None) == [[4], [5]] and second.calls == 1   # no empty row: the fallback does not run


def toy_subtitle_model():
    spec = ModelSpec({"text": Node("token_embedding", input="src", vocab_size=VOCAB, dim=32)},
                     {"subtitle": Node("transformer_decoder", source="text", vocab_size=VOCAB, dim=32, heads=4,
                                       layers=2, max_len=40)})
    return spec.build()


def test_encoded_batches_start_the_next_epoch_of_a_bucketing_sampler_on_each_pass():
    from torch.utils.data import DataLoader

    from recipes.asr_subtitle.train_medusa import EncodedBatches, fit_medusa
    from zoo.data.bucketing import BucketingSampler

    model = toy_subtitle_model()
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(4, VOCAB, (6,), generator=g) for _ in range(8)]

    def collate(items):
        tokens, lengths = torch.stack(items), torch.full((len(items),), 6)
        return {"src": tokens, "src_lengths": lengths, "targets": {"subtitle": {"tokens": tokens, "lengths": lengths}}}

    loader = DataLoader(rows, batch_sampler=BucketingSampler([1.0] * 8, max_duration=4.0, seed=0), collate_fn=collate)
    batches = EncodedBatches(model, "subtitle", loader)
    passes = [sorted(torch.cat([t["tokens"] for _, t in batches]).flatten().tolist()) for _ in range(3)]
    assert passes[0] == passes[1] == passes[2] == sorted(torch.stack(rows).flatten().tolist())  # every row, every epoch
    assert loader.batch_sampler.epoch == 2
    _, losses = fit_medusa(model, "subtitle", batches, heads=2, steps=9, lr=3e-3)     # more steps than an epoch holds
    assert len(losses) == 9


def test_train_medusa_recipe_saves_and_loads(tmp_path):
    from recipes.asr_subtitle.train_medusa import EncodedBatches, fit_medusa, load_medusa, save_medusa

    model = toy_subtitle_model()
    g = torch.Generator().manual_seed(0)
    loader = []
    for _ in range(2):
        tokens = torch.randint(4, VOCAB, (4, 6), generator=g)
        loader.append({"src": tokens, "src_lengths": torch.full((4,), 6),
                       "targets": {"subtitle": {"tokens": tokens, "lengths": torch.full((4,), 6),
                                                "present": torch.tensor([True, True, False, True])}}})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    medusa, losses = fit_medusa(model, "subtitle", EncodedBatches(model, "subtitle", loader), heads=2, steps=30, lr=3e-3)
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    save_medusa(medusa, tmp_path, "subtitle")
    loaded = load_medusa(tmp_path, model, "subtitle")
    assert all(torch.equal(a, b) for a, b in zip(medusa.state_dict().values(), loaded.state_dict().values()))
    batch = {"src": loader[0]["src"], "src_lengths": loader[0]["src_lengths"]}
    plain = model.generate(batch, "subtitle", DecodingOptions(max_len=10))["subtitle"]
    spec_out = model.generate(batch, "subtitle", DecodingOptions(max_len=10, draft=loaded))["subtitle"]
    assert_same(plain, spec_out)


def test_bad_draft_options_fail_clearly():
    with pytest.raises(ValueError, match="continuous batching"):
        DecodingOptions(max_active=4, beam_size=3)
    with pytest.raises(ValueError, match="continuous batching"):
        DecodingOptions(max_active=0)
    dec = random_decoder(0)
    with pytest.raises(ValueError, match="propose"):
        DecodingOptions(draft=object())
    with pytest.raises(ValueError, match="greedy only"):
        DecodingOptions(beam_size=2, draft=MedusaHeads(dec, 2))
    with pytest.raises(ValueError, match="exit_layer"):
        EarlyExitDrafter(dec, exit_layer=2)
    with pytest.raises(ValueError, match="one reference"):
        dec.decode(random_memory(0, 4), DecodingOptions(max_len=5, draft=CopyDrafter(["ab"], CharTokenizer(["a"]))))


def test_speculative_benchmark_stacks_batches_into_one_padded_memory():
    from benchmarks.speculative_asr import stack

    a, b = Features(torch.randn(2, 5, 4), torch.tensor([5, 3])), Features(torch.randn(1, 7, 4))
    whole = stack([a, b])
    assert whole.x.shape == (3, 7, 4) and whole.lengths.tolist() == [5, 3, 7]
    assert torch.equal(whole.x[:2, :5], a.x) and torch.equal(whole.x[2], b.x[0]) and not whole.x[:2, 5:].any()
    # a decoder reading two sources (a cascade): one stacked memory per source
    c, d = Features(torch.randn(2, 4, 3)), Features(torch.randn(1, 6, 3), torch.tensor([2]))
    two = stack([[a, c], [b, d]])
    assert [m.x.shape for m in two] == [(3, 7, 4), (3, 6, 3)] and two[1].lengths.tolist() == [4, 4, 2]
