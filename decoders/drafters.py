"""Drafters for lossless speculative greedy decoding (``decoders.speculative``) and their training on a
frozen decoder.

- :class:`MedusaHeads` (Cai et al., 2024, "Medusa", §2.1.1 and §2.2 Medusa-1): K residual heads on the
  frozen decoder's last hidden state, head i predicting the token i+1 places after the next one;
  their drafts for the next round come out of this round's verification pass for free.
- :class:`EarlyExitDrafter` (Liu et al., 2024, "Kangaroo", §3.1-3.2): the decoder's first layers plus
  a small adapter and the shared LayerNorm + output projection; drafting stops early when every row's
  confidence drops below ``stop_below`` (Kangaroo's second early exit). Kangaroo's adapter is one
  attention layer; ours is a residual MLP, so the drafter needs no cache beyond the shallow layers
  it shares with the decoder (verification overwrites them).
- :class:`CopyDrafter` (Dumitru et al., 2024, "CopySpec", §3): find the last generated characters in a
  reference text of the same input (e.g. the verbatim hypothesis when decoding the subtitle) and
  propose what followed them. Token ids of the two heads differ, so it maps through text: the
  reference is decoded with its tokenizer, the continuation encoded with the target's.
  :class:`TokenCopyDrafter` copies token ids directly when both share a vocabulary (a hybrid model's
  CTC branch drafting its attention decoder).

- :class:`FallbackDrafter` chains two: rows the first leaves empty take the second's draft (copying, then
  Medusa heads where the decoder has departed from the reference and no suffix matches).

Each has ``k`` (the most tokens it proposes) and ``propose(ctx: DraftContext)``, returning a (rows, width)
tensor or one list of token ids per row.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from decoders.speculative import DraftContext, draft_lists, run_layers
from zoo.contract import Features, Hypothesis

__all__ = ["CopyDrafter", "EarlyExitDrafter", "FallbackDrafter", "MedusaHeads", "TokenCopyDrafter", "teacher_hidden",
           "train_drafter"]


class ResBlock(nn.Module):
    """Medusa's head block: x + SiLU(W x + b), W zero-initialised so a fresh head copies the decoder."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.silu(self.linear(x))


class MedusaHeads(nn.Module):
    """Medusa-1 heads on a frozen decoder: head i (0-based) predicts the token i+2 places after the
    hidden state's position (the decoder itself predicts i=-1). Each head: residual blocks + its own
    output projection initialised from the decoder's (Cai et al., 2024, §2.1.1)."""

    def __init__(self, decoder: nn.Module, heads: int = 4, layers: int = 1):
        super().__init__()
        d = decoder.dims
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        self.k, self.dim, self.vocab = heads, d.dim, d.vocab_size
        w = decoder.embed.weight if decoder.head is None else decoder.head.weight
        self.blocks = nn.ModuleList(nn.Sequential(*[ResBlock(d.dim) for _ in range(layers)]) for _ in range(heads))
        self.out = nn.ModuleList(nn.Linear(d.dim, d.vocab_size, bias=False) for _ in range(heads))
        with torch.no_grad():
            for lin in self.out:
                lin.weight.copy_(w)

    def forward(self, decoder: nn.Module, hidden: Tensor) -> Tensor:
        """hidden (..., dim) before the decoder's final LayerNorm -> logits (..., heads, vocab)."""
        h = decoder.ln(hidden)
        return torch.stack([out(block(h)) for block, out in zip(self.blocks, self.out)], -2)

    def stacked(self) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        """Every head's weights stacked, per block (K, dim, dim) and (K, dim), and the outputs (K, vocab, dim);
        cached until a weight changes."""
        key = tuple((p.data_ptr(), p._version) for p in self.parameters())
        if getattr(self, "_stacked", (None,))[0] != key:
            stack = lambda name, i: torch.stack([getattr(b[i].linear, name) for b in self.blocks])
            blocks = [(stack("weight", i), stack("bias", i)) for i in range(len(self.blocks[0]))]
            self._stacked = (key, blocks, torch.stack([o.weight for o in self.out]))
        return self._stacked[1], self._stacked[2]

    @torch.no_grad()
    def propose(self, ctx: DraftContext) -> Tensor:
        """The heads' argmax tokens (R, min(k, max_draft)): all heads in a few batched products per round
        (as ``forward``, only the summation order differs; 0.36 -> 0.20 ms at 8 rows, d=144, on the CPU)."""
        blocks, out = self.stacked()
        k = min(self.k, ctx.max_draft)
        x = ctx.decoder.ln(ctx.hidden).unsqueeze(-2).expand(-1, k, -1)        # (R, k, dim)
        for w, b in blocks:
            x = x + F.silu(torch.einsum("rkd,ked->rke", x, w[:k]) + b[:k])
        return torch.einsum("rkd,kvd->rkv", x, out[:k]).argmax(-1)

    def loss(self, decoder: nn.Module, memory, targets: dict[str, Tensor]) -> Tensor:
        hidden, labels, _ = teacher_hidden(decoder, memory, targets)
        logits = self(decoder, hidden[-1])                   # (B, L, K, V)
        losses = []
        for i in range(self.k):
            shifted = F.pad(labels[:, i + 1:], (0, i + 1), value=-100)  # head i at p predicts labels[p + i + 1]
            losses.append(F.cross_entropy(logits[:, :, i].flatten(0, 1).float(), shifted.flatten(), ignore_index=-100))
        return torch.stack(losses).mean()


class EarlyExitDrafter(nn.Module):
    """Kangaroo self-draft: the decoder's first ``exit_layer`` blocks + adapter + shared LN/projection."""

    def __init__(self, decoder: nn.Module, exit_layer: int = 1, k: int = 4, stop_below: float = 0.0):
        super().__init__()
        d = decoder.dims
        if not 1 <= exit_layer < d.layers:
            raise ValueError(f"exit_layer must lie in [1, {d.layers - 1}] for a {d.layers}-layer decoder, got {exit_layer}")
        self.exit_layer, self.k, self.stop_below = exit_layer, k, stop_below
        self.ln = nn.LayerNorm(d.dim, eps=d.eps)
        self.fc1, self.fc2 = nn.Linear(d.dim, d.dim), nn.Linear(d.dim, d.dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def adapt(self, x: Tensor) -> Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.ln(x))))

    @torch.no_grad()
    def propose(self, ctx: DraftContext) -> Tensor:
        dec, tok, out = ctx.decoder, ctx.last, []
        for j in range(min(self.k, ctx.max_draft)):
            x = run_layers(dec, tok[:, None], ctx.mem, ctx.cache, ctx.lengths[:, None] + j, self.exit_layer)
            probs = dec.logits(self.adapt(x[:, -1])).float().softmax(-1)
            conf, tok = probs.max(-1)
            out.append(tok)
            if bool((conf < self.stop_below).all()):
                break
        return torch.stack(out, 1) if out else ctx.last.new_zeros(ctx.last.shape[0], 0)

    def loss(self, decoder: nn.Module, memory, targets: dict[str, Tensor]) -> Tensor:
        """Kangaroo §3.2: the draft's cross-entropy against the full decoder's distribution, less that
        distribution's entropy (a constant), i.e. KL(full || draft): zero when the draft matches."""
        hidden, labels, final = teacher_hidden(decoder, memory, targets)
        draft = decoder.logits(self.adapt(hidden[self.exit_layer - 1])).float().log_softmax(-1)
        full = final.float().log_softmax(-1)
        return (full.exp() * (full - draft)).sum(-1)[labels != -100].mean()


class CopyDrafter:
    """CopySpec drafts from a reference text per row: the last ``max_match``..``min_match`` generated
    characters are searched in the reference (case-insensitively, from the last match on, then
    anywhere) and the text after them is encoded with ``tokenizer`` (the target head's)."""

    fold_case = True  # match case-insensitively (the subtitle re-cases the verbatim text)
    drafts_from_start = True  # nothing generated yet: the reference's start

    def __init__(self, references: Sequence[str], tokenizer, k: int = 8, min_match: int = 2, max_match: int = 12):
        if not 1 <= min_match <= max_match:
            raise ValueError(f"need 1 <= min_match <= max_match, got {min_match}, {max_match}")
        self.refs, self.tok, self.k = list(references), tokenizer, k
        self.min_match, self.max_match = min_match, max_match
        self.cursor = [0] * len(self.refs)

    @classmethod
    def from_hypotheses(cls, hyps: Sequence[Hypothesis], source_tokenizer, target_tokenizer, **kw) -> "CopyDrafter":
        """References from another head's hypotheses, decoded with that head's tokenizer."""
        return cls([source_tokenizer.decode(h.tokens) for h in hyps], target_tokenizer, **kw)

    def continuation(self, row: int, text: str) -> str:
        ref = self.refs[row]
        low, text = (ref.lower(), text.lower()) if self.fold_case else (ref, text)
        if not text:
            return ref
        for m in range(min(self.max_match, len(text)), self.min_match - 1, -1):
            suffix = text[-m:]
            at = low.find(suffix, self.cursor[row])
            at = low.find(suffix) if at < 0 else at
            if at >= 0:
                self.cursor[row] = at + m
                return ref[at + m: at + m + 4 * self.k]
        return ""

    def text(self, ids: list[int]) -> str:
        """Generated target ids -> the text matched against the reference."""
        return self.tok.decode(ids)

    def ids(self, text: str) -> list[int]:
        """A reference continuation -> target ids."""
        return self.tok.encode(text, strict=False)

    def propose(self, ctx: DraftContext) -> list[list[int]]:
        if len(self.refs) < int(ctx.rows.max()) + 1:
            raise ValueError(f"{type(self).__name__} has {len(self.refs)} references but the batch has more rows; "
                             "give one reference per row")
        width = min(self.k, ctx.max_draft)
        return [self.ids(self.continuation(row, self.text(ctx.generated[row])))[:width] for row in ctx.rows.tolist()]


class TokenCopyDrafter(CopyDrafter):
    """:class:`CopyDrafter` for a reference in the target decoder's own vocabulary (a hybrid model's CTC
    hypothesis drafting its attention decoder): token ids are matched directly (each id one character
    of a private string, case-sensitive), with no tokenizer round trip per row and round."""

    fold_case = False

    def __init__(self, references: Sequence[Sequence[int]], k: int = 8, min_match: int = 2, max_match: int = 12):
        super().__init__([self.text(list(r)) for r in references], None, k, min_match, max_match)

    @classmethod
    def from_hypotheses(cls, hyps: Sequence[Hypothesis], **kw) -> TokenCopyDrafter:
        return cls([h.tokens for h in hyps], **kw)

    def text(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))

    def ids(self, text: str) -> list[int]:
        return [ord(c) for c in text]


class FallbackDrafter:
    """Drafts of ``primary``; a row it leaves empty takes ``fallback``'s draft instead.

    A copy drafter has nothing to propose while the decoder's text has departed from the reference (no
    suffix of what it generated occurs there): on a 3,000-step hybrid, 29% of the rows of a verify round.
    Such a row gains one token per round and, at batch > 1, holds the whole batch back. Medusa heads read
    the decoder's own state, so they can draft there; the fallback runs only in rounds that hold such rows."""

    def __init__(self, primary, fallback):
        self.primary, self.fallback = primary, fallback
        self.k = max(primary.k, fallback.k)
        self.drafts_from_start = getattr(primary, "drafts_from_start", False)

    def propose(self, ctx: DraftContext) -> list[list[int]]:
        drafts = draft_lists(self.primary.propose(ctx))
        empty = [i for i, d in enumerate(drafts) if not d]
        if empty:
            extra = draft_lists(self.fallback.propose(ctx))
            for i in empty:
                drafts[i] = extra[i]
        return drafts


# --- training drafters on a frozen decoder ----------------------------------------------------------
def teacher_hidden(decoder, memory, targets: dict[str, Tensor]) -> tuple[list[Tensor], Tensor, Tensor]:
    """Teacher-forced hidden states after every block (pre-LN), labels and final logits, without gradient."""
    with torch.no_grad():
        inputs, labels = decoder.teacher_forcing(targets)
        mem = decoder.memory(memory)
        x = decoder.embed(inputs) * decoder.scale + decoder.pos[: inputs.shape[1]].to(decoder.embed.weight.dtype)
        hidden = []
        for i, block in enumerate(decoder.blocks):
            x = block(x, mem, None, i, 0)
            hidden.append(x)
        return hidden, labels, decoder.logits(x)


def train_drafter(drafter: nn.Module, decoder: nn.Module, batches: Iterable[tuple[Features, dict]], steps: int,
                  lr: float = 1e-3, progress: bool = False) -> list[float]:
    """Train ``drafter.loss`` on a frozen ``decoder`` (eval mode, no gradients); returns the losses.
    ``batches`` (a list or a re-iterable) is run over again and again: (memory, targets) pairs as the
    decoder's ``forward`` takes them. ``progress`` shows a bar with the running loss."""
    from tqdm.auto import tqdm

    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    params = [p for p in drafter.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    drafter.train()
    losses = []
    bar = tqdm(total=steps, desc="drafter", unit="step", disable=not progress)
    for _, (memory, targets) in zip(range(steps), forever(batches)):
        loss = drafter.loss(decoder, memory, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.update()
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}", refresh=False)
    bar.close()
    drafter.eval()
    return losses


def forever(batches: Iterable):
    while True:
        empty = True
        for item in batches:
            empty = False
            yield item
        if empty:
            raise ValueError("no training batches (a one-shot generator is spent after one pass: pass a list "
                             "or an object whose __iter__ starts over)")
