"""ASR + subtitling recipe: partial labels train one branch, tokenizers travel with the model,
long-form helpers (streamed reads, word timing, segmentation) behave."""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from recipes.asr_subtitle.data import SpeechTextDataset, collate
from recipes.asr_subtitle.transcribe import (
    AudioSource,
    LongFormOptions,
    buffered_ctc_path,
    redecode_segments,
    segment_batches,
    transcribe,
)
from recipes.asr_subtitle.words import ctc_words, extend_edges, own_words, span_words, split_segments
from zoo import ZooModel, create_model
from zoo.subtitles import Word
from zoo.tokenizers import CharTokenizer, train_tokenizer

TEXTS = [("uh the weather in paris is sunny", "The weather in Paris is sunny."),
         ("twenty three buses are late", "23 buses are late."),
         ("the the match starts at nine", "The match starts at 9."),
         ("euh het regent in gent", "Het regent in Gent.")]


def _rows(tmp_path, n=4, sr=16000):
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n):
        wav = (0.1 * rng.standard_normal(int(sr * (2.0 + 0.25 * i)))).astype(np.float32)
        path = tmp_path / f"u{i}.wav"
        sf.write(path, wav, sr, subtype="PCM_16")
        v, s = TEXTS[i % len(TEXTS)]
        rows.append(dict(id=f"u{i}", audio_filepath=str(path), duration=len(wav) / sr, text_verbatim=v, text_subtitle=s))
    return rows


def _tokenizers(rows):
    return {"verbatim": train_tokenizer([r["text_verbatim"] for r in rows]),
            "subtitle": train_tokenizer([r["text_subtitle"] for r in rows])}


def _tiny(kind, toks):
    model = create_model(f"asr_{kind}_tiny", verbatim_vocab=toks["verbatim"].vocab_size,
                         subtitle_vocab=toks["subtitle"].vocab_size, tokenizers={h: t.to_dict() for h, t in toks.items()})
    return model


def test_rows_with_only_verbatim_labels_train_only_the_verbatim_branch(tmp_path):
    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    model = _tiny("cascaded", toks)
    batch = collate([SpeechTextDataset(rows, toks, label_mode="verbatim")[i] for i in range(4)])
    assert set(batch["targets"]) == {"verbatim"}
    out = model(batch)
    out.loss.backward()
    assert set(out.losses) == {"verbatim"}
    assert all(p.grad is None for p in model.decoders["subtitle"].parameters())
    assert all(p.grad is None for p in model.encoders["written"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders["acoustic"].parameters())


def test_partial_labels_mark_rows_per_head(tmp_path):
    rows = _rows(tmp_path, n=4) * 10
    ds = SpeechTextDataset(rows, _tokenizers(rows), label_mode="partial", partial_fraction=0.6, seed=1)
    has = np.array([[ds.labels[i]["verbatim"], ds.labels[i]["subtitle"]] for i in range(len(ds))])
    assert has.any(1).all()                        # every row trains something
    assert (~has[:, 0]).any() and (~has[:, 1]).any() and has.all(1).any()
    batch = collate([ds[i] for i in range(8)])
    for i, head in enumerate(("verbatim", "subtitle")):
        if head in batch["targets"]:
            assert batch["targets"][head]["present"].tolist() == has[:8, i].tolist()


def test_saved_model_writes_text_with_its_own_tokenizers(tmp_path):
    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    model = _tiny("ctc", toks).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = ZooModel.from_pretrained(str(tmp_path / "m"))
    batch = collate([SpeechTextDataset(rows, toks)[i] for i in range(2)])
    a = model.generate({"audio": batch["audio"], "audio_lengths": batch["audio_lengths"]})
    b = loaded.generate({"audio": batch["audio"], "audio_lengths": batch["audio_lengths"]})
    for head in ("verbatim", "subtitle"):
        assert [h.tokens for h in a[head]] == [h.tokens for h in b[head]]
        assert [h.text for h in b[head]] == [toks[head].decode(h.tokens) for h in b[head]]


def test_zoo_transcribe_writes_both_tracks_on_the_device_asked_for(tmp_path):
    from zoo.cli import main

    rows = _rows(tmp_path)
    torch.manual_seed(0)
    _tiny("ctc", _tokenizers(rows)).save_pretrained(tmp_path / "m")
    audio = rows[0]["audio_filepath"]
    assert main(["transcribe", str(tmp_path / "m"), audio, "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--format", "srt", "txt"]) == 0
    stem = Path(audio).stem
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        f"{stem}.{track}.{fmt}" for track in ("verbatim", "subtitle") for fmt in ("srt", "txt")}


def test_zoo_transcribe_fuses_the_model_folders_lm_and_names_the_fix_when_it_is_missing(tmp_path, capsys):
    from recipes.asr_subtitle.evaluate import LM_FILE
    from zoo.cli import main
    from zoo.lm import NGramLM

    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    _tiny("ctc", toks).save_pretrained(tmp_path / "m")
    audio = rows[0]["audio_filepath"]
    args = ["transcribe", str(tmp_path / "m"), audio, "--out", str(tmp_path / "out"), "--device", "cpu",
            "--format", "txt", "--lm-weight", "0.5", "--insertion-bonus", "1.0"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert f"needs the model folder's {LM_FILE}" in err and "zoo eval asr_subtitle --model" in err
    NGramLM.train([toks["verbatim"].encode(r["text_verbatim"]) for r in rows], toks["verbatim"].vocab_size,
                  3).save(tmp_path / "m" / LM_FILE)
    assert main(args) == 0
    assert (tmp_path / "out" / f"{Path(audio).stem}.verbatim.txt").is_file()


def test_streamed_reads_equal_the_file(tmp_path):
    wav = np.random.default_rng(1).uniform(-0.5, 0.5, 40000).astype(np.float32)
    sf.write(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")
    src = AudioSource(tmp_path / "a.wav", 16000)
    assert src.wav is None  # streamed, not loaded
    assert torch.equal(src.read(-100, 500)[:100], torch.zeros(100))
    assert torch.allclose(src.read(1000, 2000), torch.from_numpy(wav[1000:2000]))
    assert torch.equal(src.read(39900, 40100)[100:], torch.zeros(100))


def test_word_times_and_segments_from_a_best_path():
    tok = CharTokenizer(list(" abc"))
    a, b, c, space = (tok.encode(ch)[0] for ch in "abc ")
    # "ab" then a pause, then "c": frames of 0.04 s
    path = np.array([0, a, a, 0, b, space, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, c, c, 0])
    words = ctc_words(path, 0.04, tok)
    assert [w.text for w in words] == ["ab", "c"]
    assert words[0].start == 0.04 and abs(words[0].end - 0.20) < 1e-9
    assert abs(words[1].start - 0.68) < 1e-9 and abs(words[1].end - 0.76) < 1e-9
    assert [[w.text for w in s] for s in split_segments(words, 0.45)] == [["ab"], ["c"]]
    assert len(split_segments(words, 1.0)) == 1
    assert [[w.text for w in s] for s in split_segments(words, 1.0, max_segment_s=0.5)] == [["ab"], ["c"]]


def test_extend_edges_runs_over_heard_but_unwritten_frames_and_stops_at_the_neighbours():
    """A segment's end moves over the frames after its last character whose speech posterior stays at or
    above the threshold, its start over those before its first character, at most max_s, never into a
    neighbouring segment; inner words keep their times, and a threshold of 0 leaves that edge alone."""
    def ends(segs, speech, end_min, max_s=10.0):
        return extend_edges(segs, speech, 0.04, start_min=0.0, end_min=end_min, max_s=max_s)

    speech = np.zeros(40)
    speech[5:9] = [0.6, 0.4, 0.3, 0.05]   # after "ab" (ends frame 5): 3 frames of speech, then background
    speech[20:40] = 0.9                   # after "c" (ends frame 20): speech up to the file's end
    segments = [[Word("x", 0.0, 0.08), Word("ab", 0.08, 0.20)], [Word("c", 0.72, 0.80)]]
    out = ends(segments, speech, 0.25)
    assert out[0][0] == segments[0][0] and out[0][1].start == 0.08
    assert abs(out[0][1].end - 0.32) < 1e-9            # frames 5, 6, 7 are >= 0.25, frame 8 is not
    assert abs(out[1][0].end - 1.60) < 1e-9            # runs to the end of the speech posteriors
    assert out[1][0].start == 0.72                     # start_min = 0: starts stay
    assert abs(ends(segments, speech, 0.25, max_s=0.2)[1][0].end - 1.0) < 1e-9  # capped
    assert ends(segments, speech, 0.7)[0][1].end == 0.20  # nothing above 0.7
    close = [[Word("ab", 0.08, 0.20)], [Word("c", 0.28, 0.36)]]
    assert abs(ends(close, speech, 0.25)[0][0].end - 0.28) < 1e-9  # not into "c"

    speech = np.zeros(40)
    speech[12:18] = [0.1, 0.2, 0.5, 0.4, 0.9, 0.9]  # before "kay" (starts frame 16): "o" heard, not written
    segments = [[Word("so", 0.04, 0.36)], [Word("kay", 0.64, 0.80), Word("so", 0.84, 0.96)]]
    out = extend_edges(segments, speech, 0.04, start_min=0.3, end_min=0.0, max_s=10.0)
    assert abs(out[1][0].start - 0.56) < 1e-9 and out[1][0].end == 0.80  # frames 14, 15 are >= 0.3
    assert out[1][1] == segments[1][1] and out[0] == segments[0]
    assert abs(extend_edges(segments, speech, 0.04, 0.3, 0.0, max_s=0.04)[1][0].start - 0.60) < 1e-9  # capped
    speech[:16] = 0.9                                  # speech all the way back: stops at the previous segment
    out = extend_edges(segments, speech, 0.04, start_min=0.3, end_min=0.3, max_s=10.0)
    assert abs(out[0][0].end - 0.64) < 1e-9 and abs(out[1][0].start - 0.64) < 1e-9
    assert out[0][0].start == 0.0                      # and at the start of the audio


def _one_window_and_direct(model, ctc):
    """Buffered best path of 3 s of noise read as one window, its frame shift, and ``ctc``'s argmax on it directly."""
    wav = torch.from_numpy(np.random.default_rng(2).standard_normal(16000 * 3).astype(np.float32) * 0.1)
    path, shift = buffered_ctc_path(model, AudioSource(wav, 16000, 16000), opts=LongFormOptions(chunk_s=60, context_s=0))
    feats = model.encode({"audio": wav[None], "audio_lengths": torch.tensor([len(wav)])})
    return path, shift, ctc.log_probs(feats["acoustic"]).argmax(-1)[0].numpy()


def test_buffered_path_with_one_window_equals_direct_decoding(tmp_path):
    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    model = _tiny("verbatim", toks).eval()
    path, shift, direct = _one_window_and_direct(model, model.decoders["verbatim"])
    assert shift == 0.04
    assert np.array_equal(path[: len(direct)], direct[: len(path)]) and abs(len(path) - len(direct)) <= 1


def _one_backward(tmp_path, kind: str):
    """A tiny ``asr_<kind>`` model after one backward pass on 4 rows: model, verbatim head, batch, loss extras."""
    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    model = _tiny(kind, toks)
    batch = collate([SpeechTextDataset(rows, toks, label_mode="verbatim")[i] for i in range(4)])
    out = model(batch)
    out.loss.backward()
    return model, model.decoders["verbatim"], batch, out.outputs["verbatim"].extras


def test_maskctc_preset_trains_three_branches_and_decodes_every_way(tmp_path):
    from decoders.mask_ctc import MaskCTCOptions
    from decoders.search import DecodingOptions

    model, head, batch, extras = _one_backward(tmp_path, "maskctc")
    assert extras["ctc_loss"] > 0 and extras["att_loss"] > 0 and extras["mlm_loss"] > 0
    assert all(p.grad.abs().sum() > 0 for p in (head.ctc.proj.weight, head.attention.embed.weight,
                                                   head.mlm.embed.weight))
    model.eval()
    ctc = model.generate(batch, options={"verbatim": MaskCTCOptions(threshold=0.0)})["verbatim"]
    masked = model.generate(batch, options={"verbatim": MaskCTCOptions(threshold=1.0, iterations=2)})["verbatim"]
    ar = model.generate(batch, options={"verbatim": DecodingOptions(max_len=5, ctc_weight=0.0)})["verbatim"]
    assert [len(h.tokens) for h in masked] == [len(h.tokens) for h in ctc] and len(ar) == 4
    assert head.mlm.passes == 2


def test_hybrid_preset_trains_both_branches_and_decodes_long_form_through_ctc(tmp_path):
    model, head, batch, extras = _one_backward(tmp_path, "hybrid")
    assert extras["ctc_loss"] > 0 and extras["att_loss"] > 0
    assert head.ctc.proj.weight.grad.abs().sum() > 0 and head.attention.embed.weight.grad.abs().sum() > 0
    path, _, direct = _one_window_and_direct(model.eval(), head.ctc)
    assert np.array_equal(path[: len(direct)], direct[: len(path)])


def _noise_model(tmp_path, seconds: int):
    """A random tiny CTC model and ``seconds`` of seeded noise as an AudioSource."""
    toks = _tokenizers(_rows(tmp_path))
    torch.manual_seed(0)
    model = _tiny("verbatim", toks).eval()
    wav = torch.from_numpy(np.random.default_rng(5).standard_normal(16000 * seconds).astype(np.float32) * 0.1)
    return model, wav, AudioSource(wav, 16000, 16000)


def _clip_words(model, wav, seg, pad: int, max_pause_s: float) -> list[Word]:
    """Greedy CTC words, in file time, of ``seg``'s clip padded by ``pad`` samples, decoded on its own."""
    lo = int(seg[0].start * 16000) - pad  # as segment_batches pads
    clip = wav[lo: int(seg[-1].end * 16000) + pad]
    with torch.no_grad():
        feats = model.encode({"audio": clip[None], "audio_lengths": torch.tensor([len(clip)])})["acoustic"]
        path = model.decoders["verbatim"].log_probs(feats).argmax(-1)[0].numpy()
    words = ctc_words(path, 0.04, model.tokenizer("verbatim"), max_gap_s=max_pause_s)
    return [Word(w.text, w.start + lo / 16000, w.end + lo / 16000) for w in words]


def test_second_pass_decodes_each_segment_on_its_own_audio(tmp_path):
    """Two-pass long-form: a segment's words are the CTC words of its own padded clip, shifted to the file;
    a segment longer than max_segment_s keeps its first-pass words."""
    model, wav, source = _noise_model(tmp_path, 6)
    first = [[Word("a", 0.5, 1.5)], [Word("b", 2.0, 2.4), Word("c", 2.6, 3.0)], [Word("d", 3.5, 5.9)]]
    opts = LongFormOptions(segment_pad_s=0.2, max_segment_s=2.0, subtitle_batch=2, end_speech_min=0.0,
                           start_speech_min=0.0)  # extend_edges: own test
    second = redecode_segments(model, source, first, "verbatim", opts)
    assert second[-1] == first[2]  # 2.4 s > max_segment_s
    expected = []
    for seg in first[:2]:
        alone = _clip_words(model, wav, seg, 3200, opts.max_pause_s)
        assert alone, "the random model emits characters on this noise"
        expected += alone
    got = [w for piece in second[:-1] for w in piece]
    assert [w.text for w in got] == [w.text for w in expected]
    assert all(abs(g.start - w.start) < 1e-6 and abs(g.end - w.end) < 1e-6 for g, w in zip(got, expected))
    for piece in second[:-1]:  # split again at the pauses the second pass found
        assert all(b.start - a.end <= opts.max_pause_s for a, b in zip(piece, piece[1:]))


def test_second_pass_keeps_each_segment_to_its_own_side_of_the_pauses_between_close_neighbours(tmp_path):
    """Padded clips of close segments overlap; a word decoded from a clip is kept only if its centre lies
    on its own segment's side of the middle of the pause, so no word is written twice and cues never overlap."""
    model, wav, source = _noise_model(tmp_path, 4)
    first = [[Word("a", 0.5, 1.5)], [Word("b", 1.7, 2.5)]]  # clips 0.1-1.9 and 1.3-2.9 share 1.3-1.9
    opts = LongFormOptions(segment_pad_s=0.4, max_pause_s=10.0, end_speech_min=0.0, start_speech_min=0.0)
    second = redecode_segments(model, source, first, "verbatim", opts)
    cut, expected = 1.6, []
    for seg, (lo, hi) in zip(first, ((-np.inf, cut), (cut, np.inf))):
        words = _clip_words(model, wav, seg, 6400, opts.max_pause_s)
        assert words[-1].end > cut if lo < cut else words[0].start < cut  # the clip runs past the cut
        expected += own_words(words, lo, hi)
    got = [w for piece in second for w in piece]
    assert [w.text for w in got] == [w.text for w in expected]
    assert all(abs(g.start - w.start) < 1e-6 and abs(g.end - w.end) < 1e-6 for g, w in zip(got, expected))
    assert max(w.end for w in second[0]) <= cut + 1e-9 and min(w.start for w in second[1]) >= cut - 1e-9

    words = [Word("a", 0.0, 0.4), Word("b", 0.5, 1.0), Word("c", 1.1, 1.3), Word("d", 1.4, 2.0)]
    kept = own_words(words, 0.7, 1.5)   # "b" (centre 0.75) and "c" stay, clipped; "a" and "d" (1.7) go
    assert [(w.text, w.start, w.end) for w in kept] == [("b", 0.7, 1.0), ("c", 1.1, 1.3)]


def test_span_words_split_at_spaces_and_pauses_and_the_lm_fused_second_pass_keeps_its_words(tmp_path):
    from zoo.lm import NGramLM

    tok = CharTokenizer(list("abc "))
    ids = tok.encode("ab c")
    spans = [(0.0, 0.04), (0.08, 0.12), (0.2, 0.24), (0.3, 0.34)]
    assert [(w.text, w.start, w.end) for w in span_words(ids, spans, tok)] == [("ab", 0.0, 0.12), ("c", 0.3, 0.34)]
    gapped = [(0.0, 0.04), (0.6, 0.64), (0.7, 0.74), (0.8, 0.84)]
    assert [w.text for w in span_words(ids, gapped, tok, max_gap_s=0.3)] == ["a", "b", "c"]

    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    model = _tiny("verbatim", toks).eval()
    wav = torch.from_numpy(np.random.default_rng(5).standard_normal(16000 * 4).astype(np.float32) * 0.1)
    source, first = AudioSource(wav, 16000, 16000), [[Word("a", 0.5, 3.0)]]
    tokenizer = model.tokenizer("verbatim")
    lm = NGramLM.train([tokenizer.encode(r["text_verbatim"]) for r in rows], tokenizer.vocab_size, 3)
    opts = LongFormOptions(segment_pad_s=0.2, lm_weight=0.5, insertion_bonus=1.0, ctc_beam=4)
    fused = redecode_segments(model, source, first, "verbatim", opts, lm)
    clip = wav[int(0.3 * 16000): int(3.2 * 16000)]
    with torch.no_grad():
        feats = model.encode({"audio": clip[None], "audio_lengths": torch.tensor([len(clip)])})["acoustic"]
        from decoders.ctc import CTCDecodingOptions

        hyp = model.decoders["verbatim"].decode(feats, CTCDecodingOptions(beam_size=4, lm=lm, lm_weight=0.5,
                                                                           insertion_bonus=1.0))[0]
    assert " ".join(w.text for piece in fused for w in piece).split() == tokenizer.decode(hyp.tokens).split()
    with pytest.raises(ValueError, match="lm="):
        transcribe(model, wav, tmp_path, opts=opts)


def test_segment_batches_keep_order_and_a_first_pass_batch_of_audio_at_most():
    source = AudioSource(torch.zeros(16000 * 200), 16000, 16000)
    lengths = [1.0, 9.0, 2.0, 1.5, 12.0, 0.5, 3.0, 11.0, 1.0]
    segments, t = [], 0.0
    for n in lengths:
        segments.append([Word("x", t + 0.5, t + 0.5 + n)])
        t += n + 1.0
    opts = LongFormOptions(chunk_s=4.0, context_s=1.0, batch_size=4, subtitle_batch=3, segment_pad_s=0.0,
                           width_step_s=2.0)
    batches = list(segment_batches(source, segments, opts))
    firsts = [f for b in batches for f in b[0]]
    assert firsts == [int((seg[0].start) * 16000) for seg in segments]  # every segment once, in order
    for _, audio, n in batches:
        assert len(n) <= 3 and audio.numel() <= 4 * 6 * 16000
        # padded to the next multiple of 2 s: few distinct shapes, never a whole step of padding
        assert audio.shape[1] % 32000 == 0 and 0 <= audio.shape[1] - int(n.max()) < 32000
    assert len(batches) > len(lengths) / 3  # the budget, not only the count, split them


def test_the_first_window_sees_no_digital_padding(tmp_path):
    """Context is cut at the file start, not zero-filled: window 0 equals decoding its own audio alone."""
    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    model = _tiny("verbatim", toks).eval()
    wav = torch.from_numpy(np.random.default_rng(3).standard_normal(16000 * 3).astype(np.float32) * 0.1)
    path, _ = buffered_ctc_path(model, AudioSource(wav, 16000, 16000), opts=LongFormOptions(chunk_s=1, context_s=1))
    head = wav[: 16000 * 2]  # the first window: 1 s kept + 1 s of right context, no left context
    feats = model.encode({"audio": head[None], "audio_lengths": torch.tensor([len(head)])})
    alone = model.decoders["verbatim"].log_probs(feats["acoustic"]).argmax(-1)[0].numpy()
    assert np.array_equal(path[:20], alone[:20])


def test_pad_noise_surrounds_the_utterance_with_its_own_background(tmp_path):
    rng = np.random.default_rng(4)
    clean = (0.2 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    noise = (0.01 * rng.standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "clean.wav", clean, 16000, subtype="PCM_16")
    sf.write(tmp_path / "noisy.wav", clean + noise, 16000, subtype="PCM_16")
    row = dict(id="a", audio_filepath=str(tmp_path / "noisy.wav"), clean_filepath=str(tmp_path / "clean.wav"),
               duration=1.0, text_verbatim="a", text_subtitle="A.")
    plain = SpeechTextDataset([row], {})[0]["audio"]
    torch.manual_seed(0)
    padded = SpeechTextDataset([row], {}, pad_noise=(1.0, 0.5))[0]["audio"]
    extra = len(padded) - len(plain)
    assert 0 < extra <= 16000
    bed = sf.read(tmp_path / "noisy.wav", dtype="int16")[0].astype(np.int32) - sf.read(tmp_path / "clean.wav", dtype="int16")[0]
    starts = [k for k in range(extra + 1) if torch.equal(padded[k: k + len(plain)], plain)]
    assert len(starts) == 1
    before, after = padded[: starts[0]].numpy(), padded[starts[0] + len(plain):].numpy()
    assert np.allclose(after * 32768, bed[: len(after)]) and np.allclose(before * 32768, bed[len(bed) - len(before):])
    assert SpeechTextDataset([row], {}, pad_noise=(0.0, 0.5))[0]["audio"].shape == plain.shape


def _eval_corpus(tmp_path) -> list[dict]:
    """The toy rows written as a corpus of train, test_seen and test_unseen manifests under ``tmp_path``."""
    from recipes.asr_subtitle.corpus import MANIFEST_SCHEMA
    from zoo.data.manifest import write_manifest

    rows = [dict(r, clean_filepath=r["audio_filepath"], sample_rate=16000, lang="en", voice="v", speaker="v",
                 snr_db=10.0) for r in _rows(tmp_path)]
    for split in ("train", "test_seen", "test_unseen"):
        write_manifest(tmp_path / f"{split}.jsonl", rows, MANIFEST_SCHEMA)
    return rows


def test_zoo_eval_tunes_lm_fusion_on_one_split_and_scores_the_other(tmp_path, capsys):
    import json

    from recipes.asr_subtitle.evaluate import main as evaluate

    rows = _eval_corpus(tmp_path)
    torch.manual_seed(0)
    _tiny("ctc", _tokenizers(rows)).save_pretrained(tmp_path / "m")
    common = ["--model", str(tmp_path / "m"), "--corpus", str(tmp_path), "--tune-lm", "--ctc-beam", "2"]
    with pytest.raises(ValueError, match="must not be scored on it"):
        evaluate([*common, "--split", "test_seen"])
    assert evaluate(common) == 0
    out = capsys.readouterr().out
    assert "LM fusion tuned on 4 test_seen utterances" in out and "chosen: --lm-weight" in out
    scored = json.loads((tmp_path / "m" / "eval_results.json").read_text())
    assert {r["dataset_split"] for r in scored} == {"test_unseen"}
    assert all("tuned on test_seen" in r["task_name"] for r in scored)


def test_zoo_eval_decodes_by_mask_ctc_and_names_it_in_the_card(tmp_path):
    import json

    from recipes.asr_subtitle.evaluate import main as evaluate

    rows = _eval_corpus(tmp_path)
    torch.manual_seed(0)
    _tiny("maskctc", _tokenizers(rows)).save_pretrained(tmp_path / "m")
    _tiny("hybrid", _tokenizers(rows)).save_pretrained(tmp_path / "h")
    common = ["--corpus", str(tmp_path), "--split", "test_unseen", "--mask-ctc", "0.5"]
    with pytest.raises(ValueError, match="masked LM"):
        evaluate(["--model", str(tmp_path / "h"), *common])
    with pytest.raises(ValueError, match="without the n-gram LM"):
        evaluate(["--model", str(tmp_path / "m"), *common, "--lm-weight", "0.5"])
    assert evaluate(["--model", str(tmp_path / "m"), *common, "--mask-ctc-iterations", "2",
                     "--mask-ctc-ctc-weight", "1"]) == 0
    scored = json.loads((tmp_path / "m" / "eval_results.json").read_text())
    assert {r["metric_type"] for r in scored} == {"wer", "cer"}
    assert all("Mask-CTC (P_thres 0.5, K=2, CTC weight 1)" in r["task_name"] for r in scored)


def test_zoo_eval_speculative_scores_what_greedy_attention_decoding_scores(tmp_path, capsys):
    from recipes.asr_subtitle.evaluate import main as evaluate

    rows = _eval_corpus(tmp_path)
    torch.manual_seed(0)
    for kind in ("hybrid", "ctc", "cascaded"):  # the cascaded model's subtitle head drafts from the verbatim text
        _tiny(kind, _tokenizers(rows)).save_pretrained(tmp_path / kind)
    common = ["--corpus", str(tmp_path), "--split", "test_unseen", "--no-card", "--max-len", "40"]
    for kind in ("hybrid", "cascaded"):
        lines = []
        for extra in ([], ["--speculative"]):
            assert evaluate(["--model", str(tmp_path / kind), *common, *extra]) == 0
            lines.append([line for line in capsys.readouterr().out.splitlines() if line.startswith("test_unseen")])
        assert lines[0] == lines[1] and lines[0], kind
    with pytest.raises(ValueError, match="ctc_attention verbatim head"):  # two CTC heads: nothing to draft
        evaluate(["--model", str(tmp_path / "ctc"), *common, "--speculative"])


def test_a_head_drafts_from_another_heads_transcript(tmp_path, monkeypatch):
    """ZooModel.generate with DecodingOptions(draft="verbatim") on the subtitle head: the verbatim head is decoded
    first and its text drafts the subtitle decoder (a padded batch, two sources); greedy's tokens either way."""
    from decoders.drafters import CopyDrafter
    from decoders.search import DecodingOptions

    rows = _rows(tmp_path)
    toks = _tokenizers(rows)
    torch.manual_seed(0)
    model = _tiny("cascaded", toks).eval()
    batch = collate([SpeechTextDataset(rows, toks, label_mode="both")[i] for i in range(4)])
    batch = {k: batch[k] for k in ("audio", "audio_lengths")}
    calls = []
    propose = CopyDrafter.propose
    monkeypatch.setattr(CopyDrafter, "propose", lambda self, ctx: calls.append(self) or propose(self, ctx))
    plain = model.generate(batch, heads="subtitle", options={"subtitle": DecodingOptions(max_len=30)})
    spec = model.generate(batch, heads="subtitle", options={"subtitle": DecodingOptions(max_len=30, draft="verbatim")})
    assert list(spec) == ["subtitle"] and calls and type(calls[0]) is CopyDrafter  # other tokenizers: through text
    assert [h.tokens for h in spec["subtitle"]] == [h.tokens for h in plain["subtitle"]]
    assert [h.text for h in spec["subtitle"]] == [h.text for h in plain["subtitle"]]
    verbatim = model.generate(batch, heads="verbatim")["verbatim"]
    assert calls[0].refs == [toks["verbatim"].decode(h.tokens) for h in verbatim]
    with pytest.raises(ValueError, match="cycle: subtitle -> subtitle"):
        model.generate(batch, heads="subtitle", options={"subtitle": DecodingOptions(draft="subtitle")})
    with pytest.raises(ValueError, match="ZooModel.generate"):  # a decoder alone has no other head
        model.decoders["subtitle"].decode(model.memory(model.encode(batch), "subtitle"), DecodingOptions(draft="verbatim"))


def test_switch_background_puts_another_rows_background_after_the_utterance(tmp_path):
    rng = np.random.default_rng(5)
    clean = (0.2 * np.sin(np.arange(16000) / 5.0)).astype(np.float32)
    rows = []
    for name, level in (("a", 0.01), ("b", 0.1)):
        sf.write(tmp_path / f"{name}_clean.wav", clean, 16000, subtype="PCM_16")
        sf.write(tmp_path / f"{name}.wav", clean + (level * rng.standard_normal(16000)).astype(np.float32), 16000,
                 subtype="PCM_16")
        rows.append(dict(id=name, audio_filepath=str(tmp_path / f"{name}.wav"),
                         clean_filepath=str(tmp_path / f"{name}_clean.wav"), duration=1.0, text_verbatim="a",
                         text_subtitle="A."))
    beds = {r["id"]: sf.read(r["audio_filepath"], dtype="int16")[0].astype(np.int32)
            - sf.read(r["clean_filepath"], dtype="int16")[0] for r in rows}
    torch.manual_seed(0)
    data = SpeechTextDataset(rows, {}, pad_noise=(1.0, 0.5), switch_background=1.0)
    tails = 0
    for _ in range(4):
        padded = data[0]["audio"].numpy() * 32768
        plain = data.audio(0).astype(np.float32)
        start = next(k for k in range(len(padded) - len(plain) + 1) if np.array_equal(padded[k: k + len(plain)], plain))
        before, after = padded[:start], padded[start + len(plain):]
        assert np.allclose(before, beds["a"][len(beds["a"]) - len(before):])  # its own background first
        assert np.allclose(after, beds["b"][: len(after)])                   # then the other row's
        tails += len(after) > 100
    assert tails > 0
    with pytest.raises(ValueError, match="switch_background"):
        SpeechTextDataset(rows, {}, switch_background=1.5)


def test_zoo_transcribe_speculative_writes_the_same_subtitles(tmp_path, monkeypatch):
    """--speculative: the cascaded model's AR subtitle head drafts each segment from its verbatim text."""
    from decoders.drafters import CopyDrafter
    from zoo.cli import main

    rows = _rows(tmp_path)
    torch.manual_seed(0)
    _tiny("cascaded", _tokenizers(rows)).save_pretrained(tmp_path / "m")
    audio = tmp_path / "long.wav"
    sf.write(audio, np.concatenate([sf.read(r["audio_filepath"])[0] for r in rows]), 16000, subtype="PCM_16")
    calls = []
    propose = CopyDrafter.propose
    monkeypatch.setattr(CopyDrafter, "propose", lambda self, ctx: calls.append(1) or propose(self, ctx))
    subtitles = []
    for extra in ([], ["--speculative"]):
        out = tmp_path / f"out{len(extra)}"
        assert main(["transcribe", str(tmp_path / "m"), str(audio), "--out", str(out), "--device", "cpu",
                     "--format", "srt", *extra]) == 0
        subtitles.append((out / "long.subtitle.srt").read_text())
        assert bool(calls) == bool(extra)
    assert subtitles[0] == subtitles[1] and subtitles[0].strip()


def test_aligned_words_time_another_decoders_text_by_ctc_alignment():
    """A hybrid's attention text timed on its CTC posteriors: the Viterbi path puts each character where CTC
    heard it (also where CTC's own best path wrote another one); None where CTC cannot align the text."""
    from decoders.ctc import ctc
    from recipes.asr_subtitle.words import aligned_words

    tok = CharTokenizer(["a", "b", " "])
    head = ctc(8, tok.vocab_size)
    heard = [4, 4, 0, 5, 0, 6, 0, 0, 4, 0]                    # "ab a", 10 frames of 0.1 s
    lp = torch.full((10, tok.vocab_size), -8.0)
    lp[torch.arange(10), torch.tensor(heard)] = -0.01
    words = aligned_words(head, lp.log_softmax(-1), tok.encode("ab a"), 0.1, tok)
    assert [(w.text, round(w.start, 2), round(w.end, 2)) for w in words] == [("ab", 0.0, 0.4), ("a", 0.8, 0.9)]
    other = aligned_words(head, lp.log_softmax(-1), tok.encode("bb a"), 0.1, tok)  # a letter CTC heard as "a"
    assert [w.text for w in other] == ["bb", "a"] and other[0].start < other[0].end <= other[1].start
    assert aligned_words(head, lp.log_softmax(-1), tok.encode("aaaaaa"), 0.1, tok) is None  # 6 + 5 repeats > 10
    assert aligned_words(head, lp, [], 0.1, tok) == []


def test_zoo_transcribe_takes_a_hybrid_model(tmp_path, monkeypatch):
    """A hybrid verbatim head times words by its CTC branch; --attention-text writes its attention decoder's text."""
    import recipes.asr_subtitle.transcribe as tr
    from recipes.asr_subtitle.words import aligned_words
    from zoo.cli import main

    rows = _rows(tmp_path)
    torch.manual_seed(0)
    _tiny("hybrid", _tokenizers(rows)).save_pretrained(tmp_path / "m")
    audio = rows[0]["audio_filepath"]
    aligned = []
    monkeypatch.setattr(tr, "aligned_words", lambda *a, **k: aligned.append(a[2]) or aligned_words(*a, **k))
    for extra in ([], ["--attention-text"]):
        out = tmp_path / f"out{len(extra)}"
        assert main(["transcribe", str(tmp_path / "m"), audio, "--out", str(out), "--device", "cpu",
                     "--format", "srt", *extra]) == 0
        assert [p.name for p in out.iterdir()] == [f"{Path(audio).stem}.verbatim.srt"]  # no subtitle head
        assert bool(aligned) == bool(extra)  # the attention hypotheses were timed by CTC alignment
    _tiny("ctc", _tokenizers(rows)).save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="needs a ctc_attention head"):
        tr.transcribe(ZooModel.from_pretrained(str(tmp_path / "c")), audio, tmp_path / "x",
                      opts=tr.LongFormOptions(attention_text=True))
    with pytest.raises(ValueError, match="no transformer_decoder 'subtitle' head"):  # its subtitle head is CTC
        tr.transcribe(ZooModel.from_pretrained(str(tmp_path / "c")), audio, tmp_path / "x",
                      opts=tr.LongFormOptions(speculative=True))
