"""Retrieval heads: map brain features into the embedding space of a frozen stimulus encoder.

Losses (all on L2-normalised embeddings unless noted; ``targets['embedding']`` is the stimulus's
frozen-encoder embedding):

* ``softclip`` - MindEye's soft-CLIP (Scotti et al., NeurIPS 2023, §3.2): cross-entropy of the
  brain-to-target logits against the softmax of the target-to-target logits, both directions.
* ``bimixco``  - BiMixCo (ibid.): MixCo's soft-label InfoNCE on inputs the encoder mixed, for the
  first ``mixup_pct`` of training, then soft-CLIP. ``progress`` (fraction of training done) is a
  non-persistent buffer the training loop sets (:func:`set_progress`).
* ``infonce``  - plain symmetric InfoNCE (CLIP, Radford et al., 2021, §2.3).
* ``mse``      - regression onto the target embedding (unnormalised).
``mse_weight`` adds MindBridge's MSE term (Wang et al., CVPR 2024, §3.3) to any contrastive loss.

:class:`VoxelCycleHead` - MindBridge's cycle (§3.3): per-subject builders map the adapter output
e_a back to voxels (reconstruction MSE) and to a random other subject b, whose adapter re-encodes
the synthetic voxels; ``MSE(e_a, embedder_b(builder_b(e_a)))``.

:class:`SegmentClipHead` - Défossez et al. (Nat. Mach. Intell. 2023, Methods "Clip loss"): the
score of estimate i for candidate j is <est_i, cand_j> / ||cand_j|| over the flattened
(time x feature) segment, then cross-entropy against the diagonal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from zoo.contract import Decoder, DecoderOutput, Features
from zoo.registry import register_decoder

LOSSES = ("softclip", "bimixco", "infonce", "mse")


# --- losses -------------------------------------------------------------------------------------
def soft_clip_loss(preds: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """MindEye soft-CLIP on (B, D) normalised embeddings."""
    target_logits = targets @ targets.T / temperature
    logits = preds @ targets.T / temperature
    soft = target_logits.softmax(-1)
    forward = -(logits.log_softmax(-1) * soft).sum(-1).mean()
    backward = -(logits.T.log_softmax(-1) * soft).sum(-1).mean()
    return (forward + backward) / 2


def info_nce(preds: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: row i's positive is column i."""
    logits = preds @ targets.T / temperature
    labels = torch.arange(len(preds), device=preds.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def mixco_nce(preds: Tensor, targets: Tensor, temperature: float, perm: Tensor, betas: Tensor) -> Tensor:
    """MixCo soft-label InfoNCE: mixed row i's label is betas[i] on i and 1 - betas[i] on perm[i]."""
    logits = preds @ targets.T / temperature
    rows = torch.arange(len(preds), device=preds.device)
    probs = torch.zeros_like(logits)
    probs[rows, rows] = betas.to(logits)
    probs = probs.index_put((rows, perm), (1 - betas).to(logits), accumulate=True)
    forward = -(logits.log_softmax(-1) * probs).sum(-1).mean()
    backward = -(logits.T.log_softmax(-1) * probs.T).sum(-1).mean()
    return (forward + backward) / 2


def clip_loss(estimates: Tensor, candidates: Tensor) -> Tensor:
    """Défossez et al.'s CLIP loss: scores normalised by the candidate norm only, CE against arange.

    estimates, candidates: (B, ...) with matching trailing shapes; candidate j is estimate j's positive.
    """
    est, cand = estimates.flatten(1), candidates.flatten(1)
    scores = est @ (cand / cand.norm(dim=1, keepdim=True).clamp_min(1e-8)).T
    return F.cross_entropy(scores, torch.arange(len(est), device=est.device))


def set_progress(model: nn.Module, fraction: float) -> None:
    """Tell every module with a ``progress`` buffer (BiMixCo schedule) how far training has come."""
    for module in model.modules():
        progress = getattr(module, "progress", None)
        if isinstance(progress, Tensor):
            progress.fill_(float(fraction))


def _target(targets: dict[str, Tensor], key: str, head: str) -> Tensor:
    if key not in targets:
        raise KeyError(f"the {head} head needs targets['{key}']; got keys {sorted(targets)}")
    return targets[key]


# --- heads --------------------------------------------------------------------------------------
class RetrievalHead(Decoder):
    """Projector into the target space + a loss: MindEye2's ``clip_proj`` MLP (LayerNorm-GELU-Linear, width
    ``proj_hidden``), a single Linear (``proj_hidden`` <= 0) or none (``projector=False``)."""

    label_keys = ("embedding",)

    def __init__(self, in_dim: int, embed_dim: int, loss: str = "softclip", temperature: float = 0.05,
                 mix_temperature: float = 0.05, mixup_pct: float = 0.33, mse_weight: float = 0.0,
                 proj_hidden: int = 512, projector: bool = True):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown retrieval loss {loss!r}; choose from {LOSSES}")
        if not projector and in_dim != embed_dim:
            raise ValueError(f"projector=False needs in_dim == embed_dim, got {in_dim} and {embed_dim}")
        self.loss_kind, self.temperature, self.mix_temperature = loss, temperature, mix_temperature
        self.mixup_pct, self.mse_weight, self.in_dim = mixup_pct, mse_weight, in_dim
        if not projector:
            self.proj = nn.Identity()
        elif proj_hidden <= 0:
            self.proj = nn.Linear(in_dim, embed_dim)
        else:
            self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.GELU(), nn.Linear(in_dim, proj_hidden),
                                      nn.LayerNorm(proj_hidden), nn.GELU(), nn.Linear(proj_hidden, embed_dim))
        self.register_buffer("progress", torch.zeros(()), persistent=False)

    def embed(self, memory: Features) -> Tensor:
        flat = memory.x.flatten(1)
        if flat.shape[1] != self.in_dim:
            raise ValueError(f"retrieval head expects {self.in_dim} features per row (tokens x dim), got "
                             f"{flat.shape[1]}; set in_dim to the encoder's tokens * out_dim")
        return self.proj(flat)

    def mixing(self) -> bool:
        return self.loss_kind == "bimixco" and self.training and float(self.progress) < self.mixup_pct

    def forward(self, memory: Features, targets: dict[str, Tensor]) -> DecoderOutput:
        z = self.embed(memory)
        target = _target(targets, "embedding", "retrieval").flatten(1).to(z)
        if target.shape != z.shape:
            raise ValueError(f"target embedding has shape {tuple(target.shape)}, predictions {tuple(z.shape)}; "
                             "set embed_dim to the frozen stimulus encoder's dimension")
        mix = getattr(memory, "mix", None)
        if mix is not None:  # the encoder mixed its inputs: regress onto the mixed targets too
            mixed_target = mix.betas[:, None].to(z) * target + (1 - mix.betas[:, None].to(z)) * target[mix.perm]
        else:
            mixed_target = target
        p, t = F.normalize(z, dim=-1), F.normalize(target, dim=-1)
        if self.loss_kind == "mse":
            loss = F.mse_loss(z, mixed_target)
        elif self.mixing():
            if mix is None or mix.perm.shape[0] != z.shape[0]:
                raise ValueError("BiMixCo is in its mixing phase but the encoder did not mix this batch: give the "
                                 "encoder the same mixup_pct as the head, label every row, and call set_progress")
            loss = mixco_nce(p, t, self.mix_temperature, mix.perm, mix.betas)
        elif self.loss_kind == "infonce":
            loss = info_nce(p, t, self.temperature)
        else:
            loss = soft_clip_loss(p, t, self.temperature)
        if self.mse_weight and self.loss_kind != "mse":
            loss = loss + self.mse_weight * F.mse_loss(z, mixed_target)
        return DecoderOutput(loss, z, {"embedding": p})

    @torch.no_grad()
    def decode(self, memory: Features, options=None) -> Tensor:
        """L2-normalised embeddings (B, embed_dim) in the target space."""
        return F.normalize(self.embed(memory), dim=-1)


class VoxelCycleHead(Decoder):
    """Per-subject builders h -> adapter-space voxels (one Linear each; MindBridge's builder adds LayerNorm,
    GELU and a bottleneck adapter): reconstruction MSE + the cycle through a random other subject.

    targets: ``subject_ids`` (B,). Reset-tuning adds the new subject's builder with ``add_subject``."""

    label_keys = ("subject_ids",)

    def __init__(self, subjects: dict[str, int], hidden: int, adapter: str = "linear", pool: int = 1024,
                 recon_weight: float = 1.0, cycle_weight: float = 1.0):
        super().__init__()
        self.adapter_kind, self.pool, self.hidden = adapter, pool, hidden
        self.recon_weight, self.cycle_weight = recon_weight, cycle_weight
        self.builders = nn.ModuleDict()
        self.widths: dict[str, int] = {}
        for sid, n in subjects.items():
            self.add_subject(sid, n)

    def add_subject(self, subject_id: int | str, n_voxels: int) -> nn.Module:
        key = str(int(subject_id))
        self.widths[key] = self.pool if self.adapter_kind == "pool" else int(n_voxels)
        self.builders[key] = nn.Linear(self.hidden, self.widths[key])
        return self.builders[key]

    def _unpack(self, memory: Features) -> tuple[Tensor, Tensor]:
        if not memory.intermediates or len(memory.intermediates) < 2 or getattr(memory, "reencode", None) is None:
            raise ValueError("the voxel_cycle head needs the fmri_encoder's features (adapter output, adapter input "
                             "and reencode); point its source at an fmri_encoder node")
        return memory.intermediates[0], memory.intermediates[1]

    def build(self, e: Tensor, subject_ids: Tensor) -> Tensor:
        """(B, max width) synthetic adapter-space voxels of subject ``subject_ids[i]`` from e[i]."""
        width = max(self.widths.values())
        out = torch.zeros(e.shape[0], width, dtype=e.dtype, device=e.device)
        for sid in torch.unique(subject_ids).tolist():
            key = str(int(sid))
            if key not in self.builders:
                raise ValueError(f"subject {key} has no voxel builder; add it with "
                                 f"recipes.brain_decoding.adapt.add_subject(model, {key}, n_voxels)")
            rows = (subject_ids == sid).nonzero().squeeze(1)
            built = self.builders[key](e.index_select(0, rows))  # bf16 under autocast, whatever e is
            out = out.index_copy(0, rows, F.pad(built, (0, width - built.shape[1])).to(out.dtype))
        return out

    def forward(self, memory: Features, targets: dict[str, Tensor]) -> DecoderOutput:
        e, a = self._unpack(memory)
        sids = _target(targets, "subject_ids", "voxel_cycle").to(e.device).long()
        built = self.build(e, sids)
        mask = torch.zeros_like(built, dtype=torch.bool)
        for sid in torch.unique(sids).tolist():
            mask[sids == sid, : self.widths[str(int(sid))]] = True
        recon = ((built[:, : a.shape[1]] - a) ** 2).masked_select(mask[:, : a.shape[1]]).mean()
        loss, extras = self.recon_weight * recon, {"recon": recon.detach()}
        others = sorted(self.builders, key=int)   # kept in step with the encoder's adapters by add_subject
        if self.cycle_weight and len(others) > 1:
            choices = torch.tensor([int(k) for k in others], device=e.device)
            draw = torch.randint(len(others) - 1, (len(sids),), device=e.device)
            own = (choices[None, :] == sids[:, None]).long().argmax(1)
            draw = draw + (draw >= own).long()        # uniform over the other subjects
            other = choices[draw]
            cycled = memory.reencode(self.build(e, other), other)
            cycle = F.mse_loss(cycled, e)
            loss, extras["cycle"] = loss + self.cycle_weight * cycle, cycle.detach()
        return DecoderOutput(loss, built, extras)

    @torch.no_grad()
    def decode(self, memory: Features, options: Tensor | None = None) -> Tensor:
        """Synthetic adapter-space voxels (B, max width) of the subjects ``options`` (B,) ids."""
        e, _ = self._unpack(memory)
        if options is None:
            raise ValueError("voxel_cycle.decode needs the target subject ids (B,) as options")
        return self.build(e, torch.as_tensor(options, device=e.device).long().reshape(-1))


class SegmentClipHead(Decoder):
    """M/EEG segment retrieval against frozen speech features ``targets['embedding']`` (B, T, F)."""

    label_keys = ("embedding",)

    def __init__(self, in_dim: int, target_dim: int):
        super().__init__()
        self.proj = nn.Identity() if in_dim == target_dim else nn.Linear(in_dim, target_dim)

    def forward(self, memory: Features, targets: dict[str, Tensor]) -> DecoderOutput:
        est = self.proj(memory.x)
        target = _target(targets, "embedding", "segment_clip").to(est)
        if target.shape != est.shape:
            raise ValueError(f"speech targets {tuple(target.shape)} do not match brain estimates {tuple(est.shape)} "
                             "(B, T, F): cut both to the same segment length and feature rate")
        return DecoderOutput(clip_loss(est, target), est)

    @torch.no_grad()
    def decode(self, memory: Features, options=None) -> Tensor:
        """Flattened, normalised segment embeddings (B, T * F)."""
        return F.normalize(rearrange(self.proj(memory.x), "b t f -> b (t f)"), dim=-1)


@register_decoder(task="brain_decoding")
def brain_retrieval(in_dim: int, embed_dim: int, loss: str = "softclip", temperature: float = 0.05,
                    mix_temperature: float = 0.05, mixup_pct: float = 0.33, mse_weight: float = 0.0,
                    proj_hidden: int = 512, projector: bool = True) -> RetrievalHead:
    """Retrieval/regression into a frozen encoder's space: softclip, bimixco, infonce or mse."""
    return RetrievalHead(in_dim, embed_dim, loss, temperature, mix_temperature, mixup_pct, mse_weight, proj_hidden,
                         projector)


@register_decoder(task="brain_decoding")
def voxel_cycle(subjects: dict[str, int], hidden: int, adapter: str = "linear", pool: int = 1024,
                recon_weight: float = 1.0, cycle_weight: float = 1.0) -> VoxelCycleHead:
    """MindBridge per-subject builders: voxel reconstruction + cross-subject cycle loss."""
    return VoxelCycleHead(subjects, hidden, adapter, pool, recon_weight, cycle_weight)


@register_decoder(task="brain_decoding")
def segment_clip(in_dim: int, target_dim: int) -> SegmentClipHead:
    """Défossez et al. CLIP loss for M/EEG segments vs frozen speech features."""
    return SegmentClipHead(in_dim, target_dim)
