"""X-Decoder: the four attention rules, masked cross-attention from the previous masks, cached == uncached
caption decoding, and learning to caption and to ground a referring expression."""
import pytest
import torch

from decoders.search import DecodingOptions
from decoders.xdecoder import attention_mask
from zoo.contract import Features
from zoo.registry import create_decoder


def test_attention_mask_rules():
    q, t = 3, 4
    for task in ("caption", "ground"):
        allow = attention_mask(q, t, task)
        assert not allow[: q + 1, q + 1:].any()                    # latent queries never see text
        assert not allow[:q, q].any() and not allow[q, :q].any()   # object <-> class query blocked
        assert allow[:q, :q].all() and allow[q, q]
        assert allow[q + 1:, : q + 1].all()                        # text sees every latent query
    cap, grd = attention_mask(q, t, "caption")[q + 1:, q + 1:], attention_mask(q, t, "ground")[q + 1:, q + 1:]
    assert torch.equal(cap, torch.ones(t, t, dtype=torch.bool).tril()) and grd.all()
    with pytest.raises(ValueError, match="task must be"):
        attention_mask(q, t, "segment")


def _setup(seed=0):
    torch.manual_seed(seed)
    dec = create_decoder("xdecoder", vocab_size=12, dim=32, heads=2, layers=2, queries=4, memory_dim=8, max_len=10).eval()
    mem = Features(torch.randn(3, 16, 8), spatial=torch.randn(3, 8, 4, 4))
    return dec, mem


def test_cross_mask_follows_previous_masks():
    dec, _ = _setup()
    masks = torch.full((1, 4, 2, 2), -5.0)
    masks[0, 0, 0, 0] = 5.0                                        # query 0: one pixel on
    allow = dec._cross_mask(masks, rows=4 + 1 + 2, grid=(2, 2))[0, 0]
    assert allow[0].tolist() == [True, False, False, False]
    assert allow[1:].all()                                         # empty masks attend everywhere; class/text rows too
    fine = masks.repeat_interleave(2, -1).repeat_interleave(2, -2)  # upsampled masks are resized to the memory grid
    assert torch.equal(dec._cross_mask(fine, rows=7, grid=(2, 2)), dec._cross_mask(masks, rows=7, grid=(2, 2)))


def test_cached_decoding_equals_full_recompute():
    dec, mem = _setup()
    for opts in (dict(), dict(beam_size=3, n_best=2), dict(beam_size=4, groups=2, diversity=0.7, n_best=4)):
        cached = dec.decode(mem, DecodingOptions(max_len=8, min_len=5, **opts))
        full = dec.decode(mem, DecodingOptions(max_len=8, min_len=5, use_cache=False, **opts))
        flat = lambda hs: [(h.tokens, round(h.score, 4)) for row in hs for h in (row if isinstance(row, list) else [row])]
        assert flat(cached) == flat(full)
        assert min(len(t) for t, _ in flat(cached)) >= 5


def test_learns_captions_and_grounding():
    torch.manual_seed(0)
    dec = create_decoder("xdecoder", vocab_size=12, dim=32, heads=2, layers=2, queries=4, memory_dim=8, max_len=10)
    # two "images": a bright blob top-left or bottom-right, each with a caption and a phrase naming the blob
    spatial = torch.zeros(4, 8, 4, 4)
    mask = torch.zeros(4, 4, 4)
    for b in range(4):
        r = slice(0, 2) if b % 2 == 0 else slice(2, 4)
        spatial[b, b % 2, r, r] = 3.0
        mask[b, r, r] = 1.0
    mem = Features(torch.zeros(4, 16, 8), spatial=spatial)
    targets = dict(tokens=torch.tensor([[4, 5], [6, 7]] * 2), lengths=torch.tensor([2, 2, 2, 2]),
                   ref_tokens=torch.tensor([[8, 9]] * 4), ref_lengths=torch.tensor([2, 2, 2, 2]), mask=mask)
    opt = torch.optim.Adam(dec.parameters(), 3e-3)
    for _ in range(150):
        opt.zero_grad()
        out = dec(mem, targets)
        out.loss.backward()
        opt.step()
    dec.eval()
    assert [h.tokens for h in dec.decode(mem, DecodingOptions(max_len=4))] == [[4, 5], [6, 7]] * 2
    logits, probs = dec.ground(mem, targets["ref_tokens"], targets["ref_lengths"])
    pred = logits.sigmoid() >= 0.5
    iou = (pred & mask.bool()).sum((1, 2)) / (pred | mask.bool()).sum((1, 2))
    assert float(iou.min()) > 0.9 and probs.shape == (4, 4)
    with pytest.raises(ValueError, match="spatial"):
        dec(Features(torch.zeros(1, 4, 8)), targets)


def test_phrases_pick_their_own_object_with_generic_segmentation_matching():
    """Two objects per image (feature channel 0 or 1, in varying quadrants): trained with every object's mask
    (Hungarian matching) and one phrase per row, each phrase must segment its own object, not the same one."""
    torch.manual_seed(0)
    dec = create_decoder("xdecoder", vocab_size=12, dim=32, heads=2, layers=2, queries=6, memory_dim=8, max_len=10)
    quads = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 4)), (slice(2, 4), slice(0, 2)), (slice(2, 4), slice(2, 4))]
    spatial, objects = torch.zeros(12, 8, 4, 4), torch.zeros(12, 2, 4, 4)
    for b in range(12):
        for obj, quad in enumerate((quads[b % 4], quads[(b + 1 + b // 4) % 4])):
            spatial[b, obj][quad] = 3.0
            objects[b, obj][quad] = 1.0
    ref = torch.arange(12) % 2
    mem = Features(torch.zeros(12, 16, 8), spatial=spatial)
    targets = dict(ref_tokens=(8 + ref)[:, None], ref_lengths=torch.ones(12, dtype=torch.long),
                   mask=objects[torch.arange(12), ref], object_masks=objects, object_counts=torch.full((12,), 2),
                   ref_index=ref)
    opt = torch.optim.Adam(dec.parameters(), 3e-3)
    for _ in range(200):
        opt.zero_grad()
        dec(mem, targets).loss.backward()
        opt.step()
    dec.eval()
    for phrase in (0, 1):
        logits, _ = dec.ground(mem, torch.full((12, 1), 8 + phrase), torch.ones(12, dtype=torch.long))
        pred, target = logits.sigmoid() >= 0.5, objects[:, phrase].bool()
        iou = (pred & target).sum((1, 2)) / (pred | target).sum((1, 2))
        assert float(iou.min()) > 0.8, (phrase, iou)


def test_xdecoder_preset_trains_step_and_segment_cli(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from recipes.captioning.data import CaptionScenes, collate, tokenizer_texts, train_caption_tokenizer
    from zoo.cli import main
    from zoo.registry import create_model

    ds = CaptionScenes(4, "train")
    tok = train_caption_tokenizer(tokenizer_texts(ds.items))
    ds.tokenizer = tok
    torch.manual_seed(0)
    model = create_model("xdecoder_scenes_tiny", vocab_size=tok.vocab_size, tokenizers={"xdec": tok.to_dict()}, queries=4)
    np.random.seed(0)
    batch = collate([ds[i] for i in range(4)])
    t = batch["targets"]["xdec"]
    assert t["mask"].shape == (4, 64, 64) and (t["mask"].sum((1, 2)) > 0).all()
    out = model(batch)
    assert set(out.outputs["xdec"].extras) == {"caption", "ground"} and torch.isfinite(out.loss)
    out.loss.backward()
    model.eval().save_pretrained(tmp_path / "m")
    Image.fromarray(ds.items[0]["image"]).save(tmp_path / "s.png")
    rc = main(["segment", str(tmp_path / "m"), str(tmp_path / "s.png"), "--text", ds.items[0]["referring"][0][0],
               "--out", str(tmp_path / "o.png")])
    assert rc == 0 and (tmp_path / "o.png").is_file()
    rc = main(["caption", str(tmp_path / "m"), str(tmp_path / "s.png"), "--beams", "2"])
    assert rc == 0 and capsys.readouterr().out.strip()
