import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from cnnlab.study.stats import (
    McNemar,
    Paired,
    Summary,
    holm,
    mcnemar_exact,
    min_p,
    paired_test,
    seeds_note,
    significant,
    summarize,
)

# --- summarize ---------------------------------------------------------------------------------


def test_summarize_matches_numpy_and_the_t_interval_computed_by_hand():
    values = [0.81, 0.84, 0.79, 0.86]
    x = np.array(values)
    mean, std, n = x.mean(), x.std(ddof=1), len(x)
    half = sps.t.ppf(0.975, n - 1) * std / math.sqrt(n)

    s = summarize(values)

    assert s.n == 4
    assert s.mean == pytest.approx(mean)
    assert s.std == pytest.approx(std)
    assert s.ci_low == pytest.approx(mean - half)
    assert s.ci_high == pytest.approx(mean + half)


def test_summarize_uses_the_confidence_asked_for():
    values = [1.0, 2.0, 4.0]
    x = np.array(values)
    half = sps.t.ppf(0.95, 2) * x.std(ddof=1) / math.sqrt(3)  # 90 %: 5 % in each tail

    s = summarize(values, confidence=0.90)

    assert (s.ci_low, s.ci_high) == pytest.approx((x.mean() - half, x.mean() + half))


def test_summarize_ignores_nan_values_and_counts_only_the_finite_ones():
    s = summarize([0.5, math.nan, 0.7, 0.9])

    assert s.n == 3
    assert s.mean == pytest.approx(0.7)
    assert s.std == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))


def test_summarize_of_one_value_has_a_mean_but_no_spread():
    s = summarize([0.8])

    assert s.n == 1
    assert s.mean == 0.8
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)


def test_summarize_of_nothing_finite_is_all_nan():
    for values in ([], [math.nan, math.nan]):
        s = summarize(values)
        assert s.n == 0
        assert all(math.isnan(v) for v in (s.mean, s.std, s.ci_low, s.ci_high))


def test_summarize_of_identical_values_has_the_point_as_its_interval():
    s = summarize([0.75, 0.75, 0.75])

    assert (s.n, s.mean, s.std, s.ci_low, s.ci_high) == (3, 0.75, 0.0, 0.75, 0.75)


def test_summarize_refuses_a_confidence_outside_0_1():
    with pytest.raises(ValueError, match="confidence"):
        summarize([1.0, 2.0], confidence=95)


def test_summary_json_has_null_for_nan_and_the_interval_as_a_pair():
    assert summarize([0.8]).to_json() == {"n": 1, "mean": 0.8, "std": None, "ci95": [None, None]}
    full = summarize([1.0, 2.0, 3.0]).to_json()
    assert full["n"] == 3 and full["mean"] == pytest.approx(2.0) and len(full["ci95"]) == 2
    for s in (summarize([]), summarize([0.8]), summarize([1.0, 2.0, 3.0])):
        json.dumps(s.to_json(), allow_nan=False)


# --- mcnemar_exact -----------------------------------------------------------------------------

# 20 images: 6 both right, 10 only A right, 2 only B right, 2 both wrong
A = [True] * 6 + [True] * 10 + [False] * 2 + [False] * 2
B = [True] * 6 + [False] * 10 + [True] * 2 + [False] * 2


def test_mcnemar_counts_the_discordant_pairs_and_matches_scipy_binomtest():
    r = mcnemar_exact(A, B)

    assert (r.only_a, r.only_b) == (10, 2)
    assert r.p == pytest.approx(sps.binomtest(10, 12, 0.5).pvalue)
    assert r.p < 0.05  # 10 vs 2 is a real difference: 0.0386


def test_mcnemar_is_symmetric_in_a_and_b():
    ab, ba = mcnemar_exact(A, B), mcnemar_exact(B, A)

    assert (ba.only_a, ba.only_b) == (ab.only_b, ab.only_a)
    assert ba.p == pytest.approx(ab.p)


def test_mcnemar_without_a_discordant_pair_has_p_1():
    r = mcnemar_exact([True, False, True], [True, False, True])

    assert r == McNemar(0, 0, 1.0)


def test_mcnemar_with_different_lengths_names_both():
    with pytest.raises(ValueError, match=r"3.*2"):
        mcnemar_exact([True, True, False], [True, False])


def test_mcnemar_json_is_plain_json():
    d = mcnemar_exact(A, B).to_json()
    assert d["only_a"] == 10 and d["only_b"] == 2
    json.dumps(d, allow_nan=False)


# --- paired_test -------------------------------------------------------------------------------

CELL_A = [0.82, 0.85, 0.80, 0.84, 0.83, 0.86]
CELL_B = [0.80, 0.81, 0.79, 0.80, 0.82, 0.83]


def test_paired_t_matches_scipy_ttest_rel():
    expected = sps.ttest_rel(CELL_A, CELL_B)

    r = paired_test(CELL_A, CELL_B, "t")

    assert (r.method, r.n) == ("t", 6)
    assert r.statistic == pytest.approx(expected.statistic)
    assert r.p == pytest.approx(expected.pvalue)


def test_paired_wilcoxon_matches_scipy_wilcoxon():
    expected = sps.wilcoxon(CELL_A, CELL_B)

    r = paired_test(CELL_A, CELL_B, "wilcoxon")

    assert (r.method, r.n) == ("wilcoxon", 6)
    assert r.statistic == pytest.approx(expected.statistic)
    assert r.p == pytest.approx(expected.pvalue)


def test_paired_test_with_every_difference_zero_is_no_evidence():
    for method in ("t", "wilcoxon"):
        r = paired_test([0.8, 0.9, 0.7], [0.8, 0.9, 0.7], method)
        assert r == Paired(method, 3, 0.0, 1.0)


def test_paired_test_drops_a_pair_where_either_value_is_nan():
    a = [0.82, math.nan, 0.80, 0.84, 0.83]
    b = [0.80, 0.81, 0.79, math.nan, 0.82]

    r = paired_test(a, b, "t")

    assert r.n == 3
    assert r.p == pytest.approx(sps.ttest_rel([0.82, 0.80, 0.83], [0.80, 0.79, 0.82]).pvalue)


def test_paired_test_of_fewer_than_two_pairs_is_not_computable():
    r = paired_test([0.8, math.nan], [0.7, 0.6], "t")

    assert r.n == 1 and math.isnan(r.statistic) and math.isnan(r.p)
    assert r.to_json() == {"method": "t", "n": 1, "statistic": None, "p": None}


def test_paired_test_names_the_choices_for_an_unknown_method():
    with pytest.raises(ValueError, match=r"'ttest'.*t, wilcoxon"):
        paired_test([1.0, 2.0], [1.0, 3.0], "ttest")


def test_paired_test_refuses_different_lengths():
    with pytest.raises(ValueError, match=r"3 and 2"):
        paired_test([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")  # scipy: constant differences
def test_paired_json_is_plain_json_even_for_an_infinite_statistic():
    # the same difference on every seed: t is infinite, which JSON cannot hold either
    r = paired_test([3.0, 2.0, 1.0], [1.0, 0.0, -1.0], "t")
    assert math.isinf(r.statistic)
    json.dumps(r.to_json(), allow_nan=False)
    json.dumps(paired_test(CELL_A, CELL_B, "wilcoxon").to_json(), allow_nan=False)


# --- holm --------------------------------------------------------------------------------------


def test_holm_on_a_textbook_example_keeps_the_input_order():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_leaves_nan_in_place_and_does_not_count_it():
    out = holm([0.01, math.nan, 0.04])

    assert math.isnan(out[1])
    assert [out[0], out[2]] == pytest.approx([0.02, 0.04])  # m = 2, not 3


def test_holm_caps_at_1():
    # sorted: 0.4*3 = 1.2 -> 1, then 0.5*2 = 1.0 and 0.6*1 = 0.6 lifted to 1 by monotonicity
    assert holm([0.4, 0.6, 0.5]) == [1.0, 1.0, 1.0]
    assert holm([0.6, 0.2]) == pytest.approx([0.6, 0.4])


def test_holm_of_nothing_is_nothing():
    assert holm([]) == []


# --- min_p, seeds_note, significant -----------------------------------------------------------


def test_min_p_of_wilcoxon_is_2_over_2_to_the_n_and_scipy_reaches_it():
    assert [min_p(n, "wilcoxon") for n in (1, 3, 6)] == [1.0, 0.25, 0.03125]
    # every difference positive is the most extreme outcome: scipy's exact p is the floor
    assert sps.wilcoxon([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).pvalue == pytest.approx(
        min_p(6, "wilcoxon")
    )


def test_min_p_of_t_is_0_from_two_seeds_and_nan_below():
    assert math.isnan(min_p(1, "t"))
    assert min_p(3, "t") == 0.0 and min_p(6, "t") == 0.0


def test_min_p_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="wilcoxon"):
        min_p(3, "sign")


@pytest.mark.parametrize("method", ["t", "wilcoxon"])
def test_seeds_note_for_one_seed_says_there_is_no_spread(method):
    note = seeds_note(1, method)

    assert note is not None
    assert "1 seed per cell" in note and "at least 3 seeds" in note


def test_seeds_note_for_three_seeds_wilcoxon_says_its_floor_and_the_seeds_needed():
    note = seeds_note(3, "wilcoxon")

    assert note is not None
    assert "3 seeds" in note and "p = 0.25" in note and "0.05" in note and "at least 6" in note


def test_seeds_note_for_three_seeds_t_says_only_large_differences_show():
    note = seeds_note(3, "t")

    assert note is not None
    assert "3 seeds" in note and "t-test" in note


@pytest.mark.parametrize("method", ["t", "wilcoxon"])
def test_seeds_note_for_six_seeds_has_nothing_to_say(method):
    assert seeds_note(6, method) is None


def test_seeds_note_follows_alpha():
    # 2 / 2**6 = 0.031 > 0.01: eight seeds (0.0078) are needed at alpha 0.01
    note = seeds_note(6, "wilcoxon", alpha=0.01)

    assert note is not None and "at least 8 seeds" in note


def test_significant_compares_with_alpha_and_is_false_for_nan():
    assert significant(0.01)
    assert significant(0.05)
    assert not significant(0.051)
    assert not significant(0.03, alpha=0.01)
    assert not significant(math.nan)


def test_summary_is_frozen():
    s = summarize([1.0, 2.0])
    with pytest.raises(AttributeError):
        s.n = 3  # type: ignore[misc]
    assert isinstance(s, Summary)
