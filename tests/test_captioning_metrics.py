"""Caption metrics against hand-derived values and against pycocoevalcap 1.2 (values recorded offline)."""
import math
import random

import numpy as np
import pytest

from recipes.captioning.metrics import bleu, cider_d, distinct_n, mean_iou


def test_cider_d_hand_values():
    # disjoint corpora: every n-gram has df=1, idf=log(2); hyp == its reference -> cosine 1 for each n
    # that has n-grams: 3 words -> n=1..3 of 4 -> 7.5; 4 words -> 10
    assert cider_d(["a red circle", "two blue squares here"], [["a red circle"], ["two blue squares here"]]) == pytest.approx(8.75)
    # an n-gram in every reference has idf log(2) - log(2) = 0: identical corpora score 0
    assert cider_d(["a red circle", "a red circle"], [["a red circle"], ["a red circle"]]) == pytest.approx(0.0)
    # length penalty: hyp (2 bigrams) vs ref (3 bigrams) -> exp(-1/72) scales unigram cosine; only n=1 shared
    hyps, refs = ["red circle x"], [["red circle x y"]]
    refs2 = refs + [["q"]]  # a second item so that idf > 0
    got = cider_d(hyps + ["q"], refs2)
    # item 1: per n, vectors equal on shared grams; n=1: 3 of 4 unigrams (idf equal) -> cos = 3/sqrt(3*4)
    # n=2: 2/sqrt(2*3); n=3: 1/sqrt(1*2); n=4: 0; item 2 ("q" vs "q"): length 0 vs 0, n=1 cos 1, rest 0
    pen = math.exp(-1 / 72)
    item1 = (3 / math.sqrt(12) + 2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * pen * 10
    item2 = 1 / 4 * 10
    assert got == pytest.approx((item1 + item2) / 2)


def test_cider_d_clips_repeated_words():
    refs = [["a red circle"], ["blue square now"]]
    spam = cider_d(["red red red red", "blue square now"], refs)
    once = cider_d(["red", "blue square now"], refs)
    assert spam < once  # min(h, r) clipping: repeating a matched word cannot raise the score


def test_bleu_hand_values():
    assert bleu(["a b c d"], [["a b c d"]]) == pytest.approx(1.0)
    # all precisions 1, brevity penalty exp(1 - 6/4)
    assert bleu(["a b c d", "x y z w"], [["a b c d e f"], ["x y z w e f"]]) == pytest.approx(math.exp(-0.5))
    assert bleu(["a b c"], [["x y z"]]) < 1e-6


def _random_corpus():
    random.seed(0)
    words = ["a", "the", "red", "blue", "circle", "square", "left", "of", "right", "above", "plays", "hum", "beep", "small", "large"]
    hyps = [" ".join(random.choices(words, k=random.randint(3, 9))) for _ in range(12)]
    refs = [[" ".join(random.choices(words, k=random.randint(3, 9))) for _ in range(random.randint(1, 4))]
            for _ in range(12)]
    refs[0] = [hyps[0]]
    refs[1].append(hyps[1])
    return hyps, refs


def test_matches_pycocoevalcap():
    """Reference numbers from pycocoevalcap 1.2 (Cider().compute_score, Bleu(4)) on the same inputs."""
    hyps, refs = _random_corpus()
    assert cider_d(hyps, refs) == pytest.approx(1.4988426999595355, abs=1e-12)
    assert bleu(hyps, refs) == pytest.approx(0.24529719902783115, abs=1e-12)
    h2 = ["a small red circle left of a large blue square while a low hum plays", "a red circle"]
    r2 = [["a small red circle left of a large blue square while a low hum plays",
           "a large blue square right of a small red circle while a low hum plays"],
          ["a large red circle above a blue square with a high beep"]]
    assert cider_d(h2, r2) == pytest.approx(4.035131535131534, abs=1e-12)
    assert bleu(h2, r2) == pytest.approx(0.5858675004336011, abs=1e-12)
    assert bleu(["a small red circle left of a blue square"], [r2[0]]) == pytest.approx(0.4124939041013732, abs=1e-12)


def test_bleu_matches_torchmetrics():
    from torchmetrics.functional.text import bleu_score

    hyps, refs = _random_corpus()
    assert bleu(hyps, refs) == pytest.approx(float(bleu_score(hyps, refs, n_gram=4)), abs=1e-6)


def test_distinct_and_miou_and_errors():
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["a"], 2) == 0.0
    p = np.zeros((4, 4), bool); p[:2] = True
    t = np.zeros((4, 4), bool); t[1:3] = True
    assert mean_iou([p, t], [t, t]) == pytest.approx((4 / 12 + 1) / 2)
    with pytest.raises(ValueError, match="one list per hypothesis"):
        cider_d(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="list of strings"):
        bleu(["a"], ["a"])
