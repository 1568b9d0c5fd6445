"""Decoding strategies for autoregressive decoders, shaped after openai/whisper ``decoding.py``: a
frozen :class:`DecodingOptions` and small strategy classes that drive a decoder *state*
(``step(tokens) -> logits`` of the last position, ``select(rows, utts)`` to reorder beams and drop
finished utterances; see ``decoders.transformer_decoder.DecoderState``).

- :class:`GreedySearch`: argmax (or sampling at ``temperature > 0``); rows that emit EOS leave the
  batch, so later steps run on fewer rows. ``vocab_screen=True`` (CPU) finds the same argmax through
  an int8 screen of the vocabulary plus fp32 rescoring (``decoders.vocab_screen``); the scores'
  log-normaliser then comes from the int8 logits (off by at most the screen's error bound).
- :class:`BeamSearch`: batched over utterances x beams. Each step takes the top ``2k`` of an
  utterance's ``k x V`` continuations; EOS candidates among the first ``k`` become finished
  hypotheses, the best ``k`` others keep running (fairseq; transformers v5 ``_beam_search``). An
  utterance stops once ``k`` hypotheses finished (``early_stopping=True``, whisper / fairseq) or,
  with ``early_stopping=False``, once its best running score, normalised at the current length,
  cannot beat its worst finished one (transformers' heuristic); everything stops at ``max_len``.
- Diverse beam search (Vijayakumar et al., 2018, "Diverse Beam Search", §4): ``groups`` > 1 splits
  the beams into groups decoded in turn at each step; a group's scores are lowered by
  ``diversity`` times the number of earlier groups that chose the same token at this step
  (Hamming diversity), and each group keeps its own finished hypotheses.

Greedy search with ``max_active`` (continuous batching: a finished row's place goes to the next
utterance) and speculative greedy (``draft``) run in ``decoders.speculative``.

Scores are summed token log-probabilities, log-softmax taken *before* suppression (as transformers'
logits processors do), normalised by the length penalty: ``None`` divides by the number of
generated tokens, EOS included (whisper's default; transformers' ``length_penalty=1.0``); a float
alpha divides by GNMT's ``((5 + length) / 6) ** alpha`` (Wu et al., 2016, §7).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from zoo.contract import Hypothesis

__all__ = ["BeamSearch", "DecodingOptions", "GreedySearch", "PrefixScorer", "TokenFilter", "decode",
           "unresolved_draft"]


@dataclass(frozen=True)
class DecodingOptions:
    beam_size: int = 1                     # 1 = greedy (or sampling); > 1 = beam search
    max_len: int | None = None             # most generated tokens, EOS included; None = what max_len leaves
    min_len: int = 0                       # EOS is suppressed until this many tokens were generated
    length_penalty: float | None = None    # None: sum logprob / length; alpha: GNMT ((5 + length) / 6) ** alpha
    early_stopping: bool = True            # beam: stop after beam_size finished (False: transformers' heuristic)
    n_best: int = 1                        # hypotheses returned per row (a list per row when > 1)
    temperature: float = 0.0               # 0 = argmax; > 0 samples (beam_size must be 1)
    seed: int | None = None                # sampling seed
    suppress_tokens: tuple[int, ...] = ()  # never generated
    suppress_at_start: tuple[int, ...] = ()  # not generated first (whisper's suppress_blank)
    prefix: tuple[int, ...] = ()           # forced after bos, e.g. whisper's language, task, notimestamps
    use_cache: bool = True                 # False recomputes every position each step (reference path)
    compile: bool = False                  # fixed shapes + torch.compile of the one-token step (CUDA graphs)
    groups: int = 1                        # diverse beam search: beam groups
    diversity: float = 0.0                 # Hamming diversity strength, must be > 0 when groups > 1
    ctc_weight: float = 0.0                # joint CTC/attention scoring (ctc_attention decoders)
    draft: Any = None                      # a drafter: speculative greedy (decoders.speculative); "ctc": a
                                           # ctc_attention decoder's own CTC hypothesis (decoders.hybrid); another
                                           # head's name: its hypothesis, copied (ZooModel.generate)
    draft_schedule: str = "constant"       # draft length per row: the drafter's k, or "heuristic" (+2 / -1)
    vocab_screen: bool = False             # greedy on CPU: exact argmax via an int8 screen (decoders.vocab_screen)
    max_active: int | None = None          # greedy: continuous batching, at most this many rows decoded at once

    def __post_init__(self):
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not 1 <= self.n_best <= self.beam_size:
            raise ValueError(f"n_best={self.n_best} must lie in [1, beam_size={self.beam_size}]; raise beam_size")
        if self.max_len is not None and self.max_len < 1:
            raise ValueError(f"max_len must be >= 1 generated token, got {self.max_len}")
        if self.temperature < 0 or (self.temperature > 0 and self.beam_size > 1):
            raise ValueError(f"temperature={self.temperature} needs beam_size=1 and must be >= 0")
        if self.groups < 1 or self.beam_size % self.groups:
            raise ValueError(f"groups={self.groups} must divide beam_size={self.beam_size}")
        if self.groups > 1 and self.diversity <= 0:
            raise ValueError("groups > 1 needs diversity > 0 (with 0 the groups are plain beam search); "
                             "set e.g. diversity=0.5")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must lie in [0, 1], got {self.ctc_weight}")
        if self.draft_schedule not in ("constant", "heuristic"):
            raise ValueError(f"draft_schedule must be 'constant' or 'heuristic', got {self.draft_schedule!r}")
        if self.vocab_screen and (self.beam_size > 1 or self.temperature > 0 or self.draft is not None):
            raise ValueError("vocab_screen speeds up plain greedy argmax only: set beam_size=1, temperature=0 "
                             "and no draft, or vocab_screen=False")
        if self.max_active is not None and (self.max_active < 1 or self.beam_size > 1 or self.temperature > 0
                                            or self.compile or not self.use_cache or self.vocab_screen
                                            or self.ctc_weight > 0):
            raise ValueError(f"max_active={self.max_active} (continuous batching) is for cached greedy search: set it "
                             ">= 1 with beam_size=1, temperature=0, ctc_weight=0, compile=False, use_cache=True, "
                             "vocab_screen=False, or max_active=None")
        if self.draft is not None:  # speculative greedy (decoders.speculative): lossless only for plain argmax
            if not isinstance(self.draft, str) and not callable(getattr(self.draft, "propose", None)):
                raise ValueError(f"draft must be a drafter with propose(ctx) (decoders.drafters: MedusaHeads, "
                                 f"EarlyExitDrafter, CopyDrafter), 'ctc' or another head's name, got "
                                 f"{type(self.draft).__name__}")
            if self.beam_size > 1 or self.temperature > 0 or self.compile or not self.use_cache or self.ctc_weight > 0:
                raise ValueError("draft (speculative decoding) is greedy only: set beam_size=1, temperature=0, "
                                 "ctc_weight=0, compile=False, use_cache=True")


CTC_DRAFT_NEEDS_HYBRID = ("draft='ctc' copies drafts from a CTC branch: decode with a ctc_attention decoder "
                          "(decoders.hybrid), or pass a drafter (decoders.drafters)")


def unresolved_draft(draft: str) -> str:
    """Why a decoder alone cannot draft from ``draft``, a name (the decoders resolve only 'ctc', the hybrid's)."""
    if draft == "ctc":
        return CTC_DRAFT_NEEDS_HYBRID
    return (f"draft={draft!r} names a head to copy drafts from; a decoder alone has no other head: decode through the "
            f"model, ZooModel.generate(batch, options={{<this head>: DecodingOptions(draft={draft!r})}}), which "
            "decodes that head first")


def length_norm(length: int, penalty: float | None) -> float:
    return float(length) if penalty is None else ((5.0 + length) / 6.0) ** penalty


class TokenFilter:
    """Suppression as one indexed write per step: always-suppressed ids, ids suppressed at the
    first step, and EOS before ``min_len``. Works on log-probabilities in place."""

    def __init__(self, options: DecodingOptions, eos_id: int, vocab_size: int, device):
        def index(ids):
            bad = [i for i in ids if not 0 <= i < vocab_size]
            if bad:
                raise ValueError(f"suppressed token ids {bad} lie outside the vocabulary [0, {vocab_size})")
            return torch.tensor(sorted(set(ids)), dtype=torch.long, device=device)

        base = tuple(options.suppress_tokens)
        self.always = index(base)
        self.first = index(base + tuple(options.suppress_at_start))
        self.early = index(base + (eos_id,))
        self.first_early = index(base + tuple(options.suppress_at_start) + (eos_id,))
        self.min_len = options.min_len

    def __call__(self, logp: Tensor, step: int) -> Tensor:
        early = step < self.min_len
        ids = (self.first_early if early else self.first) if step == 0 else (self.early if early else self.always)
        if ids.numel():
            logp[:, ids] = float("-inf")
        return logp


class PrefixScorer(Protocol):
    """An extra scorer fused into beam search (e.g. the CTC prefix scorer of ``decoders.hybrid``)."""

    def joint(self, logp: Tensor, beam_size: int) -> Tensor:
        """Attention log-probs (N, V) -> joint scores (N, V), -inf outside the scorer's candidates."""

    def select(self, rows: Tensor, tokens: Tensor, utts: Tensor | None) -> None:
        """New rows continue old ``rows`` with ``tokens``; ``utts`` keeps a subset of utterances."""


class GreedySearch:
    """Argmax (or temperature sampling) with per-row EOS: finished rows leave the active batch."""

    def __init__(self, options: DecodingOptions, eos_id: int, token_filter: TokenFilter):
        self.options, self.eos, self.filter = options, eos_id, token_filter

    def run(self, state, prefix: Tensor, max_new: int) -> list[list[Hypothesis]]:
        opts, eos = self.options, self.eos
        batch, device = prefix.shape[0], prefix.device
        out = torch.full((batch, max_new), eos, dtype=torch.long, device=device)
        lengths = torch.full((batch,), max_new, dtype=torch.long)
        sums = torch.zeros(batch, device=device)
        active = torch.arange(batch, device=device)  # original row of each current row
        finished = torch.zeros(batch, dtype=torch.bool, device=device)  # only used under fixed shapes
        gen = torch.Generator(device).manual_seed(opts.seed) if opts.seed is not None else None
        tokens = prefix
        screen = getattr(state, "vocab_screen", lambda: None)() if opts.vocab_screen else None
        for t in range(max_new):
            if screen is not None:  # the fp32 argmax and its logit; the normaliser from int8 logits
                h = state.step(tokens, normed=True)
                approx, bound = screen.approx(h)
                lse = approx.logsumexp(-1)
                nxt, logit = screen.argmax(h, self.filter(approx, t), bound)
                lp = logit - lse
            else:
                logp = self.filter(state.step(tokens).float().log_softmax(-1), t)
                if opts.temperature > 0:
                    nxt = torch.multinomial((logp / opts.temperature).softmax(-1), 1, generator=gen).squeeze(1)
                else:
                    nxt = logp.argmax(-1)
                lp = logp.gather(1, nxt[:, None]).squeeze(1)
            if not state.can_shrink:
                nxt, lp = nxt.masked_fill(finished, eos), lp.masked_fill(finished, 0.0)
            out[active, t] = nxt
            sums[active] += lp
            ended = nxt == eos
            if not state.can_shrink:
                ended, finished = ended & ~finished, finished | ended
            if ended.any():
                lengths[active[ended].cpu()] = t
                if state.can_shrink:
                    keep = (~ended).nonzero().squeeze(1)
                    if keep.numel() == 0:
                        break
                    active, nxt = active[keep], nxt[keep]
                    state.select(keep, keep)
                elif bool(finished.all()):
                    break
            tokens = nxt[:, None]
        rows, sums = out.tolist(), sums.tolist()
        pen = [length_norm(min(int(n) + 1, max_new), opts.length_penalty) for n in lengths]
        return [[Hypothesis(rows[b][: int(lengths[b])], score=sums[b] / pen[b])] for b in range(batch)]


class BeamSearch:
    """Batched beam search (diverse when ``groups > 1``) with optional fused prefix scorer."""

    def __init__(self, options: DecodingOptions, eos_id: int, token_filter: TokenFilter,
                 scorer: PrefixScorer | None = None):
        self.options, self.eos, self.filter, self.scorer = options, eos_id, token_filter, scorer

    def run(self, state, prefix: Tensor, max_new: int) -> list[list[Hypothesis]]:
        opts, eos = self.options, self.eos
        k, groups = opts.beam_size, opts.groups
        kg = k // groups
        batch, device = prefix.shape[0], prefix.device
        orig = list(range(batch))                          # original utterance of each live utterance
        finals = [[[] for _ in range(groups)] for _ in range(batch)]  # (score, tokens) per utt and group
        closed = [[False] * groups for _ in range(batch)]
        running = torch.zeros(batch, 1, device=device)     # (B, rows per utterance)
        hist = prefix.new_zeros(batch, 0)                   # generated tokens of every row
        tokens = prefix
        first = torch.zeros(1, dtype=torch.long, device=device)  # step 0: one row per utterance
        group_rows = [torch.arange(g * kg, (g + 1) * kg, device=device) for g in range(groups)]
        for t in range(max_new):
            last = t == max_new - 1
            utts, per = running.shape
            logp = self.filter(state.step(tokens).float().log_softmax(-1), t)
            if self.scorer is not None:
                logp = self.scorer.joint(logp, k)
            vocab = logp.shape[-1]
            if 2 * kg > per * vocab:
                raise ValueError(f"beam_size={k} needs a vocabulary of at least {2 * kg} tokens")
            logp = logp.view(utts, per, vocab)
            counts = logp.new_zeros(utts, vocab) if groups > 1 else None
            live = torch.tensor([[not c for c in closed[u]] for u in orig], device=device)
            new_scores, new_beams, new_toks, found = [], [], [], []
            for g in range(groups):
                src = first if per == 1 else group_rows[g]
                acc = logp[:, src] + running[:, src, None]
                if counts is not None and g > 0:
                    acc = acc - opts.diversity * counts[:, None, :]
                top, idx = acc.reshape(utts, -1).topk(2 * kg)
                beam, tok = src[idx // vocab], idx % vocab
                ends = (tok == eos) | last
                fin = ends[:, :kg] & live[:, g:g + 1]
                found.append((g, fin, top, beam, tok))
                score, sel = top.masked_fill(ends, float("-inf")).topk(kg)
                new_scores.append(score)
                new_beams.append(beam.gather(1, sel))
                new_toks.append(tok.gather(1, sel))
                if counts is not None:  # tokens this group chose at this step: its running beams and EOS endings
                    counts.scatter_add_(1, new_toks[-1], torch.ones_like(new_toks[-1], dtype=counts.dtype))
                    counts[:, eos] += (fin & (tok[:, :kg] == eos)).sum(1).to(counts.dtype)
            running, beams, toks = (torch.cat(x, 1) for x in (new_scores, new_beams, new_toks))
            self._finalize(found, hist, per, t, orig, finals, kg)
            done = self._close(running, t, orig, finals, closed, kg, last)
            if all(done):
                break
            rows = (torch.arange(utts, device=device)[:, None] * per + beams).view(-1)
            keep_u = None
            if any(done) and state.can_shrink:
                keep_u = torch.tensor([u for u, d in enumerate(done) if not d], device=device)
                rows = rows.view(utts, k)[keep_u].view(-1)
                running, toks = running[keep_u], toks[keep_u]
                orig = [orig[u] for u in keep_u.tolist()]
            hist = torch.cat([hist[rows], toks.reshape(-1, 1)], 1)
            state.select(rows, keep_u)
            if self.scorer is not None:
                self.scorer.select(rows, toks.reshape(-1), keep_u)
            tokens = toks.reshape(-1, 1)
        results = []
        for per_group in finals:
            merged = sorted((h for grp in per_group for h in grp), key=lambda h: -h[0])
            results.append([Hypothesis(tokens, score=s) for s, tokens in merged[: opts.n_best]])
        return results

    def _finalize(self, found, hist, per, t, orig, finals, kg) -> None:
        """Move EOS candidates among a group's first k (all of them at max_len) to its finished list."""
        if not any(bool(fin.any()) for _, fin, *_ in found):
            return
        rows = hist.tolist()
        norm = length_norm(t + 1, self.options.length_penalty)
        for g, fin, top, beam, tok in found:
            for u, j in fin.nonzero().tolist():
                seq = rows[u * per + int(beam[u, j])]
                last_tok = int(tok[u, j])
                seq = seq + ([] if last_tok == self.eos else [last_tok])
                pool = finals[orig[u]][g]
                pool.append((float(top[u, j]) / norm, seq))
                pool.sort(key=lambda h: -h[0])
                del pool[kg:]

    def _close(self, running, t, orig, finals, closed, kg, last) -> list[bool]:
        """Close groups that cannot improve; an utterance is done once all its groups are closed."""
        groups = self.options.groups
        best = None
        for u, o in enumerate(orig):
            for g in range(groups):
                if closed[o][g] or last:
                    closed[o][g] = True
                    continue
                pool = finals[o][g]
                if len(pool) < kg:
                    continue
                if self.options.early_stopping:
                    closed[o][g] = True
                    continue
                if best is None:
                    best = running.view(running.shape[0], groups, kg)[:, :, 0].tolist()
                if best[u][g] / length_norm(t + 1, self.options.length_penalty) <= pool[-1][0]:
                    closed[o][g] = True
        return [all(closed[o]) for o in orig]


@torch.no_grad()
def decode(decoder, memory, options: DecodingOptions | None = None, scorer: PrefixScorer | None = None):
    """Decode every row of ``memory`` with ``decoder`` (a ``TransformerDecoder``).

    Returns one :class:`Hypothesis` per row, or a list of ``n_best`` per row when ``n_best > 1``;
    tokens exclude bos, the forced prefix and EOS.
    """
    options = DecodingOptions() if options is None else options
    if not isinstance(options, DecodingOptions):
        raise TypeError(f"options must be decoders.search.DecodingOptions, got {type(options).__name__}")
    if isinstance(options.draft, str):
        raise ValueError(unresolved_draft(options.draft))
    if options.ctc_weight > 0 and scorer is None:
        raise ValueError("ctc_weight > 0 needs a decoder with a CTC branch (ctc_attention); "
                         "this decoder has none, so leave ctc_weight at 0")
    d = decoder.dims
    prefix = (d.bos_id, *options.prefix)
    max_new = options.max_len if options.max_len is not None else d.max_len - len(prefix)
    if max_new < 1 or len(prefix) + max_new > d.max_len:
        raise ValueError(f"prefix of {len(prefix)} tokens + max_len={max_new} exceeds the decoder's "
                         f"max_len={d.max_len}; lower DecodingOptions.max_len")
    state = decoder.state(memory, len(prefix) + max_new, options.use_cache, options.compile)
    device = decoder.embed.weight.device
    prefix_t = torch.tensor(prefix, dtype=torch.long, device=device).expand(state.utterances, -1)
    token_filter = TokenFilter(options, d.eos_id, d.vocab_size, device)
    if (options.draft is not None or options.max_active is not None) and scorer is None:
        from decoders.speculative import SpeculativeGreedy

        strategy = SpeculativeGreedy(options, d.eos_id, token_filter, options.draft)
    elif options.beam_size == 1 and scorer is None:
        strategy = GreedySearch(options, d.eos_id, token_filter)
    else:
        strategy = BeamSearch(options, d.eos_id, token_filter, scorer)
    hyps = strategy.run(state, prefix_t, max_new)
    return [h[0] for h in hyps] if options.n_best == 1 else hyps
