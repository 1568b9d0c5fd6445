"""Image encoders through timm (Wightman, pytorch-image-models): any ``timm.create_model`` name.

ViTs (Dosovitskiy et al., ICLR 2021, §3.1) give patch tokens; CNNs such as ResNet (He et al.,
CVPR 2016) give a feature map. Either way the encoder returns ``Features(x=(B, N, D),
spatial=(B, D, H, W))``: ``x`` is what a captioning decoder cross-attends, ``spatial`` what a pixel
decoder (masks) reads. Swapping a ResNet for a ViT is a change of ``model_name`` only.

Input: images (B, C, H, W) float in [0, 1] or uint8 in [0, 255], or (B, H, W, C) uint8 (numpy
layout, detected by a last dimension of 1, 3 or 4 with a larger second dimension). C = 1
(grayscale) is repeated to RGB; C = 4 (RGBA) is alpha-composited over black. Images are then
resized to the model's input size (timm's ``resolve_model_data_config``, or the ViT's own
``img_size`` when one was set, or ``image_size``) and normalised by the data config's mean/std.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from zoo.contract import Encoder, Features
from zoo.registry import register_encoder

__all__ = ["TimmVisionEncoder", "timm_vision", "to_rgb"]


def to_rgb(images: Tensor) -> Tensor:
    """(B, C, H, W) or (B, H, W, C) images of 1/3/4 channels, uint8 or float in [0, 1] -> (B, 3, H, W) float."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}; use torch.as_tensor(array)")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W) or (B, H, W, C), got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
        images = rearrange(images, "b h w c -> b c h w")
    if images.shape[1] not in (1, 3, 4):
        raise ValueError(f"images need 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, got shape {tuple(images.shape)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if images.dtype != torch.uint8 and x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ValueError(f"float images must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]; "
                         "divide uint8 pixels by 255 or pass them as uint8")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] == 4:
        x = x[:, :3] * x[:, 3:]  # RGBA over a black background
    return x


class TimmVisionEncoder(Encoder):
    """A timm backbone as a zoo encoder; ``dim`` > 0 adds a linear projection of the tokens."""

    def __init__(self, model_name: str, pretrained: bool = False, dim: int = 0, image_size: int | None = None,
                 drop_prefix_tokens: bool = False, model_kwargs: dict[str, Any] | None = None):
        super().__init__()
        import timm
        from timm.data import resolve_model_data_config

        self.backbone = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **(model_kwargs or {}))
        cfg = resolve_model_data_config(self.backbone)
        size = cfg["input_size"][-2:]
        own = getattr(getattr(self.backbone, "patch_embed", None), "img_size", None)
        if own is not None:  # a ViT built with img_size=... only accepts that size
            size = tuple(own)
        self.image_size = (image_size, image_size) if image_size else tuple(int(s) for s in size)
        self.interpolation = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.prefix = int(getattr(self.backbone, "num_prefix_tokens", 0))
        self.drop_prefix_tokens = drop_prefix_tokens
        width = int(self.backbone.num_features)
        self.proj = nn.Linear(width, dim) if dim and dim != width else nn.Identity()
        self.out_dim = dim or width

    def preprocess(self, images: Tensor) -> Tensor:
        x = to_rgb(images).to(self.mean.device)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode=self.interpolation, align_corners=False).clamp(0, 1)
        return (x - self.mean) / self.std

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, **conditions) -> Features:
        out = self.backbone.forward_features(self.preprocess(inputs))
        if out.dim() == 4:  # CNN: (B, D, H, W)
            tokens = rearrange(out, "b d h w -> b (h w) d")
            grid = out.shape[-2:]
            patch = tokens
        elif out.dim() == 3:  # ViT-like: (B, prefix + H*W, D)
            patch = out[:, self.prefix:]
            grid = self._grid(patch.shape[1])
            tokens = patch if self.drop_prefix_tokens else out
        else:
            raise ValueError(f"{type(self.backbone).__name__}.forward_features gave shape {tuple(out.shape)}; "
                             "expected (B, D, H, W) or (B, N, D)")
        tokens, patch = self.proj(tokens), self.proj(patch)
        spatial = rearrange(patch, "b (h w) d -> b d h w", h=grid[0], w=grid[1])
        return Features(tokens, None, spatial=spatial)

    def _grid(self, n: int) -> tuple[int, int]:
        grid = getattr(getattr(self.backbone, "patch_embed", None), "grid_size", None)
        if grid is not None and grid[0] * grid[1] == n:
            return int(grid[0]), int(grid[1])
        side = int(round(n ** 0.5))
        if side * side != n:
            raise ValueError(f"cannot arrange {n} patch tokens on a grid; this backbone needs drop_prefix_tokens "
                             "or a square input")
        return side, side


@register_encoder(modality="image")
def timm_vision(model_name: str = "resnet18", pretrained: bool = False, dim: int = 0, image_size: int | None = None,
                drop_prefix_tokens: bool = False, model_kwargs: dict[str, Any] | None = None) -> TimmVisionEncoder:
    """Any timm backbone (``resnet18``, ``vit_tiny_patch16_224``, ...): tokens (B, N, D) + a spatial map.

    Args:
        model_name: a ``timm.list_models()`` name.
        pretrained: load timm's weights (needs the hub or timm's cache).
        dim: project the features to this width (0 keeps the backbone's).
        image_size: resize inputs to this side (default: the model's data config).
        drop_prefix_tokens: leave class/register tokens out of ``x``.
        model_kwargs: passed to ``timm.create_model`` (e.g. ``img_size``, ``depth``, ``embed_dim``).
    """
    return TimmVisionEncoder(model_name, pretrained, dim, image_size, drop_prefix_tokens, model_kwargs)
