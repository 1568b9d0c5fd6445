"""timm vision encoder: ResNet <-> ViT by name, equality to timm's own forward, colour-format handling."""
import pytest
import torch

from zoo.registry import create_encoder

VIT = dict(model_name="vit_tiny_patch16_224",
           model_kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2))
RESNET = dict(model_name="resnet18", image_size=32)


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    return {"vit": create_encoder("timm_vision", **VIT).eval(), "resnet": create_encoder("timm_vision", **RESNET).eval()}


def test_swap_resnet_vit_and_match_timm(encoders):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    vit, res = encoders["vit"], encoders["resnet"]
    fv, fr = vit(images), res(images)
    mean, std = torch.tensor([0.5] * 3).view(1, 3, 1, 1), torch.tensor([0.5] * 3).view(1, 3, 1, 1)
    ref = vit.backbone.forward_features((images.float() / 255 - mean) / std)
    torch.testing.assert_close(fv.x, ref)  # the cls token is kept in x by default
    assert fv.spatial.shape == (2, 32, 4, 4)
    torch.testing.assert_close(fv.spatial.flatten(2).transpose(1, 2), ref[:, 1:])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    ref = res.backbone.forward_features((images.float() / 255 - mean) / std)
    torch.testing.assert_close(fr.spatial, ref)
    torch.testing.assert_close(fr.x, ref.flatten(2).transpose(1, 2))
    assert res.out_dim == 512 and vit.out_dim == 32


def test_formats_and_resizing(encoders):
    enc = encoders["vit"]
    rgb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = enc(rgb).x
    torch.testing.assert_close(enc(rgb.permute(0, 2, 3, 1)).x, out)         # HWC numpy layout
    torch.testing.assert_close(enc(rgb.float() / 255).x, out)               # float in [0, 1]
    alpha = torch.full((2, 1, 32, 32), 255, dtype=torch.uint8)
    torch.testing.assert_close(enc(torch.cat([rgb, alpha], 1)).x, out)     # opaque RGBA == RGB
    gray = rgb[:, :1]
    torch.testing.assert_close(enc(gray).x, enc(gray.expand(-1, 3, -1, -1)).x)
    big = torch.rand(1, 3, 80, 80)
    assert enc(big).x.shape == (1, 17, 32)                                  # resized to the model's 32 px


def test_projection_and_errors():
    enc = create_encoder("timm_vision", dim=16, drop_prefix_tokens=True, **VIT)
    f = enc(torch.rand(1, 3, 32, 32))
    assert f.x.shape == (1, 16, 16) and f.spatial.shape == (1, 16, 4, 4) and enc.out_dim == 16
    with pytest.raises(ValueError, match="channels"):
        enc(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(TypeError, match="torch.Tensor"):
        enc([[1.0]])
