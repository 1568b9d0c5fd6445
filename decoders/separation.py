"""Mask-based separation decoder: masker -> masks x mixture representation -> synthesis -> waveforms.

The masker/synthesis half of asteroid's ``BaseEncoderMaskerDecoder`` (encoder is a separate
registered part, see ``encoders/filterbank.py``). Synthesis is Conv-TasNet's learnable transposed
1-D conv (Luo & Mesgarani, TASLP 2019, §2.2, eq. (3): overlap-add of the N basis signals) or the
iSTFT of the masked mixture spectrum for the STFT filterbank. Training objective: utterance-level
PIT with negative SI-SNR (§3.2), or MixIT (Wisdom et al., NeurIPS 2020) when the batch carries
only reference mixtures.

Targets (``batch["targets"][head]``):
    sources  (B, n_src, T) reference sources, T = the mixture's sample count
    lengths  (B,) valid samples per row (optional; padding is excluded from SI-SNR)
    mixtures (B, M, T) instead of ``sources``: unsupervised MixIT on mixtures of mixtures
    condition (B, Q) optional query embedding that FiLM-conditions the masker

Conditioning hook (query-based separation, issue 5 item 3): pass ``condition`` through targets /
:class:`SeparationOptions`, or make the node read two encoders (``source=["audio", "query"]``):
the second encoder's Features are mean-pooled over valid steps into the (B, Q) condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from decoders.masknet import create_masker
from encoders.filterbank import STFTSynthesis
from zoo.contract import Decoder, DecoderOutput, Features
from zoo.losses import mixit, pit_si_snr, reorder
from zoo.registry import register_decoder

__all__ = ["MaskDecoder", "SeparationOptions", "fit_length", "mask_decoder"]


@dataclass(frozen=True)
class SeparationOptions:
    """Inference options: ``num_samples`` trims/pads the output to the mixture length; ``condition``
    (B, Q) is the FiLM query embedding."""

    num_samples: int | None = None
    condition: Tensor | None = None


def fit_length(wav: Tensor, num_samples: int) -> Tensor:
    """Trim or zero-pad the last axis to ``num_samples``."""
    extra = num_samples - wav.shape[-1]
    return wav[..., :num_samples] if extra <= 0 else F.pad(wav, (0, extra))


class MaskDecoder(Decoder):
    """Masks from a registered masker, applied to the encoder's representation, then synthesis."""

    label_keys = ("sources",)

    def __init__(
        self,
        n_src: int = 2,
        in_dim: int = 512,
        synthesis: str = "conv",
        kernel_size: int = 16,
        stride: int | None = None,
        n_fft: int = 256,
        hop_length: int | None = None,
        win_length: int | None = None,
        masker: str = "tcn",
        masker_kwargs: dict[str, Any] | None = None,
        condition_dim: int | None = None,
        pit_method: str = "auto",
        mixit_snr_max: float = 30.0,
    ):
        super().__init__()
        self.n_src, self.in_dim, self.synthesis_kind = n_src, in_dim, synthesis
        self.pit_method, self.mixit_snr_max = pit_method, mixit_snr_max
        if synthesis == "conv":
            self.kernel_size, self.stride = kernel_size, stride or kernel_size // 2
            mask_dim = in_dim
            self.decoder = nn.ConvTranspose1d(
                in_dim, 1, kernel_size, stride=self.stride, padding=self.stride, bias=False
            )
        elif synthesis == "istft":
            self.istft = STFTSynthesis(n_fft, hop_length or n_fft // 4, win_length or n_fft)
            self.register_buffer("window", torch.hann_window(self.istft.win_length), persistent=False)
            mask_dim = n_fft // 2 + 1
            if in_dim not in (mask_dim, 2 * mask_dim):
                raise ValueError(
                    f"an STFT decoder with n_fft={n_fft} expects in_dim {mask_dim} (magnitude) or "
                    f"{2 * mask_dim} (complex); got {in_dim}"
                )
        else:
            raise ValueError(
                f"unknown synthesis {synthesis!r}; use 'conv' (free filterbank) or 'istft' (STFT)"
            )
        self.masker = create_masker(
            masker,
            N=in_dim,
            n_src=n_src,
            mask_dim=mask_dim,
            condition_dim=condition_dim,
            **dict(masker_kwargs or {}),
        )

    # --- inference -------------------------------------------------------------------------------
    def separate(self, memory: Features | Sequence[Features], condition: Tensor | None = None) -> Tensor:
        """(B, n_src, T_out) waveforms; T_out covers every frame (>= the mixture length)."""
        feats, condition = self._unpack(memory, condition)
        if feats.x.shape[-1] != self.in_dim:
            raise ValueError(
                f"features have dim {feats.x.shape[-1]} but this decoder was built with in_dim="
                f"{self.in_dim}; match it to the encoder's n_filters / STFT size"
            )
        x = feats.x.transpose(1, 2)  # (B, N, T') (the conv's own layout)
        masks = self.masker(x, feats.lengths, condition)  # (B, C, D, T')
        if self.synthesis_kind == "conv":
            wav = self.decoder(rearrange(masks * x[:, None], "b c n t -> (b c) n t"))
            return rearrange(wav, "(b c) 1 t -> b c t", c=self.n_src)
        if feats.spatial is None or feats.spatial.shape[1] != 2:
            raise ValueError(
                "iSTFT synthesis needs the complex spectrum in Features.spatial (B, 2, F, T'); "
                "use the stft_filterbank encoder"
            )
        spec = torch.view_as_complex(feats.spatial.permute(0, 2, 3, 1).contiguous())  # (B, F, T')
        return self.istft(masks * spec[:, None], self.window.to(x.dtype))

    @torch.no_grad()
    def decode(
        self, memory: Features | Sequence[Features], options: SeparationOptions | dict | None = None
    ) -> Tensor:
        """Separated waveforms (B, n_src, T), T = ``options.num_samples`` when given."""
        if isinstance(options, dict):
            options = SeparationOptions(**options)
        options = options or SeparationOptions()
        wav = self.separate(memory, options.condition)
        return wav if options.num_samples is None else fit_length(wav, options.num_samples)

    # --- training --------------------------------------------------------------------------------
    def forward(self, memory: Features | Sequence[Features], targets: dict[str, Tensor]) -> DecoderOutput:
        if "sources" not in targets and "mixtures" not in targets:
            raise ValueError(
                f"separation targets need 'sources' (B, {self.n_src}, T) for PIT or 'mixtures' "
                f"(B, M, T) for MixIT; got keys {sorted(targets)}"
            )
        refs = targets["sources"] if "sources" in targets else targets["mixtures"]
        if refs.dim() != 3:
            raise ValueError(f"separation references must be (B, n, T); got {tuple(refs.shape)}")
        est = fit_length(self.separate(memory, targets.get("condition")), refs.shape[-1])
        if "sources" not in targets:
            out = mixit(est, refs, self.mixit_snr_max)
            return DecoderOutput(
                out.loss, extras={"estimates": est, "assignment": out.assignment, "remixed": out.remixed}
            )
        if refs.shape[1] != self.n_src:
            raise ValueError(
                f"this decoder separates {self.n_src} sources but the targets hold {refs.shape[1]}; "
                "pad with silent sources or build the model with n_src to match"
            )
        result = pit_si_snr(est, refs, targets.get("lengths"), self.pit_method)
        return DecoderOutput(
            result.loss,
            extras={"estimates": reorder(est, result.perm), "perm": result.perm, "si_snr": result.metric},
        )

    @staticmethod
    def _unpack(memory, condition: Tensor | None) -> tuple[Features, Tensor | None]:
        if isinstance(memory, Features):
            return memory, condition
        if len(memory) != 2:
            raise ValueError(
                f"a separation decoder reads one encoder (the mixture) or two (mixture, query); "
                f"got {len(memory)}"
            )
        feats, query = memory
        if condition is not None:
            raise ValueError("got both a query encoder and an explicit condition; pass only one")
        keep = (~query.padding_mask()).unsqueeze(-1).to(query.x.dtype)
        return feats, (query.x * keep).sum(1) / keep.sum(1).clamp_min(1)


@register_decoder(task="separation", modality="audio")
def mask_decoder(
    n_src: int = 2,
    in_dim: int = 512,
    synthesis: str = "conv",
    kernel_size: int = 16,
    stride: int | None = None,
    n_fft: int = 256,
    hop_length: int | None = None,
    win_length: int | None = None,
    masker: str = "tcn",
    masker_kwargs: dict[str, Any] | None = None,
    condition_dim: int | None = None,
    pit_method: str = "auto",
    mixit_snr_max: float = 30.0,
) -> MaskDecoder:
    """Masker (``tcn``/``dprnn``) + transposed-conv or iSTFT synthesis; PIT-SI-SNR or MixIT loss."""
    return MaskDecoder(
        n_src,
        in_dim,
        synthesis,
        kernel_size,
        stride,
        n_fft,
        hop_length,
        win_length,
        masker,
        masker_kwargs,
        condition_dim,
        pit_method,
        mixit_snr_max,
    )
