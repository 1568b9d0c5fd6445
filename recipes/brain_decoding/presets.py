"""Brain-decoding presets: fMRI -> image-embedding retrieval and MEG -> speech-segment retrieval.

fMRI (``batch['fmri']`` (B, max_vox) + ``fmri_lengths`` + ``subject_ids``):

* ``brain_mindeye2_*``  per-subject linear adapters, MLP-Mixer trunk, BiMixCo -> soft-CLIP
  (Scotti et al., ICML 2024).
* ``brain_mindbridge_*`` adaptive max-pool aggregation + subject embedders, residual-MLP trunk,
  soft-CLIP + MSE, per-subject builders with the cycle loss (Wang et al., CVPR 2024).
* ``brain_stm_*``  shallow subject MLPs into a shared residual MLP, soft-CLIP (See Through Their
  Minds, arXiv 2403.06361).

MEG (``batch['meg']`` (B, C, T) + ``subject_ids``, ``sensor_positions``, ``sensor_mask``):
``meg_clip_*`` - Défossez et al. (2023) spatial attention + subject layer + dilated GLU convs, CLIP
loss against frozen speech features.

``subjects`` maps subject id (str) to its voxel count; the default is subjects 1-7 of the simulated
cohort (:class:`recipes.brain_decoding.data.FMRIConfig`), subject 8 being the "new" subject.
"""
from __future__ import annotations

from zoo.graph import ModelSpec, Node, ZooModel
from zoo.registry import register_model

DEFAULT_VOXELS = (1024, 1310, 870, 1480, 1150, 940, 1200, 1390)
DEFAULT_SUBJECTS = {str(s): n for s, n in enumerate(DEFAULT_VOXELS[:7], start=1)}


def fmri_spec(name: str, subjects: dict[str, int] | None, adapter: str, trunk: str, hidden: int, depth: int,
              embed_dim: int, loss: str, mixup_pct: float = 0.0, cycle: bool = False, mse_weight: float = 0.0,
              pool: int = 512, dropout: float = 0.15, adapter_dropout: float = 0.3, temperature: float = 0.05,
              proj_hidden: int = 0, cycle_weight: float = 1.0, adapter_hidden: int | None = None,
              pool_type: str = "max", bottleneck: int = 32) -> ModelSpec:
    subjects = {str(k): int(v) for k, v in (subjects or DEFAULT_SUBJECTS).items()}
    decoders = {"retrieval": Node("brain_retrieval", source="brain", in_dim=hidden, embed_dim=embed_dim, loss=loss,
                                  mixup_pct=mixup_pct, mse_weight=mse_weight, temperature=temperature,
                                  mix_temperature=temperature, proj_hidden=proj_hidden)}
    weights = {"retrieval": 1.0}
    if cycle:
        decoders["cycle"] = Node("voxel_cycle", source="brain", subjects=subjects, hidden=hidden, adapter=adapter,
                                 pool=pool, cycle_weight=cycle_weight)
        weights["cycle"] = 0.1
    return ModelSpec(
        encoders={"brain": Node("fmri_encoder", input="fmri", conditions=["subject_ids"], subjects=subjects,
                                adapter=adapter, trunk=trunk, hidden=hidden, out_dim=hidden, depth=depth, pool=pool,
                                pool_type=pool_type, bottleneck=bottleneck,
                                dropout=dropout, adapter_dropout=adapter_dropout, mixup_pct=mixup_pct,
                                adapter_hidden=adapter_hidden or hidden)},
        decoders=decoders, loss_weights=weights, task="brain_decoding", name=name,
    )


@register_model(task="brain_decoding", modality="fmri")
def brain_mindbridge_tiny(subjects: dict[str, int] | None = None, embed_dim: int = 64, hidden: int = 64,
                          depth: int = 1, pool: int = 128, pool_type: str = "avg", cycle: bool = True,
                          mse_weight: float = 1.0) -> ZooModel:
    """MindBridge-style: adaptive pooling of any voxel count to ``pool`` + subject embedders, residual-MLP
    trunk, soft-CLIP + ``mse_weight`` x MSE, per-subject builders with the cycle loss (weight 0.1).
    MindBridge pools with max; ``avg`` (also in MindBridge's code) is the default here, as it averages
    the voxel noise of the simulated cohort instead of amplifying it."""
    return fmri_spec("brain_mindbridge_tiny", subjects, "pool", "resmlp", hidden, depth, embed_dim, "softclip",
                     cycle=cycle, mse_weight=mse_weight, pool=pool, pool_type=pool_type).build()


@register_model(task="brain_decoding", modality="fmri")
def brain_mindbridge_small(subjects: dict[str, int] | None = None, embed_dim: int = 64, hidden: int = 512,
                           depth: int = 4, pool: int = 1024, pool_type: str = "max", cycle: bool = True,
                           mse_weight: float = 1.0) -> ZooModel:
    """MindBridge-style at a larger scale (max pooling to 1,024, 4 ResMLP blocks of width 512)."""
    return fmri_spec("brain_mindbridge_small", subjects, "pool", "resmlp", hidden, depth, embed_dim, "softclip",
                     cycle=cycle, mse_weight=mse_weight, pool=pool, pool_type=pool_type, bottleneck=128).build()


@register_model(task="brain_decoding", modality="fmri")
def brain_mindeye2_tiny(subjects: dict[str, int] | None = None, embed_dim: int = 64, hidden: int = 128,
                        depth: int = 2, mixup_pct: float = 0.33) -> ZooModel:
    """MindEye2-style: per-subject Linear(n_vox, h) "ridge" + MLP-Mixer trunk; BiMixCo, then soft-CLIP."""
    return fmri_spec("brain_mindeye2_tiny", subjects, "linear", "mixer", hidden, depth, embed_dim, "bimixco",
                     mixup_pct).build()


@register_model(task="brain_decoding", modality="fmri")
def brain_mindeye2_small(subjects: dict[str, int] | None = None, embed_dim: int = 64, hidden: int = 1024,
                         depth: int = 4, mixup_pct: float = 0.33) -> ZooModel:
    """MindEye2-style, wider and deeper (hidden 1024, 4 Mixer blocks, MLP projector as ``clip_proj``)."""
    return fmri_spec("brain_mindeye2_small", subjects, "linear", "mixer", hidden, depth, embed_dim, "bimixco",
                     mixup_pct, proj_hidden=1024).build()


@register_model(task="brain_decoding", modality="fmri")
def brain_stm_tiny(subjects: dict[str, int] | None = None, embed_dim: int = 64, hidden: int = 128,
                   depth: int = 2, adapter_hidden: int = 32) -> ZooModel:
    """See-Through-Their-Minds-style: shallow, narrow subject MLPs (n_vox -> ``adapter_hidden`` -> h),
    a shared residual MLP, soft-CLIP."""
    return fmri_spec("brain_stm_tiny", subjects, "mlp", "resmlp", hidden, depth, embed_dim, "softclip",
                     adapter_hidden=adapter_hidden).build()


def meg_spec(name: str, n_subjects: int, target_dim: int, hidden: int, blocks: int, merger_channels: int,
             pos_dim: int = 128, dropout_radius: float = 0.1) -> ModelSpec:
    return ModelSpec(
        encoders={"brain": Node("meg_encoder", input="meg",
                                conditions=["subject_ids", "sensor_positions", "sensor_mask"], n_subjects=n_subjects,
                                out_dim=target_dim, hidden=hidden, merger_channels=merger_channels, blocks=blocks,
                                pos_dim=pos_dim, dropout_radius=dropout_radius)},
        decoders={"segments": Node("segment_clip", source="brain", in_dim=target_dim, target_dim=target_dim)},
        task="brain_decoding", name=name,
    )


@register_model(task="brain_decoding", modality="meg")
def meg_clip_tiny(n_subjects: int = 4, target_dim: int = 32, hidden: int = 64, blocks: int = 3,
                  merger_channels: int = 64) -> ZooModel:
    """Défossez et al. (2023) brain module, tiny: 3 GLU blocks of width 64."""
    return meg_spec("meg_clip_tiny", n_subjects, target_dim, hidden, blocks, merger_channels, pos_dim=72).build()


@register_model(task="brain_decoding", modality="meg")
def meg_clip_small(n_subjects: int = 4, target_dim: int = 32, hidden: int = 160, blocks: int = 5,
                   merger_channels: int = 160) -> ZooModel:
    """Défossez et al. (2023) brain module, five GLU blocks of width 160 (the paper uses 320)."""
    return meg_spec("meg_clip_small", n_subjects, target_dim, hidden, blocks, merger_channels).build()
