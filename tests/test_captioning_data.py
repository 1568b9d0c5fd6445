"""Captioning data: determinism, the compositional held-out split, captions and referring expressions."""
import numpy as np
import pytest
import torch

from recipes.captioning.data import (
    GROUPS,
    HELD_OUT_PAIRS,
    CaptionScenes,
    _pair,
    collate,
    SOUNDS,
    captions,
    make_example,
    sound_phrase,
    synth_sound,
    tokenizer_texts,
    train_caption_tokenizer,
)


def test_deterministic_and_held_out_split():
    a, b = make_example("train", 0, 5), make_example("train", 0, 5)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["audio"], b["audio"])
    assert a["captions"] == b["captions"]
    held = set(HELD_OUT_PAIRS)
    train = CaptionScenes(150, "train")
    test = CaptionScenes(60, "test")
    assert not any((o.colour, o.shape) in held for it in train.items for o in it["scene"].objects)
    for it in test.items:
        a_obj, b_obj, _ = _pair(it["scene"])
        assert {(a_obj.colour, a_obj.shape), (b_obj.colour, b_obj.shape)} & held
        assert any(f"{c} {s}" in it["captions"][0] for c, s in held)
    with pytest.raises(ValueError, match="split must be"):
        make_example("val", 0, 0)


def test_captions_describe_the_scene():
    for it in CaptionScenes(40, "train").items:
        a, b, rel = _pair(it["scene"])
        first = it["captions"][0]
        assert first == f"a {a.phrase} {rel} a {b.phrase} while a {it['sound']} plays"
        if rel == "left of":
            assert a.center[0] <= b.center[0]
        else:
            assert a.center[1] <= b.center[1]
        assert len(set(it["captions"])) == 4 and all(it["sound"] in c for c in it["captions"])
        # referring expressions pick exactly one object, and the mask is that object's pixels
        for expression, index in it["referring"]:
            words = expression.split()[1:]
            matches = [o for o in it["scene"].objects if " ".join(words) in (o.phrase, f"{o.colour} {o.shape}")]
            assert len(matches) == 1 and matches[0] is it["scene"].objects[index]
            assert it["masks"][index].sum() == it["scene"].objects[index].area > 0


def test_group_captions_say_only_what_the_group_perceives():
    it = make_example("train", 0, 3)
    scene, sound = it["scene"], it["sound"]
    va, v, a = (it["group_captions"][g] for g in ("va", "v", "a"))
    assert va == it["captions"] and [sound_phrase(c) for c in va] == [sound] * 4
    assert [sound_phrase(c) for c in v] == [None, None] and all(c in va[0] or c in va[1] for c in v)
    assert [sound_phrase(c) for c in a] == [sound] * 2 and not any(o.colour in " ".join(a) for o in scene.objects)
    assert {sound_phrase(f"a big red circle while a {s} plays") for s in SOUNDS} == set(SOUNDS)
    with pytest.raises(ValueError, match="group must be"):
        captions(scene, sound, "av")
    ds = CaptionScenes(4, "train", group="v")
    assert ds[0]["references"] == ds.items[0]["group_captions"]["v"]
    assert collate([ds[0]])["references"] == [ds.items[0]["group_captions"]["v"]]


def test_sounds_are_distinguishable():
    rng = np.random.default_rng(0)

    def peak(w):  # the strongest frequency (Hz)
        return np.fft.rfftfreq(len(w), 1 / 16000)[np.abs(np.fft.rfft(w)).argmax()]

    def flatness(w):  # clicks are broadband: geometric / arithmetic mean of the power spectrum
        p = np.abs(np.fft.rfft(w)) ** 2 + 1e-12
        return np.exp(np.log(p).mean()) / p.mean()

    for _ in range(5):
        assert 1300 < peak(synth_sound("high beep", rng)) < 1900
        assert 200 < peak(synth_sound("low beep", rng)) < 400
        assert 70 < peak(synth_sound("low hum", rng)) < 130
        assert flatness(synth_sound("repeating click", rng)) > 10 * flatness(synth_sound("low beep", rng))
    hum = synth_sound("low hum", rng)
    assert len(hum) == 16000 and hum.dtype == np.float32 and np.abs(hum).max() < 1.5
    with pytest.raises(ValueError, match="unknown sound"):
        synth_sound("siren", rng)


def test_collate_tokenizer_and_groups():
    ds = CaptionScenes(12, "train", group="sample")
    tok = train_caption_tokenizer(tokenizer_texts(ds.items))
    ds.tokenizer = tok
    first = ds.items[0]["captions"][0]
    assert tok.decode(tok.encode(first)) == first and len(tok.encode(first)) == len(first.split())
    np.random.seed(0)
    rows = [ds[i] for i in range(12)]
    batch = collate(rows)
    assert batch["image"].shape == (12, 3, 64, 64) and batch["image"].dtype == torch.uint8
    assert batch["audio"].shape == (12, 16000)
    assert all(tuple(row) in GROUPS.values() for row in batch["modalities"].tolist())
    t = batch["targets"]["caption"]
    assert (t["lengths"] == torch.tensor([len(r["tokens"]) for r in rows])).all()
    assert [tok.decode(r["tokens"]) for r in rows] == [r["references"][0] for r in rows]
    assert {r["group"] for r in rows} == set(GROUPS)
    with pytest.raises(ValueError, match="group must be"):
        CaptionScenes(1, group="x")
