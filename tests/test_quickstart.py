"""`zoo quickstart --fast` end to end: every recipe runs and the folder holds every artefact the README lists."""
import json

import pytest

from zoo.cli import main


@pytest.mark.slow
def test_fast_quickstart_writes_every_artefact(tmp_path):
    out = tmp_path / "qs"
    assert main(["quickstart", "--fast", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"toy", "asr_subtitle", "separation", "captioning", "brain_decoding"}
    cards = [out / r / "model" / "README.md" for r in ("toy", "asr_subtitle", "separation", "captioning")]
    cards += [out / "captioning" / "xdecoder" / "model" / "README.md",
              out / "brain_decoding" / "brain_mindbridge_tiny" / "README.md",
              out / "brain_decoding" / "meg_clip_tiny" / "README.md"]
    for card in cards:
        assert "model-index" in card.read_text(), f"{card} has no eval results"
    transcripts = out / "asr_subtitle" / "transcripts"
    for suffix in (".srt", ".vtt", ".alignment.png"):
        assert list(transcripts.glob(f"*{suffix}")), f"no {suffix} in {transcripts}"
    assert len(list((out / "separation" / "example" / "separated").glob("*.wav"))) == 2
    assert (out / "captioning" / "captions.md").read_text().count("\n| ") >= 6
    assert (out / "captioning" / "captions.png").stat().st_size > 0
    assert list((out / "captioning" / "masks").glob("*.png"))
    assert "candidates" in (out / "brain_decoding" / "decode_demo" / "ranking.txt").read_text()
    for recipe in ("toy", "asr_subtitle", "separation", "captioning"):
        assert (out / recipe / "training_curves.png").is_file()
    assert (out / "separation" / "example" / "separated" / "mixture_sources.png").is_file()
    assert "## captioning" in (out / "SUMMARY.md").read_text()
