import pytest

from zoo.subtitles import CueOptions, Word, parse_srt, to_srt, to_vtt, words_to_cues


def _words(text, start=0.0, step=0.4):
    return [Word(w, start + i * step, start + i * step + 0.3) for i, w in enumerate(text.split())]


def test_line_width_and_count_are_respected_and_round_trip():
    words = _words("the weather in amsterdam will be sunny on tuesday with a light breeze from the west")
    cues = words_to_cues([words], CueOptions(max_line_width=20, max_line_count=2))
    assert all(len(line) <= 20 for c in cues for line in c.lines)
    assert all(len(c.lines) <= 2 for c in cues)
    assert " ".join(" ".join(c.lines) for c in cues) == " ".join(w.text for w in words)
    back = parse_srt(to_srt(cues))
    assert [(round(c.start, 3), round(c.end, 3), c.lines) for c in back] == \
        [(round(c.start, 3), round(c.end, 3), c.lines) for c in cues]
    assert to_vtt(cues).startswith("WEBVTT")


def test_cues_break_at_segments_and_pauses():
    a, b = _words("hello there"), _words("good morning", start=5.0)
    cues = words_to_cues([a, b])
    assert [c.text for c in cues] == ["hello there", "good morning"]
    cues = words_to_cues([a + b])  # one segment, but a 4.3 s pause
    assert len(cues) == 2 and cues[1].start == pytest.approx(5.0)


def test_bad_options_and_times_raise():
    with pytest.raises(ValueError, match="max_line_width"):
        words_to_cues([_words("a b")], CueOptions(max_line_width=0))
    with pytest.raises(ValueError, match="ends"):
        words_to_cues([[Word("x", 2.0, 1.0)]])
