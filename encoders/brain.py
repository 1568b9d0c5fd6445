"""fMRI encoders: subject-specific adapters feeding one shared trunk.

Adapters (one per subject, gathered per sample by ``subject_ids``; batches may mix subjects whose
voxel counts differ, rows padded to the widest with ``lengths`` = voxel count per row):

* ``linear`` - MindEye2's per-subject ``Linear(n_vox_s, h)`` "ridge" (Scotti et al., ICML 2024, §2.1).
* ``mlp``    - a shallow subject MLP before a shared deeper network (See Through Their Minds,
  arXiv 2403.06361, §3.1).
* ``pool``   - MindBridge (Wang et al., CVPR 2024, §3.2): the "biologically inspired aggregation"
  ``AdaptiveMaxPool1d`` turns any voxel count into a fixed size, then a subject embedder
  (a residual bottleneck adapter with zero-initialised up-projection, Linear, LayerNorm, GELU, Dropout).

Trunks: ``resmlp`` (MindBridge's residual MLP translator, §3.2) or ``mixer`` (MindEye2's MLP-Mixer
backbone; Tolstikhin et al., NeurIPS 2021, §2: the h-vector is split into tokens, then token-mixing
and channel-mixing MLPs). The head maps h to ``tokens`` x ``out_dim`` (Features (B, tokens, D)).

During training with ``mixup_pct`` > 0 the encoder applies MixCo (MindEye, Scotti et al., NeurIPS
2023, §3.2) to the adapter inputs *within each subject* for the first ``mixup_pct`` of training
(``progress`` is set by the training loop) and hands the mixing (perm, betas) to the retrieval head.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import Tensor, nn

from zoo.contract import Encoder, Features
from zoo.registry import register_encoder

ADAPTERS = ("linear", "mlp", "pool")
TRUNKS = ("resmlp", "mixer")


@dataclass
class MixInfo:
    """MixCo bookkeeping: row i was mixed as betas[i] * x_i + (1 - betas[i]) * x_perm[i] (betas 1 = unmixed)."""

    perm: Tensor
    betas: Tensor


@dataclass
class BrainFeatures(Features):
    """Features plus what the cycle and BiMixCo heads need.

    intermediates = [e (B, h) adapter output, a (B, max_in) adapter input, zero-padded].
    ``reencode(a, subject_ids)`` runs the subject adapters on adapter-space inputs (the cycle loss).
    """

    reencode: Callable[[Tensor, Tensor], Tensor] | None = field(default=None, repr=False)
    mix: MixInfo | None = None


class ResidualAdapter(nn.Module):
    """x + up(ReLU(down(x))), up zero-initialised (LoRA-style) so the layer starts as the identity (MindBridge)."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down, self.up = nn.Linear(dim, bottleneck), nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(torch.relu(self.down(x)))


def make_adapter(kind: str, n_in: int, hidden: int, adapter_hidden: int, bottleneck: int, dropout: float) -> nn.Module:
    """One subject's adapter from ``n_in`` adapter-space inputs to ``hidden``."""
    if kind == "linear":
        return nn.Linear(n_in, hidden)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(n_in, adapter_hidden), nn.LayerNorm(adapter_hidden), nn.GELU(),
                             nn.Dropout(dropout), nn.Linear(adapter_hidden, hidden))
    if kind == "pool":
        return nn.Sequential(ResidualAdapter(n_in, bottleneck), nn.Linear(n_in, hidden), nn.LayerNorm(hidden),
                             nn.GELU(), nn.Dropout(dropout))
    raise ValueError(f"unknown adapter {kind!r}; choose from {ADAPTERS}")


class ResMLP(nn.Module):
    """``depth`` residual blocks x + Dropout(GELU(LN(Linear(x)))) (MindBridge translator)."""

    def __init__(self, dim: int, depth: int, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.GELU(), nn.Dropout(dropout)) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def _mlp(dim: int, expand: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim * expand), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * expand, dim))


class Mixer(nn.Module):
    """MLP-Mixer over the h-vector split into ``tokens`` tokens of h / tokens channels."""

    def __init__(self, dim: int, depth: int, tokens: int, dropout: float, expand: int = 2):
        super().__init__()
        if dim % tokens:
            raise ValueError(f"mixer trunk: hidden={dim} must be divisible by mixer_tokens={tokens}")
        self.tokens, width = tokens, dim // tokens
        self.token_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.token_mlps = nn.ModuleList(_mlp(tokens, expand, dropout) for _ in range(depth))
        self.channel_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.channel_mlps = nn.ModuleList(_mlp(width, expand, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        x = rearrange(x, "b (t c) -> b t c", t=self.tokens)
        for tn, tm, cn, cm in zip(self.token_norms, self.token_mlps, self.channel_norms, self.channel_mlps):
            x = x + rearrange(tm(rearrange(tn(x), "b t c -> b c t")), "b c t -> b t c")
            x = x + cm(cn(x))
        return rearrange(self.norm(x), "b t c -> b (t c)")


class BrainEncoder(Encoder):
    """Per-subject adapters (gathered by ``subject_ids``) + a shared trunk; see the module docstring."""

    def __init__(self, subjects: dict[str, int], adapter: str = "linear", trunk: str = "resmlp", hidden: int = 256,
                 out_dim: int = 128, tokens: int = 1, depth: int = 4, pool: int = 1024, pool_type: str = "max",
                 adapter_hidden: int = 256, bottleneck: int = 128, adapter_dropout: float = 0.3,
                 dropout: float = 0.15, mixer_tokens: int = 8, mixup_pct: float = 0.0, mix_beta: float = 0.15,
                 mix_prob: float = 0.5):
        super().__init__()
        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r}; choose from {ADAPTERS}")
        if trunk not in TRUNKS:
            raise ValueError(f"unknown trunk {trunk!r}; choose from {TRUNKS}")
        if pool_type not in ("max", "avg"):
            raise ValueError(f"pool_type must be 'max' or 'avg', got {pool_type!r}")
        self.adapter_kind, self.hidden, self.pool, self.pool_type = adapter, hidden, pool, pool_type
        self._adapter_args = dict(hidden=hidden, adapter_hidden=adapter_hidden, bottleneck=bottleneck,
                                  dropout=adapter_dropout)
        self.subjects: dict[str, int] = {}
        self.adapters = nn.ModuleDict()
        for sid, n_vox in subjects.items():
            self.add_subject(sid, n_vox)
        self.trunk = ResMLP(hidden, depth, dropout) if trunk == "resmlp" else Mixer(hidden, depth, mixer_tokens, dropout)
        self.head = nn.Linear(hidden, tokens * out_dim)
        self.tokens, self.out_dim = tokens, out_dim
        self.mixup_pct, self.mix_beta, self.mix_prob = mixup_pct, mix_beta, mix_prob
        self.register_buffer("progress", torch.zeros(()), persistent=False)  # fraction of training done

    # --- subjects ----------------------------------------------------------------------------
    def adapter_inputs(self, n_vox: int) -> int:
        """Width of a subject's adapter input: its voxel count, or the pooled size."""
        return self.pool if self.adapter_kind == "pool" else n_vox

    def add_subject(self, subject_id: int | str, n_voxels: int) -> nn.Module:
        """Give ``subject_id`` a fresh adapter for ``n_voxels`` voxels (replacing any existing one)."""
        if int(n_voxels) < 1:
            raise ValueError(f"subject {subject_id}: n_voxels must be positive, got {n_voxels}")
        key = str(int(subject_id))
        self.subjects[key] = int(n_voxels)
        self.adapters[key] = make_adapter(self.adapter_kind, self.adapter_inputs(int(n_voxels)), **self._adapter_args)
        return self.adapters[key]

    def trunk_parameters(self) -> list[nn.Parameter]:
        """Parameters shared across subjects (trunk + head)."""
        return [*self.trunk.parameters(), *self.head.parameters()]

    # --- forward -----------------------------------------------------------------------------
    def _groups(self, subject_ids: Tensor) -> list[tuple[str, Tensor]]:
        groups = []
        for sid in torch.unique(subject_ids).tolist():
            key = str(int(sid))
            if key not in self.adapters:
                raise ValueError(
                    f"subject {key} has no adapter (known subjects: {sorted(self.adapters, key=int)}). Add one with "
                    f"encoder.add_subject({key}, n_voxels) - or recipes.brain_decoding.adapt.add_subject(model, {key}, "
                    f"n_voxels) for a ZooModel - and reset-tune it on that subject's data (python -m "
                    f"recipes.brain_decoding.adapt)"
                )
            groups.append((key, (subject_ids == sid).nonzero().squeeze(1)))
        return groups

    def _subject_inputs(self, key: str, rows: Tensor, inputs: Tensor, lengths: Tensor | None) -> Tensor:
        """Adapter-space inputs of one subject's rows: its own voxels only (then pooled for ``pool``)."""
        n = self.subjects[key]
        got = lengths.index_select(0, rows) if lengths is not None else None
        if (got is not None and bool((got != n).any())) or (got is None and inputs.shape[1] != n) or inputs.shape[1] < n:
            seen = sorted(set(got.tolist())) if got is not None else [inputs.shape[1]]
            raise ValueError(
                f"subject {key}'s adapter expects {n} voxels but rows of that subject carry {seen}; pass that subject's "
                f"betas under the same voxel mask as in training (lengths = voxel count per row), or give the "
                f"subject a new adapter with add_subject({key}, n_voxels) and reset-tune it"
            )
        x = inputs.index_select(0, rows)[:, :n]
        if torch.isnan(x).any():
            bad = rows[torch.isnan(x).any(1)].tolist()
            raise ValueError(f"fMRI input of subject {key} has NaN voxels (batch rows {bad[:10]}); drop those voxels from "
                             "the mask or impute them (e.g. 0 after z-scoring) before encoding")
        if self.adapter_kind == "pool":
            pool = nn.functional.adaptive_max_pool1d if self.pool_type == "max" else nn.functional.adaptive_avg_pool1d
            x = pool(x.unsqueeze(1), self.pool).squeeze(1)
        return x

    def _mixco(self, groups: list[tuple[str, Tensor]], parts: list[Tensor], batch: int) -> tuple[list[Tensor], MixInfo]:
        """MixCo within each subject: x_i <- b x_i + (1 - b) x_perm(i) for a random half of the rows."""
        perm, betas = torch.arange(batch), torch.ones(batch)
        beta = torch.distributions.Beta(self.mix_beta, self.mix_beta)
        out = []
        for (key, rows), x in zip(groups, parts):
            local = torch.randperm(len(rows))
            b = beta.sample((len(rows),)).clamp(0, 1)
            b = torch.where(torch.rand(len(rows)) <= self.mix_prob, b, torch.ones_like(b))
            out.append(b.to(x)[:, None] * x + (1 - b.to(x))[:, None] * x[local])
            perm[rows.cpu()], betas[rows.cpu()] = rows.cpu()[local], b
        device = parts[0].device
        return out, MixInfo(perm.to(device), betas.to(device))

    def adapt(self, adapter_inputs: list[Tensor], groups: list[tuple[str, Tensor]]) -> Tensor:
        """Run each subject's adapter on its rows and scatter the results back into batch order."""
        order = torch.cat([rows for _, rows in groups])
        out = torch.cat([self.adapters[key](x) for (key, _), x in zip(groups, adapter_inputs)])
        return out[torch.argsort(order)]

    def reencode(self, adapter_space: Tensor, subject_ids: Tensor) -> Tensor:
        """Adapter outputs (B, h) for inputs already in adapter space (pooled for ``pool``)."""
        groups = self._groups(subject_ids)
        parts = [adapter_space.index_select(0, rows)[:, : self.adapter_inputs(self.subjects[key])] for key, rows in groups]
        return self.adapt(parts, groups)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, subject_ids: Tensor | None = None,
                **conditions) -> BrainFeatures:
        if subject_ids is None:
            raise ValueError("the fMRI encoder needs subject_ids (B,) long: put batch['subject_ids'] in the batch and "
                             "list it in the node's conditions=['subject_ids']")
        if inputs.dim() == 3 and inputs.shape[1] == 1:
            inputs = inputs[:, 0]
        if inputs.dim() != 2:
            raise ValueError(f"fMRI input must be (B, n_voxels) padded betas, got shape {tuple(inputs.shape)}")
        subject_ids = torch.as_tensor(subject_ids, device=inputs.device).long().reshape(-1)
        if subject_ids.shape[0] != inputs.shape[0]:
            raise ValueError(f"{subject_ids.shape[0]} subject_ids for {inputs.shape[0]} rows; give one per row")
        batch = inputs.shape[0]
        groups = self._groups(subject_ids)
        parts = [self._subject_inputs(key, rows, inputs, lengths) for key, rows in groups]
        mix = None
        if self.training and float(self.progress) < self.mixup_pct:
            parts, mix = self._mixco(groups, parts, batch)
        e = self.adapt(parts, groups)
        width = max(p.shape[1] for p in parts)
        padded = torch.zeros(batch, width, dtype=inputs.dtype, device=inputs.device)
        for (_, rows), p in zip(groups, parts):
            padded = padded.index_copy(0, rows, nn.functional.pad(p, (0, width - p.shape[1])).to(padded.dtype))
        x = rearrange(self.head(self.trunk(e)), "b (t d) -> b t d", t=self.tokens)
        return BrainFeatures(x, None, intermediates=[e, padded], reencode=self.reencode, mix=mix)


@register_encoder(modality="fmri")
def fmri_encoder(subjects: dict[str, int], adapter: str = "linear", trunk: str = "resmlp", hidden: int = 256,
                 out_dim: int = 128, tokens: int = 1, depth: int = 4, pool: int = 1024, pool_type: str = "max",
                 adapter_hidden: int = 256, bottleneck: int = 128, adapter_dropout: float = 0.3, dropout: float = 0.15,
                 mixer_tokens: int = 8, mixup_pct: float = 0.0, mix_beta: float = 0.15, mix_prob: float = 0.5) -> BrainEncoder:
    """Subject adapters (``linear`` MindEye2, ``mlp`` See Through Their Minds, ``pool`` MindBridge) + a shared
    ``resmlp``/``mixer`` trunk. ``subjects`` maps subject id (str) to its voxel count."""
    return BrainEncoder(subjects, adapter, trunk, hidden, out_dim, tokens, depth, pool, pool_type, adapter_hidden,
                        bottleneck, adapter_dropout, dropout, mixer_tokens, mixup_pct, mix_beta, mix_prob)
