"""Separation presets: encoder ``filterbank`` (input ``audio``, (B, T) at ``meta['sample_rate']``) and
one ``separation`` head (``mask_decoder``) whose targets are ``sources`` (B, n_src, T).

Hyper-parameters use the symbols of Luo & Mesgarani (TASLP 2019, Table 1): N filters of length L,
bottleneck B, hidden H, skip Sc, kernel P, X blocks per repeat, R repeats.
"""

from __future__ import annotations

from typing import Any

from zoo.graph import ModelSpec, Node, ZooModel
from zoo.registry import register_model

SAMPLE_RATE = 8000


def tasnet_spec(
    masker: str,
    masker_kwargs: dict[str, Any],
    n_src: int = 2,
    N: int = 512,
    L: int = 16,
    encoder_activation: str = "relu",
    condition_dim: int | None = None,
    name: str = "",
) -> ModelSpec:
    """Learnable filterbank -> registered masker -> transposed-conv synthesis (stride L/2)."""
    return ModelSpec(
        encoders={
            "filterbank": Node(
                "free_filterbank", input="audio", n_filters=N, kernel_size=L, activation=encoder_activation
            )
        },
        decoders={
            "separation": Node(
                "mask_decoder",
                source="filterbank",
                n_src=n_src,
                in_dim=N,
                kernel_size=L,
                masker=masker,
                masker_kwargs=masker_kwargs,
                condition_dim=condition_dim,
            )
        },
        task="separation",
        name=name,
    )


def _build(spec: ModelSpec, sample_rate: int, n_src: int, causal: bool) -> ZooModel:
    return ZooModel(**spec.to_config(), meta={"sample_rate": sample_rate, "n_src": n_src, "causal": causal})


def _conv_tasnet(
    name: str,
    n_src: int,
    N: int,
    L: int,
    B: int,
    H: int,
    Sc: int,
    P: int,
    X: int,
    R: int,
    causal: bool,
    mask_act: str,
    encoder_activation: str,
    condition_dim: int | None,
    sample_rate: int,
) -> ZooModel:
    tcn = {
        "B": B,
        "H": H,
        "Sc": Sc,
        "P": P,
        "X": X,
        "R": R,
        "causal": causal,
        "norm": "cLN" if causal else "gLN",
        "mask_act": mask_act,
    }
    spec = tasnet_spec("tcn", tcn, n_src, N, L, encoder_activation, condition_dim, name)
    return _build(spec, sample_rate, n_src, causal)


@register_model(task="separation", modality="audio")
def conv_tasnet(
    n_src: int = 2,
    N: int = 512,
    L: int = 16,
    B: int = 128,
    H: int = 512,
    Sc: int = 128,
    P: int = 3,
    X: int = 8,
    R: int = 3,
    mask_act: str = "sigmoid",
    encoder_activation: str = "relu",
    condition_dim: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> ZooModel:
    """Conv-TasNet, the paper's best non-causal setting (gLN, ~5.1M parameters, 15.3 dB SI-SNRi)."""
    return _conv_tasnet(
        "conv_tasnet",
        n_src,
        N,
        L,
        B,
        H,
        Sc,
        P,
        X,
        R,
        False,
        mask_act,
        encoder_activation,
        condition_dim,
        sample_rate,
    )


@register_model(task="separation", modality="audio")
def conv_tasnet_causal(
    n_src: int = 2,
    N: int = 512,
    L: int = 16,
    B: int = 128,
    H: int = 512,
    Sc: int = 128,
    P: int = 3,
    X: int = 8,
    R: int = 3,
    mask_act: str = "sigmoid",
    encoder_activation: str = "relu",
    condition_dim: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> ZooModel:
    """Causal Conv-TasNet: cLN and left-only padding; algorithmic latency L samples (2 ms at 8 kHz)."""
    return _conv_tasnet(
        "conv_tasnet_causal",
        n_src,
        N,
        L,
        B,
        H,
        Sc,
        P,
        X,
        R,
        True,
        mask_act,
        encoder_activation,
        condition_dim,
        sample_rate,
    )


@register_model(task="separation", modality="audio")
def conv_tasnet_tiny(
    n_src: int = 2,
    N: int = 128,
    L: int = 16,
    B: int = 64,
    H: int = 128,
    Sc: int = 64,
    P: int = 3,
    X: int = 6,
    R: int = 2,
    mask_act: str = "sigmoid",
    encoder_activation: str = "relu",
    causal: bool = False,
    condition_dim: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> ZooModel:
    """A ~0.33M-parameter Conv-TasNet for CPU experiments (the calibration run's size)."""
    return _conv_tasnet(
        "conv_tasnet_tiny",
        n_src,
        N,
        L,
        B,
        H,
        Sc,
        P,
        X,
        R,
        causal,
        mask_act,
        encoder_activation,
        condition_dim,
        sample_rate,
    )


@register_model(task="separation", modality="audio")
def dprnn_tasnet(
    n_src: int = 2,
    N: int = 64,
    L: int = 16,
    B: int = 64,
    H: int = 64,
    K: int = 50,
    R: int = 2,
    mask_act: str = "sigmoid",
    encoder_activation: str = "relu",
    condition_dim: int | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> ZooModel:
    """A small DPRNN-TasNet (Luo et al. 2020): filterbank + dual-path RNN masker (chunks of K frames)."""
    masker = {"B": B, "H": H, "K": K, "R": R, "mask_act": mask_act}
    spec = tasnet_spec("dprnn", masker, n_src, N, L, encoder_activation, condition_dim, "dprnn_tasnet")
    return _build(spec, sample_rate, n_src, False)


from recipes.separation import query_presets  # noqa: E402,F401  (registers query_tasnet_tiny)
