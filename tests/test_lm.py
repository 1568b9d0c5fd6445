"""Kneser-Ney n-gram LM: a proper distribution, learns its text, survives save/load, steers CTC beam search."""
import math
import random

import pytest
import torch

from decoders.ctc import prefix_beam_search
from zoo.lm import NGramLM


def corpus(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)  # tokens 4..9; "words" 4 5 6 and 7 8 separated by 9 (a space)
    words = [[4, 5, 6], [7, 8], [4, 8]]
    out = []
    for _ in range(n):
        seq = []
        for _ in range(rng.randint(1, 4)):
            seq += rng.choice(words) + [9]
        out.append(seq[:-1])
    return out


@pytest.mark.parametrize("order", [1, 3, 5])
def test_every_context_is_a_distribution(order):
    lm = NGramLM.train(corpus(200, 0), vocab_size=10, order=order)
    for context in ([], [4], [4, 5], [9, 7, 8], [1, 2, 3, 0]):  # seen, partly seen and unseen contexts
        total = sum(math.exp(lm.score(context, t)) for t in range(10))
        assert total == pytest.approx(1.0, abs=1e-9)


def test_held_out_text_is_likelier_than_uniform_and_higher_orders_help():
    train, test = corpus(300, 0), corpus(50, 1)
    tokens = sum(len(s) for s in test)
    uniform = tokens * math.log(10)
    nll = {o: -sum(NGramLM.train(train, 10, o).log_prob(s) for s in test) for o in (1, 3)}
    assert nll[1] < uniform and nll[3] < nll[1]


def test_save_load_gives_the_same_scores(tmp_path):
    lm = NGramLM.train(corpus(100, 0), 10, order=4)
    loaded = NGramLM.load(lm.save(tmp_path / "lm.json"))
    for context in ([], [4, 5], [9, 4, 8]):
        for t in range(10):
            assert loaded.score(context, t) == lm.score(context, t)


def test_lm_fusion_fixes_a_word_boundary_the_acoustics_leave_open():
    # frames 4 5 6, then a near-tie between blank and a space (9), then 7: the acoustics alone merge the
    # words into [4, 5, 6, 7]; in the LM's text a word 4 5 6 is always followed by a space
    lp = torch.full((5, 10), -20.0)
    lp[0, 4] = lp[1, 5] = lp[2, 6] = lp[4, 7] = 0.0
    lp[3, 0], lp[3, 9] = math.log(0.6), math.log(0.4)
    lp = lp.log_softmax(-1)
    plain = prefix_beam_search(lp, 4)[0][0]
    assert plain == (4, 5, 6, 7)
    lm = NGramLM.train(corpus(300, 0), 10, order=4)
    fused = prefix_beam_search(lp, 4, lm=lm, lm_weight=1.0)[0][0]
    assert fused == (4, 5, 6, 9, 7)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="order"):
        NGramLM(order=0)
    with pytest.raises(ValueError, match="no training tokens"):
        NGramLM.train([], 10)


class _Ids:
    """A tokenizer stand-in for the tuner: ids 4..9 as letters, 9 as a space."""

    def decode(self, ids):
        return "".join(" " if t == 9 else "abcde"[t - 4] for t in ids)


def _ambiguous_spaces(seq: list[int]) -> torch.Tensor:
    """Log probs that spell ``seq`` one token a frame with a blank between, every space a 0.6/0.4 tie with blank
    (acoustics alone merge the words)."""
    frames = []
    for t in seq:
        row = torch.full((10,), 1e-6)
        if t == 9:
            row[0], row[9] = 0.6, 0.4
        else:
            row[t] = 1.0
        frames += [row, torch.full((10,), 1e-6).index_fill(0, torch.tensor([0]), 1.0)]
    return torch.stack(frames).log().log_softmax(-1)


def test_lm_fusion_tuning_picks_a_weight_that_helps_and_none_for_a_misleading_lm():
    from recipes.asr_subtitle.evaluate import tune_lm_fusion

    seqs = [s for s in corpus(40, 2) if 9 in s][:12]
    lps, refs = [_ambiguous_spaces(s) for s in seqs], [_Ids().decode(s) for s in seqs]
    good = NGramLM.train(corpus(300, 0), 10, order=4)
    grid, (weight, bonus) = tune_lm_fusion(lps, refs, _Ids(), good, beam=4, bonuses=(0.0,))  # a bonus alone
    # would also insert the spaces here
    assert grid[(0.0, 0.0)] > 0.3  # without the LM the words merge
    assert weight > 0 and grid[(weight, bonus)] == 0.0 == min(grid.values())
    # the same LM misleads where the speech really runs the words together: weight 0 is chosen
    merged = [_Ids().decode([t for t in s if t != 9]) for s in seqs]
    grid, (weight, bonus) = tune_lm_fusion(lps, merged, _Ids(), good, beam=4, bonuses=(0.0,))
    assert weight == 0.0 and grid[(0.0, 0.0)] == 0.0 < min(v for (w, _), v in grid.items() if w > 0)
