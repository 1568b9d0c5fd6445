"""X-Decoder-style generalized decoder (Zou et al., "Generalized Decoding for Pixel, Image, and
Language", CVPR 2023, §3 and microsoft/X-Decoder ``modeling/body/decoder/xdecoder.py``), built on
Mask2Former's masked attention (Cheng et al., CVPR 2022, §3.2).

One sequence of queries per image: ``Q`` latent (object) queries, one global "class" query, then
text queries -- caption tokens (causal) or the tokens of a referring phrase (grounding). Each layer
runs cross-attention to the image map, self-attention under X-Decoder's four rules
(:func:`attention_mask`), then an MLP (pre-LN here). The latent queries' cross-attention is masked by
the previous layer's mask predictions (``sigmoid < 0.5`` blocks a pixel; a query that would block
every pixel attends everywhere, as in Mask2Former). Outputs per layer (``predict``):

- masks ``einsum(mask_embed(q), mask_features)`` on the vision encoder's ``spatial`` map;
- grounding scores: cosine similarity x scale between ``class_embed(q)`` and the pooled phrase tokens;
- caption logits ``text @ caping_embed @ token_embedding.T`` (tied embeddings).

Because latent queries never see text, captioning decodes with a KV cache: the latent queries run
once, then each new token attends their cached keys and the cached earlier tokens (X-Decoder itself
re-runs the whole decoder for each of 50 steps). Decoding reuses ``decoders.search`` (greedy, beam,
diverse beam). Training: caption cross-entropy, plus, for grounding, Mask2Former's Hungarian matching
of the latent queries to every object mask of the image (BCE + dice cost; X-Decoder trains generic
segmentation beside referring), the matched masks' losses and a cross-entropy of the phrase scores
towards the query matched to the referred object, on every layer's prediction (deep supervision).
Given only the referred mask, it is matched to its lowest-cost query instead.

targets: ``tokens``/``lengths`` (caption) and/or ``ref_tokens``/``ref_lengths``/``mask`` (B, H, W), with
``ref_rows`` naming the batch rows they belong to when not every row has a referring expression, and
optionally every object's mask (``object_masks`` (B, K, H, W), ``object_counts``, ``ref_index``) for
X-Decoder's generic-segmentation matching (§3.3: Hungarian matching of latent queries to all objects).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from encoders.generic import sinusoids
from zoo.contract import Decoder, DecoderOutput, Features, select_rows
from zoo.registry import register_decoder

__all__ = ["XDecoder", "XDecoderDims", "attention_mask", "xdecoder"]


@dataclass(frozen=True)
class XDecoderDims:
    vocab_size: int
    dim: int = 128
    heads: int = 4
    layers: int = 3
    queries: int = 16              # latent (object) queries; the class query comes on top (X-Decoder: 100 + 1)
    memory_dim: int = 0            # channels of the encoder's spatial map; 0 = dim
    max_len: int = 32              # text positions (caption: bos + tokens)
    bos_id: int = 2
    eos_id: int = 3
    pad_id: int = 0
    ground_weight: float = 1.0
    mask_upsample: int = 1         # learned x2 / x4 upsampling of the mask features (a minimal pixel decoder)

    def __post_init__(self):
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")


def attention_mask(queries: int, text: int, task: str, device=None) -> Tensor:
    """(L, L) bool, True where row may attend column; L = queries + 1 (class) + text.

    X-Decoder's rules: latent queries never see text; object queries and the class query do not see
    each other; caption tokens see all latent queries and are causal; grounding tokens see all latent
    queries and each other.
    """
    if task not in ("caption", "ground"):
        raise ValueError(f"task must be 'caption' or 'ground', got {task!r}")
    q1, n = queries + 1, queries + 1 + text
    allow = torch.zeros(n, n, dtype=torch.bool, device=device)
    allow[:queries, :queries] = True
    allow[queries, queries] = True
    allow[q1:, :q1] = True
    allow[q1:, q1:] = torch.ones(text, text, dtype=torch.bool, device=device)
    if task == "caption":
        allow[q1:, q1:] = allow[q1:, q1:].tril()
    return allow


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None) -> Tensor:
    split = lambda t: rearrange(t, "b n (h d) -> b h n d", h=heads)
    o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return rearrange(o, "b h n d -> b n (h d)")


class Layer(nn.Module):
    """Cross-attention (masked for latent rows) -> self-attention (rule mask) -> MLP, pre-LN."""

    def __init__(self, d: XDecoderDims):
        super().__init__()
        self.heads = d.heads
        self.cross_ln, self.cross_q, self.cross_out = nn.LayerNorm(d.dim), nn.Linear(d.dim, d.dim), nn.Linear(d.dim, d.dim)
        self.cross_kv = nn.Linear(d.dim, 2 * d.dim)
        self.self_ln, self.qkv, self.self_out = nn.LayerNorm(d.dim), nn.Linear(d.dim, 3 * d.dim), nn.Linear(d.dim, d.dim)
        self.mlp_ln, self.fc1, self.fc2 = nn.LayerNorm(d.dim), nn.Linear(d.dim, 4 * d.dim), nn.Linear(4 * d.dim, d.dim)

    def cross(self, x: Tensor, mem_kv: tuple[Tensor, Tensor], mask: Tensor | None) -> Tensor:
        return x + self.cross_out(_attend(self.cross_q(self.cross_ln(x)), *mem_kv, self.heads, mask))

    def self_kv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.qkv(self.self_ln(x)).chunk(3, -1)

    def finish(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.self_out(_attend(q, k, v, self.heads, mask))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))


def _bce_dice(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-mask BCE (mean over pixels) and dice loss of mask logits against binary targets (broadcast)."""
    logits, target = torch.broadcast_tensors(logits, target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * target).sum((-2, -1)) + 1) / (prob.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    return bce, dice


class XDecoder(Decoder):
    label_keys = ("tokens", "lengths")

    def __init__(self, dims: XDecoderDims):
        super().__init__()
        self.dims = d = dims
        mem = d.memory_dim or d.dim
        self.query_feat = nn.Parameter(torch.randn(d.queries + 1, d.dim) * 0.02)   # latent + class queries
        self.input_proj = nn.Linear(mem, d.dim)
        self.mask_features = nn.Conv2d(mem, d.dim, 1)
        if d.mask_upsample not in (1, 2, 4):
            raise ValueError(f"mask_upsample must be 1, 2 or 4, got {d.mask_upsample}")
        # Mask2Former reads masks from a pixel decoder at 1/4 of the image; a tiny ViT's map is coarser, so a
        # transposed convolution recovers the detail its patch embeddings carry (identity when 1)
        self.mask_upsample = (nn.Identity() if d.mask_upsample == 1 else
                              nn.Sequential(nn.GELU(), nn.ConvTranspose2d(d.dim, d.dim, d.mask_upsample, d.mask_upsample)))
        self.embed = nn.Embedding(d.vocab_size, d.dim)
        nn.init.normal_(self.embed.weight, std=d.dim ** -0.5)
        self.text_pos = nn.Parameter(torch.randn(d.max_len, d.dim) * 0.01)             # pos_embed_caping
        self.layers = nn.ModuleList(Layer(d) for _ in range(d.layers))
        self.norm = nn.LayerNorm(d.dim)
        self.mask_embed = nn.Sequential(nn.Linear(d.dim, d.dim), nn.GELU(), nn.Linear(d.dim, d.dim))
        self.class_embed, self.lang_proj = nn.Linear(d.dim, d.dim), nn.Linear(d.dim, d.dim)
        self.caping_embed = nn.Linear(d.dim, d.dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # --- pieces ----------------------------------------------------------------------------------
    def _memory(self, memory: Features) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Memory tokens (B, h*w, dim), mask features (B, dim, H, W) and the token grid (h, w)."""
        if isinstance(memory, (list, tuple)):
            if len(memory) != 1:
                raise ValueError(f"xdecoder reads one vision encoder, got {len(memory)} sources")
            memory = memory[0]
        if memory.spatial is None or memory.spatial.dim() != 4:
            raise ValueError("xdecoder needs Features.spatial (B, D, H, W) from the vision encoder (e.g. timm_vision)")
        spatial = memory.spatial
        h, w = spatial.shape[-2:]
        pos = sinusoids(h * w, spatial.shape[1]).to(spatial)
        tokens = self.input_proj(rearrange(spatial, "b d h w -> b (h w) d") + pos)
        return tokens, self.mask_upsample(self.mask_features(spatial)), (h, w)

    def _text(self, tokens: Tensor, start: int = 0) -> Tensor:
        if start + tokens.shape[1] > self.dims.max_len:
            raise ValueError(f"{start + tokens.shape[1]} text tokens exceed max_len={self.dims.max_len}")
        return self.embed(tokens) + self.text_pos[start:start + tokens.shape[1]]

    def predict(self, x: Tensor, mask_feats: Tensor, text_lengths: Tensor | None = None) -> dict[str, Tensor]:
        """Masks (B, Q, h, w), grounding scores (B, Q) (when text rows are a phrase) and the normed rows."""
        q = self.dims.queries
        out = self.norm(x)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(out[:, :q]), mask_feats)
        pred = {"masks": masks, "out": out}
        if text_lengths is not None:
            text = out[:, q + 1:]
            valid = (torch.arange(text.shape[1], device=x.device)[None] < text_lengths[:, None]).to(text.dtype)
            phrase = F.normalize(self.lang_proj((text * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)), dim=-1)
            objects = F.normalize(self.class_embed(out[:, :q]), dim=-1)
            pred["scores"] = self.logit_scale.clamp(max=math.log(100.0)).exp() * torch.einsum("bqc,bc->bq", objects, phrase)
        return pred

    def _cross_mask(self, masks: Tensor, rows: int, grid: tuple[int, int]) -> Tensor:
        """(B, 1, rows, N) bool: latent rows attend where the previous masks say >= 0.5 (resized to the memory's
        ``grid`` as Mask2Former does); other rows everywhere."""
        if masks.shape[-2:] != grid:
            masks = F.interpolate(masks, size=grid, mode="bilinear", align_corners=False)
        allow = rearrange(masks.sigmoid() >= 0.5, "b q h w -> b q (h w)")
        allow = allow | ~allow.any(-1, keepdim=True)
        rest = allow.new_ones(allow.shape[0], rows - allow.shape[1], allow.shape[2])
        return torch.cat([allow, rest], 1)[:, None]

    def run(self, memory: Features, text: Tensor, task: str, text_lengths: Tensor | None = None) -> list[dict]:
        """Full pass over [latent queries, class query, text]; the predictions of the initial queries and every layer."""
        mem, mask_feats, grid = self._memory(memory)
        b, q = mem.shape[0], self.dims.queries
        x = torch.cat([self.query_feat.expand(b, -1, -1), self._text(text)], 1)
        rule = attention_mask(q, text.shape[1], task, x.device)
        if text_lengths is not None and task == "ground":  # padded phrase tokens are never attended
            pad = torch.arange(text.shape[1], device=x.device)[None] >= text_lengths[:, None]
            rule = rule[None] & ~torch.cat([pad.new_zeros(b, q + 1), pad], 1)[:, None, :]
            rule = rule[:, None]
        preds = [self.predict(x, mask_feats, text_lengths if task == "ground" else None)]
        for layer in self.layers:
            allow = self._cross_mask(preds[-1]["masks"], x.shape[1], grid)
            x = layer.cross(x, layer.cross_kv(mem).chunk(2, -1), allow)
            x = layer.finish(x, *layer.self_kv(x), rule)
            preds.append(self.predict(x, mask_feats, text_lengths if task == "ground" else None))
        return preds

    def caption_logits(self, out_text: Tensor) -> Tensor:
        return F.linear(self.caping_embed(out_text), self.embed.weight)

    # --- training ------------------------------------------------------------------------------
    def forward(self, memory: Features, targets: dict[str, Tensor]) -> DecoderOutput:
        d, losses, logits = self.dims, {}, None
        if "tokens" in targets:
            tokens, lengths = targets["tokens"].long(), targets["lengths"].long()
            inputs = torch.cat([tokens.new_full((tokens.shape[0], 1), d.bos_id), tokens], 1)
            steps = torch.arange(inputs.shape[1], device=tokens.device)[None]
            labels = torch.cat([tokens, tokens.new_full((tokens.shape[0], 1), d.pad_id)], 1)
            labels = labels.masked_fill(steps == lengths[:, None], d.eos_id).masked_fill(steps > lengths[:, None], -100)
            logits = self.caption_logits(self.run(memory, inputs, "caption")[-1]["out"][:, d.queries + 1:])
            losses["caption"] = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        if "ref_tokens" in targets and d.ground_weight > 0:
            losses["ground"] = d.ground_weight * self.grounding_loss(memory, targets)
        if not losses:
            raise KeyError(f"xdecoder targets need 'tokens'/'lengths' and/or 'ref_tokens'/'ref_lengths'/'mask'; "
                           f"got {sorted(targets)}")
        return DecoderOutput(sum(losses.values()), logits, {k: v.detach() for k, v in losses.items()})

    def grounding_loss(self, memory: Features, targets: dict[str, Tensor]) -> Tensor:
        """Deep-supervised grounding loss. With ``object_masks`` (B, K, H, W) and ``ref_index`` (B,), as X-Decoder
        trains generic segmentation beside referring: latent queries are Hungarian-matched to every object of
        the image (BCE + dice cost), matched masks are trained, and the phrase scores learn to pick the query
        matched to the referred object. Without them: the one target ``mask`` is matched to its lowest-cost
        query (BCE + dice - score probability)."""
        if "ref_rows" in targets:  # only these rows of the batch carry a referring expression
            memory = select_rows(memory, targets["ref_rows"])
        preds = self.run(memory, targets["ref_tokens"].long(), "ground", targets["ref_lengths"].long())
        if "object_masks" in targets:
            return sum(self._panoptic_loss(p, targets) for p in preds) / len(preds)
        target = targets["mask"].float()
        total = 0.0
        for p in preds:
            masks = F.interpolate(p["masks"], size=target.shape[-2:], mode="bilinear", align_corners=False)
            bce, dice = _bce_dice(masks, target[:, None])
            cost = bce + dice - p["scores"].softmax(-1)  # Mask2Former matching cost for one target
            j = cost.detach().argmin(1)[:, None]
            matched = bce.gather(1, j).mean() + dice.gather(1, j).mean()
            total = total + matched + F.cross_entropy(p["scores"], j.squeeze(1))
        return total / len(preds)

    def _panoptic_loss(self, pred: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
        """Hungarian matching on the mask logits' grid (targets area-averaged to it, as Mask2Former scores
        masks on a subsample of points); the loss is built for the matched pairs only."""
        from scipy.optimize import linear_sum_assignment

        masks, counts = pred["masks"], targets["object_counts"].long()
        objects = F.adaptive_avg_pool2d(targets["object_masks"].float(), masks.shape[-2:])      # (B, K, h, w)
        with torch.no_grad():
            bce, dice = _bce_dice(masks[:, :, None], objects[:, None])                        # (B, Q, K)
            cost = (bce + dice).cpu()
        queries = []  # per row, the query matched to each of its objects, in object order
        for row, n in enumerate(counts.tolist()):
            qi, ki = linear_sum_assignment(cost[row, :, :n].numpy())
            queries.append(torch.as_tensor(qi[ki.argsort()], device=masks.device))
        row_index = torch.arange(len(queries), device=masks.device).repeat_interleave(counts.to(masks.device))
        object_index = torch.cat([torch.arange(len(q), device=masks.device) for q in queries])
        query_index = torch.cat(queries)
        bce, dice = _bce_dice(masks[row_index, query_index], objects[row_index, object_index])
        chosen = torch.stack([q[int(r)] for q, r in zip(queries, targets["ref_index"])])  # the referred object's query
        return bce.mean() + dice.mean() + F.cross_entropy(pred["scores"], chosen)

    # --- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def ground(self, memory: Features, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The best query's mask logits (B, h, w) and the grounding probabilities over queries (B, Q)."""
        p = self.run(memory, tokens.long(), "ground", lengths.long())[-1]
        best = p["scores"].argmax(-1)
        return p["masks"][torch.arange(len(best)), best], p["scores"].softmax(-1)

    def state(self, memory: Features, max_tokens: int, use_cache: bool = True, compile: bool = False) -> XState:
        if compile:
            raise ValueError("xdecoder has no compiled decoding; leave DecodingOptions.compile False")
        return XState(self, memory, use_cache)

    @torch.no_grad()
    def decode(self, memory: Features, options: Any = None):
        """Caption decoding through ``decoders.search`` (greedy / beam / diverse beam, n-best)."""
        from decoders.search import DecodingOptions, decode

        return decode(self, memory, options or DecodingOptions(max_len=self.dims.max_len - 1))


class XState:
    """Caption decoding state: latent-query keys/values per layer run once; text keys/values cached per row."""

    can_shrink = True

    def __init__(self, dec: XDecoder, memory: Features, use_cache: bool):
        self.dec, self.memory, self.use_cache = dec, memory, use_cache
        mem, mask_feats, grid = dec._memory(memory)
        x = dec.query_feat.expand(mem.shape[0], -1, -1)
        rule = attention_mask(dec.dims.queries, 0, "caption", x.device)
        masks = dec.predict(x, mask_feats)["masks"]
        self.mem_kv, self.latent_kv, self.text_kv = [], [], []
        for layer in dec.layers:
            kv = layer.cross_kv(mem).chunk(2, -1)
            x = layer.cross(x, kv, dec._cross_mask(masks, x.shape[1], grid))
            q, k, v = layer.self_kv(x)
            self.mem_kv.append(kv)
            self.latent_kv.append((k, v))
            x = layer.finish(x, q, k, v, rule)
            masks = dec.predict(x, mask_feats)["masks"]
        self.history: Tensor | None = None
        self.rows = torch.arange(mem.shape[0], device=mem.device)  # the memory row of every decoding row
        self.length = 0

    @property
    def utterances(self) -> int:
        return self.mem_kv[0][0].shape[0]

    def step(self, tokens: Tensor) -> Tensor:
        dec = self.dec
        if not self.use_cache:  # reference path: the full decoder over every token so far
            self.history = tokens if self.history is None else torch.cat([self.history, tokens], 1)
            memory = self.memory.select(self.rows)
            return dec.caption_logits(dec.run(memory, self.history, "caption")[-1]["out"][:, -1])
        x, n = dec._text(tokens, self.length), tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        for i, layer in enumerate(dec.layers):
            x = layer.cross(x, self.mem_kv[i], None)
            q, k, v = layer.self_kv(x)
            if len(self.text_kv) > i:
                k_text, v_text = (torch.cat([a, b], 1) for a, b in zip(self.text_kv[i], (k, v)))
                self.text_kv[i] = (k_text, v_text)
            else:
                k_text, v_text = k, v
                self.text_kv.append((k, v))
            keys = torch.cat([self.latent_kv[i][0], k_text], 1)
            values = torch.cat([self.latent_kv[i][1], v_text], 1)
            allow = torch.cat([causal.new_ones(n, self.latent_kv[i][0].shape[1] + self.length), causal], 1)
            x = layer.finish(x, q, keys, values, allow)
        self.length += n
        return dec.caption_logits(dec.norm(x[:, -1]))

    def select(self, rows: Tensor, utts: Tensor | None = None) -> None:
        """Keep ``rows`` of the current rows (beams are rows: every per-row tensor is index-selected)."""
        pick = lambda t: t.index_select(0, rows)
        self.mem_kv = [(pick(k), pick(v)) for k, v in self.mem_kv]
        self.latent_kv = [(pick(k), pick(v)) for k, v in self.latent_kv]
        self.text_kv = [(pick(k), pick(v)) for k, v in self.text_kv]
        if self.history is not None:
            self.history = pick(self.history)
        self.rows = self.rows.index_select(0, rows)


@register_decoder(task="captioning", modality="image")
def xdecoder(vocab_size: int, dim: int = 128, heads: int = 4, layers: int = 3, queries: int = 16, memory_dim: int = 0,
             max_len: int = 32, bos_id: int = 2, eos_id: int = 3, pad_id: int = 0, ground_weight: float = 1.0,
             mask_upsample: int = 1) -> XDecoder:
    """X-Decoder: latent + text queries in one sequence, masked cross-attention, masks/grounding/captions."""
    return XDecoder(XDecoderDims(vocab_size, dim, heads, layers, queries, memory_dim, max_len, bos_id, eos_id, pad_id,
                                 ground_weight, mask_upsample))
