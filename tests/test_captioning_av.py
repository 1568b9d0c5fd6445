"""AST audio encoder, VALOR-style modality gates + group alignment, the captioning graph, its CLI."""
import math

import pytest
import torch
import torch.nn.functional as F

from recipes.captioning.data import CaptionScenes, collate, tokenizer_texts, train_caption_tokenizer
from zoo.contract import Features
from zoo.registry import create_decoder, create_encoder, create_model


def tiny_ast():
    torch.manual_seed(0)
    return create_encoder("ast_audio", n_mels=32, dim=32, layers=1, heads=2, fstride=16, tstride=16, max_frames=128).eval()


def test_ast_padding_never_reaches_valid_tokens():
    enc = tiny_ast()
    wav = torch.randn(1, 8000)
    padded = torch.cat([wav, torch.randn(1, 4000)], 1)
    padded2 = torch.cat([wav, torch.zeros(1, 4000)], 1)
    lengths = torch.tensor([8000])
    a, b, c = enc(wav, lengths), enc(padded, lengths), enc(padded2, lengths)
    n = int(a.lengths[0])
    # (8000 - 256) // 160 + 1 = 49 whole frames -> (49 - 16) // 16 + 1 = 3 time patches x 2 mel patches + [CLS]
    assert n == int(b.lengths[0]) == 1 + 3 * 2
    torch.testing.assert_close(a.x[:, :n], b.x[:, :n])
    torch.testing.assert_close(b.x[:, :n], c.x[:, :n])
    # patch grid: (32 - 16) // 16 + 1 = 2 mel patches per time patch; [CLS] first
    assert (n - 1) % 2 == 0 and enc(torch.randn(2, 16000)).x.shape == (2, 1 + 2 * 6, 32)
    with pytest.raises(ValueError, match="fewer than one patch"):
        enc(torch.randn(1, 800))
    with pytest.raises(ValueError, match="float waveforms"):
        enc(torch.zeros(1, 1, 16000))


def test_mga_loss_is_symmetric_infonce_and_learns():
    torch.manual_seed(0)
    head = create_decoder("group_alignment", vocab_size=20, memory_dim=16, dim=16, heads=2)
    vis = Features(torch.randn(6, 5, 16))
    aud = Features(torch.randn(6, 7, 16), torch.tensor([7, 7, 3, 7, 2, 7]))
    tokens = torch.randint(4, 20, (6, 4))
    targets = dict(tokens=tokens, lengths=torch.tensor([4, 3, 4, 2, 4, 4]))
    out = head([vis, aud], targets)
    text = head.text_embed(targets["tokens"], targets["lengths"])
    media = head.media([vis, aud])
    # the va group pools over the valid tokens of both modalities (after the modality embeddings)
    v = vis.x + head.source_embed[0]
    a = aud.x + head.source_embed[1]
    va = torch.stack([(v[i].sum(0) + a[i, : int(aud.lengths[i])].sum(0)) / (5 + int(aud.lengths[i])) for i in range(6)])
    torch.testing.assert_close(media["va"], F.normalize(head.media_proj(va), dim=-1))
    labels = torch.arange(6)
    ref = []
    for g in ("v", "a", "va"):
        logits = math.exp(math.log(1 / 0.07)) * media[g] @ text.T
        ref.append((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2)
    torch.testing.assert_close(out.loss, torch.stack(ref).mean())
    opt = torch.optim.Adam(head.parameters(), 3e-3)
    first = float(out.loss.detach())
    for _ in range(40):
        opt.zero_grad()
        loss = head([vis, aud], targets).loss
        loss.backward()
        opt.step()
    assert float(loss) < 0.3 * first


@pytest.fixture(scope="module")
def tiny_setup():
    ds = CaptionScenes(16, "train", group="va")
    tok = train_caption_tokenizer(tokenizer_texts(ds.items))
    ds.tokenizer = tok
    torch.manual_seed(0)
    model = create_model("caption_av_tiny", vocab_size=tok.vocab_size, tokenizers={"caption": tok.to_dict()})
    return model, ds, tok


def test_gated_modality_has_no_influence(tiny_setup):
    model, ds, _ = tiny_setup
    model.eval()
    batch = collate([ds[i] for i in range(2)])
    batch["modalities"] = torch.tensor([[True, False], [True, False]])
    other = dict(batch, audio=torch.randn_like(batch["audio"]))
    with torch.no_grad():
        a, b = model(batch), model(other)
    torch.testing.assert_close(a.outputs["caption"].logits, b.outputs["caption"].logits)
    both = dict(other, modalities=torch.ones(2, 2, dtype=torch.bool))
    with torch.no_grad():
        c = model(both)
    assert not torch.allclose(a.outputs["caption"].logits, c.outputs["caption"].logits)


def test_graph_learns_captions(tiny_setup):
    model, ds, tok = tiny_setup
    model.train()
    batch = collate([ds[i] for i in range(16)])
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        out = model(batch)
        out.loss.backward()
        opt.step()
        losses.append(float(out.losses["caption"]))
    assert losses[-1] < 0.6 * losses[0]
    model.eval()
    text = model.generate(batch, heads="caption")["caption"][0].text
    assert isinstance(text, str) and text == tok.decode(tok.encode(text))


def test_cli_caption_and_group_error(tiny_setup, tmp_path, capsys):
    import soundfile
    from PIL import Image

    from zoo.cli import main

    model, ds, _ = tiny_setup
    model.eval()
    model.save_pretrained(tmp_path / "model")
    Image.fromarray(ds.items[0]["image"]).convert("RGBA").save(tmp_path / "scene.png")
    soundfile.write(tmp_path / "s.wav", ds.items[0]["audio"], 8000)  # resampled to 16 kHz by the CLI
    rc = main(["caption", str(tmp_path / "model"), str(tmp_path / "scene.png"), "--audio", str(tmp_path / "s.wav"),
               "--beams", "4", "--groups", "2", "--diversity", "0.5", "--n-best", "3"])
    assert rc == 0 and len(capsys.readouterr().out.strip().splitlines()) == 3
    rc = main(["caption", str(tmp_path / "model"), str(tmp_path / "scene.png"), "--beams", "4", "--groups", "3"])
    assert rc == 2 and "must divide --beams" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_fast(tmp_path):
    from recipes.captioning.quickstart import run

    out = run(tmp_path, fast=True)
    assert (tmp_path / "model" / "model.safetensors").is_file() and out["card"].endswith("README.md")
