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

from decoders.decoder_state import Memory, cross_attend
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


def active_memory(mem: Memory, rows: list[int], frames: list[int] | None) -> Memory:
    """The memory of utterances ``rows``, cut to the longest of their ``frames`` (valid frames per utterance;
    None = unpadded); the mask is dropped when no row is padded any more."""
    every = rows == list(range(mem.k[0].shape[0]))
    idx = torch.tensor(rows, device=mem.k[0].device)
    if frames is None:
        return mem if every else mem.select(idx)
    longest, axis = max(frames[r] for r in rows), 3 if mem.keys_last else 2
    if every and longest == mem.mask.shape[-1]:
        return Memory(mem.k, mem.v, None if min(frames) == longest else mem.mask, mem.keys_last)
    cut = Memory([t.narrow(axis, 0, longest) for t in mem.k], [t.narrow(axis, 0, longest) for t in mem.v],
                 mem.mask.narrow(3, 0, longest), mem.keys_last).select(idx)
    if all(frames[r] == longest for r in rows):
        cut.mask = None
    return cut


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


class SpeculativeGreedy:
    """Draft-and-verify greedy search; same tokens as :class:`decoders.search.GreedySearch`. ``drafter`` None
    verifies no drafts: plain greedy with per-row positions, for continuous batching."""

    def __init__(self, options, eos_id: int, token_filter, drafter: Drafter | None):
        self.options, self.eos, self.filter, self.drafter = options, eos_id, token_filter, drafter
        self.stats = SpecStats()

    @torch.no_grad()
    def run(self, state, prefix: Tensor, max_new: int) -> list[list[Hypothesis]]:
        dec, eos, opts = state.decoder, self.eos, self.options
        d, batch, device = dec.dims, prefix.shape[0], prefix.device
        width = batch if opts.max_active is None else min(opts.max_active, batch)
        cache = RowCache(d.layers, width, d.heads, d.max_len, d.dim // d.heads, dec.embed.weight)
        full = state.mem
        frames = None if full.mask is None else full.mask.flatten(1).sum(1).tolist()
        forced = prefix[0].tolist()  # bos + the forced prefix: what an admitted row feeds first, all accepted
        out, sums, done = [[] for _ in range(batch)], [0.0] * batch, [False] * batch
        # longest memory first (LPT scheduling): the last rows to finish are then short, so fewer passes run
        # with places left empty
        order = range(batch) if frames is None or width == batch else sorted(range(batch), key=lambda r: -frames[r])
        pending = deque(order)
        # bookkeeping on the host (one list per active row), so a round syncs with the device once
        k = getattr(self.drafter, "k", 1) if self.drafter is not None else 0
        fresh = getattr(self.drafter, "drafts_from_start", False)
        rows, lengths, count, caps, last = [], [], [], [], []
        hidden, mem = dec.embed.weight.new_zeros(0, d.dim), full
        always, min_len, adaptive = self.filter.always, opts.min_len, opts.draft_schedule == "heuristic"
        at_start = self.filter.first if opts.suppress_at_start else None
        while True:
            ended = [i for i, row in enumerate(rows) if done[row]]
            # positions left after the running rows' (the rows this pass drafts for, beside any admitted): a forced
            # prefix pads the pass to its length, so rows are admitted only where it fits
            room = d.max_len - max((n for i, n in enumerate(lengths) if not done[rows[i]]), default=0)
            free = len(ended) + width - len(rows) if room >= len(forced) else 0
            admit = [pending.popleft() for _ in range(min(len(pending), free))]
            if len(ended) == len(rows) and not admit:
                break
            if ended or admit:  # the next utterances take the places of rows that ended
                span, drop = max(lengths, default=0), ended[len(admit):]
                for i, utt in zip(ended, admit):  # in place: the cache row is overwritten from position 0 on
                    rows[i], lengths[i], count[i], caps[i], last[i] = utt, 0, 0, k, forced[0]
                if drop:
                    gone = set(drop)
                    keep = [i for i in range(len(rows)) if i not in gone]
                    cache.compact(torch.tensor(keep, device=device), span)
                    hidden = hidden.index_select(0, torch.tensor(keep, device=device))
                    rows, lengths, count, caps, last = ([v[i] for i in keep] for v in (rows, lengths, count, caps, last))
                extra = admit[len(ended):]
                if extra:  # the first pass (or places left free)
                    rows, lengths, count = rows + extra, lengths + [0] * len(extra), count + [0] * len(extra)
                    caps, last = caps + [k] * len(extra), last + [forced[0]] * len(extra)
                    hidden = torch.cat([hidden, hidden.new_zeros(len(extra), d.dim)])
                mem = active_memory(full, rows, frames)
            lengths_t = torch.tensor(lengths, device=device)
            grown = [i for i, c in enumerate(count) if c]  # rows past their forced prefix
            drafting = grown + [i for i, c in enumerate(count) if not c and fresh]
            drafts = [forced[1:] if not c else [] for c in count]
            budget = max_new - 1 - min((count[i] for i in drafting), default=max_new)
            budget = min(budget, room - 1)
            if budget > 0 and k > 0 and drafting:
                ctx = DraftContext(dec, mem, cache, torch.tensor(rows, device=device), lengths_t,
                                   torch.tensor(last, device=device), hidden, out, budget)
                proposed = draft_lists(self.drafter.propose(ctx))
                for i in drafting:  # a fresh row's draft follows its prefix, and the pass must still fit
                    cap = min(budget, caps[i] if count[i] else min(caps[i], room - len(forced)))
                    drafts[i] = drafts[i] + list(proposed[i][:cap])
            sizes = [1 + len(p) for p in drafts]
            n = max(sizes)
            inp = torch.tensor([[t, *p] + [d.pad_id] * (n - s) for t, p, s in zip(last, drafts, sizes)], device=device)
            if sum(sizes) < 0.9 * n * len(rows):  # ragged enough: pack the real tokens for the products
                offsets = list(itertools.accumulate(sizes, initial=0))
                keep = torch.tensor([i * n + j for i, s in enumerate(sizes) for j in range(s)], device=device)
            else:
                offsets, keep = [i * n for i in range(len(rows) + 1)], None
            ran = sizes if keep is not None else [n] * len(rows)  # positions each row runs through the decoder
            x = run_layers(dec, inp, mem, cache, lengths_t[:, None] + torch.arange(n, device=device),
                           span=max(lengths) + n, keep=keep).reshape(offsets[-1], -1)
            # the step each position predicts: a drafted row's next token is step count; an admitted row's is
            # step 0, at its last forced token
            lo = [0 if c else len(forced) - 1 for c in count]
            logp = dec.logits(x).float().log_softmax(-1)                    # (tokens, V)
            if always.numel():
                logp[:, always] = float("-inf")
            if min_len > 0:
                steps = torch.tensor([c + j - b for c, b, s in zip(count, lo, ran) for j in range(s)], device=device)
                logp[:, eos] = logp[:, eos].masked_fill(steps < min_len, float("-inf"))
            if at_start is not None and len(grown) < len(rows):
                firsts = torch.tensor([offsets[i] + lo[i] for i, c in enumerate(count) if not c], device=device)
                logp[firsts[:, None], at_start] = float("-inf")
            greedy = logp.argmax(-1)
            lps = logp.gather(1, greedy[:, None]).squeeze(1)
            self.stats.rounds += 1
            self.stats.verified += sum(ran[i] for i in drafting)
            g_all, lp_all = greedy.tolist(), lps.tolist()
            picks = []
            for i, row in enumerate(rows):
                g, lp = g_all[offsets[i]: offsets[i] + sizes[i]], lp_all[offsets[i]: offsets[i] + sizes[i]]
                p, a = drafts[i], lo[i]  # a: drafts equal to greedy's own tokens, from the first on (forced: all)
                while a < len(p) and p[a] == g[a]:
                    a += 1
                if adaptive and p and count[i]:  # transformers' "heuristic" schedule: +2 after a full accept, else -1
                    caps[i] = min(k, caps[i] + 2) if a == len(p) else max(1, caps[i] - 1)
                picks.append(offsets[i] + a)
                take = min(a + 1 - lo[i], max_new - count[i])
                new = g[lo[i]: lo[i] + take]
                if eos in new:
                    take = new.index(eos) + 1
                    new, done[row] = new[:take], True
                out[row] += new
                sums[row] += sum(lp[lo[i]: lo[i] + take])
                done[row] = done[row] or len(out[row]) >= max_new
                if count[i] or fresh:
                    self.stats.accepted.append(take)
                lengths[i] += a + 1
                count[i] += a + 1 - lo[i]
                last[i] = g[a]
            hidden = x.index_select(0, torch.tensor(picks, device=device))
        from decoders.search import length_norm

        hyps = []
        for b in range(batch):
            toks = out[b][: out[b].index(eos)] if eos in out[b] else out[b][:max_new]
            pen = length_norm(min(len(toks) + 1, max_new), opts.length_penalty)
            hyps.append([Hypothesis(toks, score=sums[b] / pen)])
        return hyps


@torch.no_grad()
def speculative_decode(decoder, memory, options) -> tuple[list[Hypothesis], SpecStats]:
    """Speculative greedy decoding with ``options.draft`` (or, without one, continuous-batching greedy); returns
    one Hypothesis per row and the stats."""
    from decoders.search import CTC_DRAFT_NEEDS_HYBRID, TokenFilter

    if isinstance(options.draft, str):
        raise ValueError(CTC_DRAFT_NEEDS_HYBRID)
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
