"""The device check script stays runnable: every preset's section trains and decodes on CPU, in fp32 and
under bf16 autocast (the path CUDA runs take), so a GPU lease is not spent on a broken script."""
import json

import pytest

from benchmarks.gpu_check import main


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_section_trains_and_decodes_on_cpu(tmp_path, precision):
    out = tmp_path / "gpu_check.json"
    assert main(["--quick", "--device", "cpu", "--precision", precision, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["precision"] == ("bf16-autocast" if precision == "bf16" else "fp32")
    sections = report["sections"]
    assert {"asr_ctc_tiny", "rtfx_asr_ctc_tiny", "conv_tasnet_tiny", "brain_mindbridge_tiny",
            "caption_av_tiny"} <= set(sections)
    assert not [name for name, s in sections.items() if "error" in s]  # a non-finite loss is an error too
    assert sum("steps_per_s" in s for s in sections.values()) >= 8
    assert sections["rtfx_asr_ctc_tiny"]["rtfx"] > 1  # faster than real time even on CPU
