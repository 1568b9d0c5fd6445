"""Duration bucketing over lhotse (zoo/data/bucketing.py)."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.data.bucketing import BucketingSampler, padded_fraction
from zoo.data.sampler import BatchSamplerProtocol


@pytest.fixture(scope="module")
def durations():
    """Utterance-like durations: mean ~3.8 s, 1-12 s (the corpus's range)."""
    return np.clip(np.random.default_rng(0).gamma(6.0, 0.65, 1500), 1.0, 12.0)


def _random_batches(n: int, rows_per_batch: int, seed: int = 0) -> list[list[int]]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    return [order[i:i + rows_per_batch] for i in range(0, n, rows_per_batch)]


def test_padded_fraction_definition():
    assert padded_fraction([[0, 1], [2]], [1.0, 3.0, 2.0]) == pytest.approx(1 - 6.0 / (2 * 3.0 + 2.0))
    assert padded_fraction([[0, 1]], [2.0, 2.0]) == 0.0


def test_bucketing_pads_at_most_ten_percent_where_random_batching_pads_far_more(durations):
    sampler = BucketingSampler(durations, max_duration=60.0, num_buckets=10, seed=0)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(durations)))   # every row once
    assert all(len(b) * durations[b].max() <= 60.0 for b in batches)               # the padded budget holds
    rows_per_batch = round(len(durations) / len(batches))
    bucketed = padded_fraction(batches, durations)
    randomly = np.mean([padded_fraction(_random_batches(len(durations), rows_per_batch, s), durations)
                        for s in range(3)])
    assert bucketed <= 0.10 and randomly > 0.3 and randomly > 3 * bucketed


def test_resumes_exactly_from_its_state_dict(durations):
    def make():
        return BucketingSampler(durations, max_duration=40.0, num_buckets=8, seed=7)

    reference = make()
    reference.set_epoch(2)
    full = list(reference)
    assert isinstance(reference, BatchSamplerProtocol) and len(reference) == len(full)

    interrupted = make()
    interrupted.set_epoch(2)
    it = iter(interrupted)
    head = [next(it) for _ in range(11)]
    state = interrupted.state_dict()
    assert state["served"] == 11 and all(isinstance(v, (int, float, bool)) for v in state.values())

    resumed = make()
    resumed.load_state_dict(dict(state))
    assert head + list(resumed) == full
    resumed.set_epoch(3)
    assert list(resumed) != full                                                 # a new epoch reshuffles
    with pytest.raises(ValueError, match="seed=7 but this sampler has seed=8"):
        BucketingSampler(durations, max_duration=40.0, num_buckets=8, seed=8).load_state_dict(state)


def test_two_ranks_get_disjoint_batches_of_similar_length(durations):
    ranks = [BucketingSampler(durations, max_duration=60.0, rank=r, world_size=2, seed=1) for r in range(2)]
    b0, b1 = (list(s) for s in ranks)
    assert len(b0) == len(b1) == len(ranks[0])                                   # same number of steps
    rows0, rows1 = {i for b in b0 for i in b}, {i for b in b1 for i in b}
    assert not rows0 & rows1
    assert len(rows0 | rows1) >= len(durations) - 1                              # at most 1 tail row dropped
    # synced buckets: at each step both ranks draw from the same duration range
    gaps = [abs(np.median(durations[x]) - np.median(durations[y])) for x, y in zip(b0, b1, strict=True)]
    assert np.median(gaps) < 0.5
    single = BucketingSampler(durations, max_duration=60.0, seed=1)
    assert padded_fraction(b0 + b1, durations) <= 0.10 and len(single) > len(b0)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="longer than max_duration"):
        BucketingSampler([1.0, 50.0], max_duration=30.0)
    with pytest.raises(ValueError, match="row 1 has duration 0"):
        BucketingSampler([1.0, 0.0], max_duration=30.0)
    with pytest.raises(ValueError, match="rank 2 is outside"):
        BucketingSampler([1.0, 2.0], max_duration=30.0, rank=2, world_size=2)
