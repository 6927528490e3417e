"""The reproduction record: rankings compared across rebuilds, rounding noise ignored."""
import numpy as np

from lib.evaluation.reproduction import COSINE_TOLERANCE, reproduction_record, stable_top

NAMES = np.array([f"img{i:02d}.jpg" for i in range(14)])


def test_ties_within_the_tolerance_are_ordered_by_name_and_undecided_places_dropped():
    scores = np.linspace(0.9, 0.2, 14).astype(np.float32)          # (14,) clear order
    assert stable_top(NAMES, scores) == list(NAMES[:10])
    noisy = scores.copy()
    noisy[[3, 4]] = noisy[4], noisy[3] + COSINE_TOLERANCE / 10      # 4 and 3 swap by noise
    noisy[4] = noisy[3] - COSINE_TOLERANCE / 10
    assert stable_top(NAMES, noisy) == stable_top(NAMES, scores)
    tied_at_cut = scores.copy()
    tied_at_cut[10] = tied_at_cut[9] - COSINE_TOLERANCE / 10        # 10th and 11th tie
    assert stable_top(NAMES, tied_at_cut) == list(NAMES[:9])


def test_the_checksum_changes_exactly_when_a_ranking_does():
    rng = np.random.default_rng(0)
    scores = rng.random((3, 14)).astype(np.float32)                 # (Q, N)
    queries = ["a/q1.jpg", "b/q2.jpg", "c/q3.jpg"]
    record = reproduction_record(NAMES, queries, scores)
    assert record["queries"] == 3 and list(record["top10"]) == queries
    assert len(record["top10"]["a/q1.jpg"]) == 10
    assert isinstance(record["top10_checksum"], int)
    gaps = np.diff(np.sort(scores, axis=1), axis=1)
    noise = rng.uniform(-1, 1, scores.shape) * min(gaps.min() / 4, COSINE_TOLERANCE / 20)
    again = reproduction_record(NAMES, queries, (scores + noise).astype(np.float32))
    assert again["top10_checksum"] == record["top10_checksum"]       # rounding noise
    swapped = scores.copy()
    best = np.argsort(-scores[1])
    swapped[1, best[0]], swapped[1, best[5]] = scores[1, best[5]], scores[1, best[0]]
    assert reproduction_record(NAMES, queries, swapped)["top10_checksum"] != \
        record["top10_checksum"]
