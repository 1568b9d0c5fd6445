"""Lossless speculative greedy decoding for encoder-decoder models (draft, then verify in one pass).

Leviathan et al., 2023 ("Fast Inference from Transformers via Speculative Decoding", §2.3, the greedy
case): a drafter proposes ``k`` tokens per row; the decoder scores ``[last, d1..dk]`` in ONE forward
pass over its cached prefix; a row keeps the longest prefix of drafts equal to the decoder's own
argmax plus the decoder's next token, so the output is exactly plain greedy's. Batched: every row has
its own cache length (positions are written per row, attention masked per row), so rows accept
different lengths, end at different steps and then leave the batch. Rows may draft different lengths
(or nothing): a ragged round packs the real tokens, so the projections and MLPs, the bulk of a verify
pass, run on them alone. ``DecodingOptions(draft_schedule="heuristic")`` adapts each row's draft length
as transformers' assisted generation does (``num_assistant_tokens_schedule="heuristic"``: +2 after a
fully accepted draft, -1 otherwise).

Continuous batching (``DecodingOptions(max_active=m)``; vLLM's ``max_num_seqs``, transformers'
``generate_batch``): at most ``m`` rows decode at once and a finished row's place goes to the next
utterance at the next pass, where its forced prefix joins the other rows' verification. A batch then no
longer waits for its slowest row with the rest idle. Utterances are admitted longest memory first (LPT
scheduling), so the passes at the end, with places left empty, are few. With no drafter this is plain
greedy search with per-row positions (same tokens as :class:`decoders.search.GreedySearch`). A drafter with
``drafts_from_start`` (the copy drafters) also drafts a row's first tokens, verified in the pass that feeds
its forced prefix.

Drafters (``decoders.drafters``): Medusa-1 heads, a Kangaroo-style early exit and CopySpec copying from
another head's text; anything with ``k`` and ``propose(ctx)`` drafts.

``decode(decoder, memory, DecodingOptions(draft=drafter))`` routes greedy decoding here;
:func:`speculative_decode` also returns acceptance statistics.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.decoder_state import MemoryExtent, active_memory, cross_attend
from zoo.contract import Hypothesis

__all__ = ["DraftContext", "Drafter", "RowCache", "SpecStats", "SpeculativeGreedy", "draft_lists", "run_layers",
           "speculative_decode"]


class RowCache:
    """Self-attention KV cache with one length per row: (rows, heads, capacity, head_dim) per layer, allocated
    once for the most rows decoded at a time. The active rows are always its first rows (:meth:`compact`)."""

    def __init__(self, layers: int, rows: int, heads: int, capacity: int, head_dim: int, like: Tensor):
        shape = (rows, heads, capacity, head_dim)
        self.k = [like.new_zeros(shape) for _ in range(layers)]
        self.v = [like.new_zeros(shape) for _ in range(layers)]

    def slots(self, pos: Tensor) -> Tensor:
        """Flat (row, head, position) slots of positions ``pos`` (rows, n) of the first rows, for :meth:`write`."""
        _, heads, capacity, _ = self.k[0].shape
        rows = pos.shape[0]
        first = torch.arange(0, rows * heads * capacity, capacity, device=pos.device).view(rows, heads, 1)
        return (first + pos[:, None, :]).reshape(-1)

    def write(self, layer: int, k: Tensor, v: Tensor, slots: Tensor) -> None:
        """k, v (rows, heads, n, head_dim) into ``slots`` (:meth:`slots` of their positions). A row copy per
        slot: 3x faster than ``scatter_`` along the position axis on the CPU."""
        d = k.shape[-1]
        self.k[layer].view(-1, d).index_copy_(0, slots, k.reshape(-1, d))
        self.v[layer].view(-1, d).index_copy_(0, slots, v.reshape(-1, d))

    def compact(self, keep: Tensor, span: int) -> None:
        """Move rows ``keep`` (ascending) to the front, their first ``span`` positions only. What the rows
        beyond hold stays finite and lies beyond their lengths, so rows admitted there overwrite it first."""
        for t in (*self.k, *self.v):
            t[: keep.numel(), :, :span] = t[keep, :, :span]


def run_layers(dec, tokens: Tensor, mem, cache: RowCache, pos: Tensor, layers: int | None = None,
               span: int | None = None, keep: Tensor | None = None) -> Tensor:
    """Hidden states (rows, n, dim) of ``tokens`` (rows, n) at per-row positions ``pos`` (rows, n), through
    the first ``layers`` blocks (all by default); writes their keys/values into ``cache``. ``span`` (max(pos)
    + 1, when the caller knows it) saves a device sync. Inference only.

    ``keep`` (flat indices into rows * n) packs a ragged batch: the projections and MLPs run on the kept
    tokens only, attention on the padded layout, and the result is (len(keep), dim). Padding must follow a
    row's real tokens (what it writes into the cache lies beyond them and is overwritten before it is read)."""
    rows, n = tokens.shape
    span = int(pos.max()) + 1 if span is None else span
    if span > dec.dims.max_len:
        raise ValueError(f"position {span - 1} exceeds the decoder's max_len={dec.dims.max_len}")
    x = dec.embed(tokens) * dec.scale + dec.pos[pos].to(dec.embed.weight.dtype)

    def pack(t: Tensor) -> Tensor:  # (rows, n, ...) -> (rows, n, features), or the kept tokens
        return t.reshape(rows, n, -1) if keep is None else t.reshape(rows * n, -1).index_select(0, keep)

    def unpack(t: Tensor) -> Tensor:  # the kept tokens -> (rows, n, features), zeros where padded
        return t if keep is None else t.new_zeros(rows * n, t.shape[-1]).index_copy_(0, keep, t).view(rows, n, -1)

    x = pack(x)
    mask = (torch.arange(span, device=pos.device)[None, None, :] <= pos[:, :, None])[:, None]  # (rows,1,n,span)
    slots = cache.slots(pos)
    # islice, not dec.blocks[:n]: slicing a ModuleList builds a new module every verify pass
    for i, block in enumerate(itertools.islice(dec.blocks, dec.dims.layers if layers is None else layers)):
        a, c, dim = block.attn, block.cross, x.shape[-1]
        qkv = unpack(a.qkv(block.attn_ln(x)))
        q, k, v = qkv.view(rows, n, 3, a.heads, dim // a.heads).permute(2, 0, 3, 1, 4).unbind(0)
        cache.write(i, k, v, slots)
        o = F.scaled_dot_product_attention(q, cache.k[i][:rows, :, :span], cache.v[i][:rows, :, :span], attn_mask=mask)
        x = x + a.out(pack(o.transpose(1, 2)))
        q = unpack(c.q(block.cross_ln(x))).view(rows, n, c.heads, dim // c.heads).transpose(1, 2)
        o = cross_attend(q, mem, i)
        x = x + c.out(pack(o.transpose(1, 2)))
        x = x + block.fc2(F.gelu(block.fc1(block.mlp_ln(x))))
    return x


@dataclass
class DraftContext:
    """What a drafter may read. Rows are the active rows; ``rows`` maps them to the original batch."""

    decoder: nn.Module
    mem: object                      # decoders.transformer_decoder.Memory of the active rows
    cache: RowCache
    rows: Tensor                     # (R,) original row of each active row
    lengths: Tensor                  # (R,) cached positions per row (``last`` is not cached yet)
    last: Tensor                     # (R,) newest generated token
    hidden: Tensor                   # (R, dim) final hidden state (before LayerNorm) that predicted ``last``
    generated: list[list[int]]       # per original row: generated tokens so far, ``last`` included
    max_draft: int                   # the most draft tokens this round may use


class Drafter(Protocol):
    k: int
    # optional: True when it drafts a row's first tokens too (a row with ``lengths`` 0 and nothing generated,
    # its ``last`` the bos token; a copy drafter copies the reference's start), so they join the forced prefix

    def propose(self, ctx: DraftContext) -> Tensor | list[list[int]]:
        """Token ids following ``ctx.last``, at most ``ctx.max_draft`` per row: a (R, width) tensor, or one
        list per row (ragged: shorter drafts verify fewer tokens)."""


def draft_lists(drafts: Tensor | list) -> list[list[int]]:
    """A drafter's proposal, a (R, width) tensor or one sequence per row, as one list of ids per row."""
    return drafts.tolist() if isinstance(drafts, Tensor) else [list(d) for d in drafts]


# --- the search ------------------------------------------------------------------------------------
@dataclass
class SpecStats:
    rounds: int = 0                  # decoder passes (the first feeds the forced prefix; admitted rows join one)
    accepted: list[int] = field(default_factory=list)  # tokens gained per row and round (accepted drafts + 1)
    verified: int = 0                # token positions the verify passes ran through the decoder (packed)

    @property
    def mean_accepted(self) -> float:
        return sum(self.accepted) / max(len(self.accepted), 1)


@dataclass
class Places:
    """The rows decoding at once, one per place, kept on the host so that a pass syncs with the device once.
    When a row ends, the next utterance takes its place and its cache row; places left over are dropped."""

    hidden: Tensor                                     # (places, dim) final hidden state that predicted ``last``
    utt: list[int] = field(default_factory=list)       # the caller's row decoded in each place
    length: list[int] = field(default_factory=list)    # positions in the cache
    count: list[int] = field(default_factory=list)     # tokens generated past the forced prefix (0: just admitted)
    cap: list[int] = field(default_factory=list)       # its draft length (the heuristic schedule moves it)
    last: list[int] = field(default_factory=list)      # newest token, not in the cache yet

    def refill(self, ended: list[int], admit: list[int], cache: RowCache, cap: int, first: int) -> None:
        """Utterances ``admit`` take the places ``ended`` (their cache rows are overwritten from position 0 on),
        then new places at the end; ended places left over are dropped, with their cache rows."""
        span = max(self.length, default=0)
        for i, utt in zip(ended, admit):
            self.utt[i], self.length[i], self.count[i], self.cap[i], self.last[i] = utt, 0, 0, cap, first
        drop = set(ended[len(admit):])
        if drop:
            keep = [i for i in range(len(self.utt)) if i not in drop]
            index = torch.tensor(keep, device=self.hidden.device)
            cache.compact(index, span)
            self.hidden = self.hidden.index_select(0, index)
            self.utt, self.length, self.count, self.cap, self.last = (
                [v[i] for i in keep] for v in (self.utt, self.length, self.count, self.cap, self.last))
        extra = admit[len(ended):]
        if extra:  # the first pass, or places left free
            n = len(extra)
            self.utt, self.length, self.count = self.utt + extra, self.length + [0] * n, self.count + [0] * n
            self.cap, self.last = self.cap + [cap] * n, self.last + [first] * n
            self.hidden = torch.cat([self.hidden, self.hidden.new_zeros(n, self.hidden.shape[1])])


@dataclass
class VerifyPass:
    """One pass's packing: place i's ``sizes[i]`` tokens (its last token, then its drafts; an admitted place's
    forced prefix, then its drafts) are rows ``offsets[i]:`` of the output; ``ran[i]`` positions ran through
    the decoder for it (its size when packed, the widest size when not)."""

    sizes: list[int]
    offsets: list[int]
    ran: list[int]
    keep: Tensor | None              # flat indices of the real tokens in (places, width), None: not packed

    @classmethod
    def plan(cls, sizes: list[int], device) -> VerifyPass:
        n = max(sizes)
        if sum(sizes) < 0.9 * n * len(sizes):  # ragged enough: pack the real tokens for the products
            keep = torch.tensor([i * n + j for i, s in enumerate(sizes) for j in range(s)], device=device)
            return cls(sizes, list(itertools.accumulate(sizes, initial=0)), sizes, keep)
        return cls(sizes, [i * n for i in range(len(sizes) + 1)], [n] * len(sizes), None)


class SpeculativeGreedy:
    """Draft-and-verify greedy search; same tokens as :class:`decoders.search.GreedySearch`. ``drafter`` None
    verifies no drafts: plain greedy with per-row positions, for continuous batching. A round: places that
    ended take the next utterances (:meth:`Places.refill`), the drafter proposes (:meth:`propose`), one decoder
    pass scores every place's tokens (:meth:`verify`), and each place keeps its drafts up to the first that
    differs from greedy's own token, plus that token (:meth:`accept`)."""

    def __init__(self, options, eos_id: int, token_filter, drafter: Drafter | None):
        self.options, self.eos, self.filter, self.drafter = options, eos_id, token_filter, drafter
        self.k = getattr(drafter, "k", 1) if drafter is not None else 0
        self.fresh = getattr(drafter, "drafts_from_start", False)  # it drafts an admitted row's first tokens too
        self.stats = SpecStats()

    @torch.no_grad()
    def run(self, state, prefix: Tensor, max_new: int) -> list[list[Hypothesis]]:
        dec, opts = state.decoder, self.options
        d, batch = dec.dims, prefix.shape[0]
        width = batch if opts.max_active is None else min(opts.max_active, batch)
        cache = RowCache(d.layers, width, d.heads, d.max_len, d.dim // d.heads, dec.embed.weight)
        full = mem = state.mem
        extent = MemoryExtent.of(full.mask)
        self.forced, self.max_new = prefix[0].tolist(), max_new  # bos + forced prefix: fed first, all accepted
        self.out, self.sums, self.done = [[] for _ in range(batch)], [0.0] * batch, [False] * batch
        # longest memory first (LPT scheduling): the last rows to finish are then short, so fewer passes run
        # with places left empty
        pending = deque(range(batch) if extent is None or width == batch else
                        sorted(range(batch), key=lambda r: -extent.valid[r]))
        places = Places(dec.embed.weight.new_zeros(0, d.dim))
        while True:
            ended = [i for i, utt in enumerate(places.utt) if self.done[utt]]
            # positions left after the running rows' (the rows this pass drafts for, beside any admitted): a forced
            # prefix pads the pass to its length, so rows are admitted only where it fits
            room = d.max_len - max((n for n, utt in zip(places.length, places.utt) if not self.done[utt]), default=0)
            free = len(ended) + width - len(places.utt) if room >= len(self.forced) else 0
            admit = [pending.popleft() for _ in range(min(len(pending), free))]
            if len(ended) == len(places.utt) and not admit:
                break
            if ended or admit:
                places.refill(ended, admit, cache, self.k, self.forced[0])
                mem = active_memory(full, places.utt, extent)
            drafts, drafting = self.propose(dec, places, mem, cache, room)
            # the step each token predicts: a drafted place's first is step count; an admitted place's is step 0,
            # at its last forced token (row ``lo`` of its tokens)
            lo = [0 if c else len(self.forced) - 1 for c in places.count]
            layout = VerifyPass.plan([1 + len(p) for p in drafts], prefix.device)
            x, greedy, logp = self.verify(dec, places, drafts, layout, lo, mem, cache)
            self.stats.rounds += 1
            self.stats.verified += sum(layout.ran[i] for i in drafting)
            picks = self.accept(places, drafts, layout, lo, greedy, logp)
            places.hidden = x.index_select(0, torch.tensor(picks, device=x.device))
        return self.hypotheses()

    def propose(self, dec, places: Places, mem, cache: RowCache, room: int) -> tuple[list[list[int]], list[int]]:
        """Each place's tokens after its last (an admitted place: the rest of its forced prefix, then drafts),
        and the places that drafted."""
        count, forced = places.count, self.forced
        grown = [i for i, c in enumerate(count) if c]  # places past their forced prefix
        drafting = grown + [i for i, c in enumerate(count) if not c and self.fresh]
        drafts = [forced[1:] if not c else [] for c in count]
        budget = min(self.max_new - 1 - min((count[i] for i in drafting), default=self.max_new), room - 1)
        if budget > 0 and self.k > 0 and drafting:
            device = places.hidden.device
            ctx = DraftContext(dec, mem, cache, torch.tensor(places.utt, device=device),
                               torch.tensor(places.length, device=device), torch.tensor(places.last, device=device),
                               places.hidden, self.out, budget)
            proposed = draft_lists(self.drafter.propose(ctx))
            for i in drafting:  # an admitted place's draft follows its prefix, and the pass must still fit
                cap = min(budget, places.cap[i] if count[i] else min(places.cap[i], room - len(forced)))
                drafts[i] = drafts[i] + list(proposed[i][:cap])
        return drafts, drafting

    def verify(self, dec, places: Places, drafts: list[list[int]], layout: VerifyPass, lo: list[int], mem,
               cache: RowCache) -> tuple[Tensor, list[int], list[float]]:
        """One decoder pass over every place's ``[last, *drafts]``: the final hidden states (packed tokens, dim),
        greedy's token after each and its log-probability, under the search's token filters."""
        d, device, n = dec.dims, places.hidden.device, max(layout.sizes)
        inp = torch.tensor([[t, *p] + [d.pad_id] * (n - s) for t, p, s in zip(places.last, drafts, layout.sizes)],
                           device=device)
        lengths = torch.tensor(places.length, device=device)
        x = run_layers(dec, inp, mem, cache, lengths[:, None] + torch.arange(n, device=device),
                       span=max(places.length) + n, keep=layout.keep).reshape(layout.offsets[-1], -1)
        logp = dec.logits(x).float().log_softmax(-1)                    # (tokens, V)
        if self.filter.always.numel():
            logp[:, self.filter.always] = float("-inf")
        if self.options.min_len > 0:
            steps = torch.tensor([c + j - b for c, b, s in zip(places.count, lo, layout.ran) for j in range(s)],
                                 device=device)
            logp[:, self.eos] = logp[:, self.eos].masked_fill(steps < self.options.min_len, float("-inf"))
        if self.options.suppress_at_start and 0 in places.count:
            firsts = torch.tensor([layout.offsets[i] + lo[i] for i, c in enumerate(places.count) if not c], device=device)
            logp[firsts[:, None], self.filter.first] = float("-inf")
        greedy = logp.argmax(-1)
        return x, greedy.tolist(), logp.gather(1, greedy[:, None]).squeeze(1).tolist()

    def accept(self, places: Places, drafts: list[list[int]], layout: VerifyPass, lo: list[int], greedy: list[int],
               logp: list[float]) -> list[int]:
        """Each place keeps its drafts up to the first that greedy disagrees with, plus greedy's token there;
        returns the packed row whose hidden state predicted each place's new last token."""
        eos, max_new, picks = self.eos, self.max_new, []
        adaptive = self.options.draft_schedule == "heuristic"
        for i, utt in enumerate(places.utt):
            start, count = layout.offsets[i], places.count[i]
            g, lp = greedy[start: start + layout.sizes[i]], logp[start: start + layout.sizes[i]]
            p, a = drafts[i], lo[i]  # a: drafts equal to greedy's own tokens, from the first on (forced: all)
            while a < len(p) and p[a] == g[a]:
                a += 1
            if adaptive and p and count:  # transformers' "heuristic" schedule: +2 after a full accept, else -1
                places.cap[i] = min(self.k, places.cap[i] + 2) if a == len(p) else max(1, places.cap[i] - 1)
            picks.append(start + a)
            take = min(a + 1 - lo[i], max_new - count)
            new = g[lo[i]: lo[i] + take]
            if eos in new:
                take = new.index(eos) + 1
                new, self.done[utt] = new[:take], True
            self.out[utt] += new
            self.sums[utt] += sum(lp[lo[i]: lo[i] + take])
            self.done[utt] = self.done[utt] or len(self.out[utt]) >= max_new
            if count or self.fresh:
                self.stats.accepted.append(take)
            places.length[i] += a + 1
            places.count[i] += a + 1 - lo[i]
            places.last[i] = g[a]
        return picks

    def hypotheses(self) -> list[list[Hypothesis]]:
        from decoders.search import length_norm

        hyps = []
        for toks, score in zip(self.out, self.sums):
            toks = toks[: toks.index(self.eos)] if self.eos in toks else toks[: self.max_new]
            pen = length_norm(min(len(toks) + 1, self.max_new), self.options.length_penalty)
            hyps.append([Hypothesis(toks, score=score / pen)])
        return hyps


@torch.no_grad()
def speculative_decode(decoder, memory, options) -> tuple[list[Hypothesis], SpecStats]:
    """Speculative greedy decoding with ``options.draft`` (or, without one, continuous-batching greedy); returns
    one Hypothesis per row and the stats."""
    from decoders.search import TokenFilter, unresolved_draft

    if isinstance(options.draft, str):
        raise ValueError(unresolved_draft(options.draft))
    if options.draft is None and options.max_active is None:
        raise ValueError("speculative_decode needs DecodingOptions(draft=<a drafter>) or max_active (continuous "
                         "batching of plain greedy)")
    d = decoder.dims
    prefix = (d.bos_id, *options.prefix)
    max_new = options.max_len if options.max_len is not None else d.max_len - len(prefix)
    if max_new < 1 or len(prefix) + max_new > d.max_len:
        raise ValueError(f"prefix of {len(prefix)} tokens + max_len={max_new} exceeds the decoder's "
                         f"max_len={d.max_len}; lower DecodingOptions.max_len")
    state = decoder.state(memory, len(prefix) + max_new, True, False)
    device = decoder.embed.weight.device
    prefix_t = torch.tensor(prefix, dtype=torch.long, device=device).expand(state.utterances, -1)
    search = SpeculativeGreedy(options, d.eos_id, TokenFilter(options, d.eos_id, d.vocab_size, device), options.draft)
    return [h[0] for h in search.run(state, prefix_t, max_new)], search.stats
