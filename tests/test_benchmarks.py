"""The issue-4 benchmark scripts run end to end at toy sizes, write their JSON and PNG, and keep their
identity checks (every speed-up row decodes the same tokens as its reference). Guards the scripts
BENCHMARKS.md quotes against rot; the speeds themselves are not asserted (timing lives in benchmarks/)."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def keep_global_state():
    """The scripts set torch's thread count and seed for their own runs; later tests must not inherit them (a
    float-exact comparison elsewhere flipped a near-tie at 2 threads)."""
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.random.set_rng_state(rng)


def test_ar_decoding_matches_transformers_token_for_token(tmp_path):
    pytest.importorskip("transformers")
    from benchmarks.ar_decoding import main

    report = main(["--new-tokens", "5", "--batches", "1", "3", "--beams", "1", "2", "--vocab", "700",
                   "--frames", "48", "--repeats", "1", "--out", str(tmp_path)])
    assert [(r["batch"], r["beams"]) for r in report["rows"]] == [(1, 1), (1, 2), (3, 1), (3, 2)]
    assert all(r["identical"] and r.get("screen_identical", True) for r in report["rows"])
    assert all("screen_s" in r for r in report["rows"] if r["beams"] == 1)
    assert json.loads((tmp_path / "ar_decoding.json").read_text())["rows"] == report["rows"]
    assert (tmp_path / "ar_decoding.png").stat().st_size > 0


def test_speculative_rows_are_identical_to_greedy(tmp_path):
    from benchmarks.speculative import main

    result = main(["--steps", "30", "--drafter-steps", "5", "--repeats", "1", "--out", str(tmp_path)])
    drafters = {(r["batch"], r["drafter"]) for r in result["rows"]}
    assert drafters == {(b, d) for b in (1, 8) for d in ("greedy", "medusa", "early_exit", "copy")}
    assert all(r["identical"] for r in result["rows"])  # a half-trained decoder still decodes losslessly
    assert all(r["tokens_per_pass"] >= 1.0 for r in result["rows"])
    assert (tmp_path / "speculative.json").exists() and (tmp_path / "speculative.png").stat().st_size > 0


def test_parallel_benchmark_writes_its_table(tmp_path):
    from benchmarks.parallel import main

    report = main(["--steps", "20", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "parallel.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert (tmp_path / "parallel.png").stat().st_size > 0


def test_encoder_efficiency_counts_flops(tmp_path):
    from benchmarks.encoder_efficiency import main

    out = tmp_path / "ee.json"
    assert main(["--batch", "1", "--seconds", "1", "--repeats", "1", "--threads", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows and all(r["gflops"] > 0 and 0 < r["ratio"] for r in rows)
