"""Query-conditioned separation presets (USS, Kong et al. 2023 §3; AudioSep, Liu et al. 2023 §2): a
one-output Conv-TasNet whose TCN blocks are FiLM-modulated (Perez et al. 2018) by a query embedding of
``condition_dim`` values (from ``recipes.separation.query``: tagger, text or example-clip queries)."""
from __future__ import annotations

from recipes.separation.presets import SAMPLE_RATE, _build, tasnet_spec
from zoo.graph import ZooModel
from zoo.registry import register_model


@register_model(task="separation", modality="audio")
def query_tasnet_tiny(
    condition_dim: int = 64,
    N: int = 128,
    L: int = 16,
    B: int = 64,
    H: int = 128,
    Sc: int = 64,
    P: int = 3,
    X: int = 6,
    R: int = 2,
    mask_act: str = "sigmoid",
    sample_rate: int = SAMPLE_RATE,
) -> ZooModel:
    """Tiny Conv-TasNet (gLN) extracting the one source a (B, condition_dim) query embedding names."""
    tcn = {"B": B, "H": H, "Sc": Sc, "P": P, "X": X, "R": R, "causal": False, "norm": "gLN", "mask_act": mask_act}
    spec = tasnet_spec("tcn", tcn, 1, N, L, "relu", condition_dim, "query_tasnet_tiny")
    return _build(spec, sample_rate, 1, False)
