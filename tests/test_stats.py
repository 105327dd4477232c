"""tinyvision.stats: summaries, Welch comparisons, Holm correction and plain-English verdicts.

Numbers are checked against scipy on fixed inputs and against values known by hand (textbook t
quantiles; the Student-t CDF with 2 degrees of freedom has the closed form
F(t) = 1/2 + t / (2 sqrt(2 + t^2)), which gives exact p-values to compare with).
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from scipy.special import expit, logit

from tinyvision.stats import (MIN_SEEDS_TO_CONCLUDE, Difference, Summary, compare, format_p, holm, outcome,
                              projected_half_width, seeds_for_half_width, summarize, verdict)

T975_DF2, T975_DF4, T975_DF8 = 4.302653, 2.776445, 2.306004  # textbook two-sided 95% quantiles
A = [0.95, 0.97, 0.96, 0.98, 0.94]  # mean 0.96, std sqrt(0.00025)
B = [0.93, 0.95, 0.92, 0.96, 0.94]  # mean 0.94, same std: t = 2 exactly, df = 8
GOOD = [0.97, 0.975, 0.98, 0.972, 0.978]
BAD = [0.90, 0.91, 0.905, 0.895, 0.908]


def _diff(p: float, name: str = "x") -> Difference:
    return Difference(name, "ref", "test accuracy", 0.01, 0.0, 0.02, p, 3, 3)


# ---------------------------------------------------------------------------------------------
# summarize


def test_summary_textbook_values() -> None:
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.half_width == pytest.approx(T975_DF2 / math.sqrt(3), abs=1e-6)
    assert (s.ci_low, s.ci_high) == pytest.approx((2 - s.half_width, 2 + s.half_width))
    s5 = summarize([10.0, 12.0, 11.0, 13.0, 9.0])  # std sqrt(2.5)
    assert s5.half_width == pytest.approx(T975_DF4 * math.sqrt(2.5 / 5), abs=1e-6)


def test_summary_matches_scipy() -> None:
    s = summarize(A, confidence=0.9)
    lo, hi = sps.t.interval(0.9, len(A) - 1, loc=np.mean(A), scale=sps.sem(A))
    assert (s.ci_low, s.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert s.std == pytest.approx(np.std(A, ddof=1))


def test_summary_small_n_and_missing_values() -> None:
    empty = summarize([])
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.mean, empty.std, empty.ci_low))
    one = summarize([0.9])
    assert one.n == 1 and one.mean == 0.9
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    two = summarize([0.9, 1.0])
    assert two.n == 2 and two.std == pytest.approx(math.sqrt(0.005))
    assert two.half_width == pytest.approx(12.706205 * math.sqrt(0.005) / math.sqrt(2), rel=1e-6)
    assert summarize([1.0, None, float("nan"), 3.0, 2.0]) == summarize([1.0, 2.0, 3.0])
    assert summarize([None, float("nan")]).n == 0


def test_summary_all_equal_has_zero_width() -> None:
    s = summarize([0.95] * 4)  # a mean with rounding noise must not give a tiny nonzero std
    assert s.std == 0.0 and s.ci_low == s.ci_high == s.mean


def test_summary_format() -> None:
    s = summarize([0.9571, 0.9559, 0.9583])
    assert s.format(scale=100) == "95.71 ± 0.12 (95% CI 95.41 to 96.01, n=3)"
    assert s.format(scale=100, digits=1, unit="%") == "95.7% ± 0.1% (95% CI 95.4% to 96.0%, n=3)"
    assert summarize([0.9571]).format(scale=100) == "95.71 (n=1)"
    assert summarize([]).format() == "n/a (n=0)"
    assert Summary(2, 0.5, 0.1, 0.4, 0.6, confidence=0.9).format() == (
        "0.50 ± 0.10 (90% CI 0.40 to 0.60, n=2)")


# ---------------------------------------------------------------------------------------------
# bounded intervals: accuracies (proportions) and losses (non-negative)


def _logit_reference(values: list, confidence: float = 0.95) -> tuple[float, float]:
    """The logit-scale t interval built from scipy's pieces: t interval of logit(mean) with the
    delta-method standard error sem / (m (1 - m)), mapped back with expit."""
    m = float(np.mean(values))
    lo, hi = sps.t.interval(confidence, len(values) - 1, loc=logit(m), scale=sps.sem(values) / (m * (1 - m)))
    return float(expit(lo)), float(expit(hi))


@pytest.mark.parametrize("values", [[0.99, 0.96], [0.5, 0.7], A, GOOD, [0.1, 0.02, 0.05], [1.0, 0.0]])
def test_proportion_interval_matches_the_logit_reference_and_stays_in_0_1(values: list) -> None:
    s = summarize(values, kind="proportion")
    assert (s.ci_low, s.ci_high) == pytest.approx(_logit_reference(values), rel=1e-9, abs=1e-12)
    assert 0.0 <= s.ci_low < s.mean < s.ci_high <= 1.0  # never outside [0, 1], always holds the mean
    assert (s.n, s.mean, s.std) == (len(values), pytest.approx(np.mean(values)), pytest.approx(np.std(values, ddof=1)))
    assert "logit" in s.method


def test_two_seeds_at_99_and_96_percent_stay_inside_0_100() -> None:
    plain, bounded = summarize([0.99, 0.96]), summarize([0.99, 0.96], kind="proportion")
    assert plain.ci_high > 1.0  # the plain t interval leaves [0, 100%]: 78.4% to 116.6%
    assert bounded.format(scale=100, unit="%") == "97.50% ± 2.12% (95% CI 1.54% to 100.00%, n=2)"
    assert bounded.ci_high < 1.0


def test_proportion_interval_agrees_with_plain_t_when_many_seeds_and_little_spread() -> None:
    values = list(0.95 + 0.002 * np.random.default_rng(3).standard_normal(40))
    s, t = summarize(values, kind="proportion"), summarize(values)
    assert s.half_width == pytest.approx(t.half_width, rel=0.01)  # the delta method is first order


def test_proportion_edge_cases() -> None:
    full = summarize([1.0] * 3, kind="proportion")
    assert (full.ci_low, full.ci_high) == (1.0, 1.0)  # every seed 100%: no noise, the mean itself
    zero = summarize([0.0, 0.0, 0.01], kind="proportion")  # 0% seeds need no correction
    assert 0.0 < zero.ci_low < zero.mean < zero.ci_high < 1.0
    assert math.isnan(summarize([0.9], kind="proportion").ci_low)
    with pytest.raises(ValueError, match="a proportion must be in"):
        summarize([0.9, 90.0], kind="proportion")
    with pytest.raises(ValueError, match="kind must be one of"):
        summarize([0.9, 0.8], kind="percent")


def test_nonnegative_interval_is_cut_at_zero() -> None:
    losses = [0.01, 0.5]
    s, t = summarize(losses, kind="nonnegative"), summarize(losses)
    assert t.ci_low < 0 and s.ci_low == 0.0 and s.ci_high == t.ci_high
    far = summarize([10.0, 12.0, 11.0], kind="nonnegative")  # far from 0: the plain t interval
    assert (far.ci_low, far.ci_high) == (summarize([10.0, 12.0, 11.0]).ci_low, summarize([10.0, 12.0, 11.0]).ci_high)
    assert far.method == "Student t interval of the mean, never below 0"


# ---------------------------------------------------------------------------------------------
# compare


PAIRS = [(A, B), (GOOD, BAD), ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0, 10.0]),
         ([0.5, 0.7], [0.1, 0.2, 0.4, 0.3])]


@pytest.mark.parametrize("a, b", PAIRS)
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_compare_matches_scipy_welch(a: list, b: list, confidence: float) -> None:
    d = compare(a, b, name_a="a", name_b="b", confidence=confidence)
    res = sps.ttest_ind(a, b, equal_var=False)
    assert d.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert d.p_value == pytest.approx(res.pvalue, rel=1e-12)
    assert d.p_adjusted == d.p_value
    assert (d.n_a, d.n_b) == (len(a), len(b))
    if hasattr(res, "confidence_interval"):  # scipy >= 1.11
        ci = res.confidence_interval(confidence_level=confidence)
        assert (d.ci_low, d.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_compare_hand_values() -> None:
    d = compare(A, B, name_a="a", name_b="b")  # se = 0.01, t = 2, df = 8
    assert d.diff == pytest.approx(0.02)
    assert (d.ci_low, d.ci_high) == pytest.approx((0.02 - T975_DF8 * 0.01, 0.02 + T975_DF8 * 0.01),
                                                  abs=1e-8)
    # b has zero variance, so the Welch df is n_a - 1 = 2 and the t CDF has a closed form
    d2 = compare([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], name_a="a", name_b="b")
    t = 1.0 / math.sqrt(1 / 3)
    assert d2.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert d2.ci_high - d2.diff == pytest.approx(T975_DF2 * math.sqrt(1 / 3), abs=1e-6)


def test_compare_welch_df_by_hand() -> None:
    # var 1 (n 3) vs var 10 (n 5): df = (1/3 + 2)^2 / ((1/3)^2 / 2 + 2^2 / 4) = 98 / 19
    d = compare([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0, 10.0], name_a="a", name_b="b")
    half = sps.t.ppf(0.975, 98 / 19) * math.sqrt(7 / 3)
    assert (d.ci_low, d.ci_high) == pytest.approx((-4 - half, -4 + half), rel=1e-12)


def test_compare_ignores_missing_values() -> None:
    d = compare(A + [None, float("nan")], B, name_a="a", name_b="b")
    assert d == compare(A, B, name_a="a", name_b="b")


def test_compare_needs_two_seeds_per_side() -> None:
    for a, b in (([0.9], [0.8, 0.85]), ([0.9, 0.91], [0.8]), ([], [0.8, 0.9])):
        d = compare(a, b, name_a="a", name_b="b")
        assert not d.testable
        assert math.isnan(d.p_value) and math.isnan(d.ci_low) and math.isnan(d.ci_high)
        assert verdict(d).startswith("cannot test: need at least 2 seeds per side")
    assert compare([0.9], [0.8, 0.85], name_a="a", name_b="b").diff == pytest.approx(0.075)


def test_compare_zero_variance() -> None:
    same = compare([0.95] * 5, [0.95] * 5, name_a="a", name_b="b")
    assert (same.diff, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert verdict(same) == ("no significant difference in test accuracy between a and b at "
                             "5 seeds each (p = 1.0; difference 0.0 points, 95% CI 0.0 to 0.0)")
    gap = compare([0.95] * 5, [0.9] * 6, name_a="a", name_b="b")
    assert gap.p_value == 0.0 and gap.ci_low == gap.ci_high == gap.diff == pytest.approx(0.05)
    assert verdict(gap).startswith("a beats b by 5.0 points of test accuracy (95% CI 5.0 to 5.0, "
                                   "p < 0.001, 5 and 6 seeds)")


# ---------------------------------------------------------------------------------------------
# verdicts


def test_identical_configurations_are_not_different() -> None:
    d = compare(A, list(A), name_a="a", name_b="b")
    assert d.diff == 0.0 and d.p_value == pytest.approx(1.0)
    assert verdict(d).startswith("no significant difference in test accuracy between a and b")
    rng = np.random.default_rng(0)
    a, b = 0.95 + 0.01 * rng.standard_normal((2, 5))  # same distribution
    d = compare(a, b, name_a="a", name_b="b")
    assert d.p_value > 0.05 and d.ci_low < 0 < d.ci_high
    assert verdict(d).startswith("no significant difference")


def test_false_positive_rate_is_about_alpha() -> None:
    rng = np.random.default_rng(1)
    draws = 0.95 + 0.01 * rng.standard_normal((400, 2, 4))
    diffs = [compare(a, b, name_a="a", name_b="b") for a, b in draws]
    p = np.array([d.p_value for d in diffs])
    assert 0.02 < np.mean(p < 0.05) < 0.09  # Welch is close to exact for equal variances
    # p and the CI come from the same t statistic: significant exactly when the CI excludes 0
    assert all((d.p_value < 0.05) == (d.ci_low > 0 or d.ci_high < 0) for d in diffs)
    assert p[:20] == pytest.approx([sps.ttest_ind(a, b, equal_var=False).pvalue
                                    for a, b in draws[:20]], rel=1e-10)


@pytest.mark.parametrize("flip", [False, True])
def test_large_gap_names_the_winner_first(flip: bool) -> None:
    a, b, na, nb = (BAD, GOOD, "digits-mlp", "digits-cnn") if flip else (GOOD, BAD, "digits-cnn",
                                                                          "digits-mlp")
    d = compare(a, b, name_a=na, name_b=nb)
    assert d.p_value < 0.05
    assert verdict(d) == ("digits-cnn beats digits-mlp by 7.1 points of test accuracy "
                          "(95% CI 6.4 to 7.9, p < 0.001, 5 seeds each)")


@pytest.mark.parametrize("flip", [False, True])
def test_large_gap_lower_is_better(flip: bool) -> None:
    low, high = [0.10, 0.11, 0.105, 0.102, 0.108], [0.22, 0.23, 0.21, 0.225, 0.215, 0.20]
    a, b, na, nb = (high, low, "digits-mlp", "digits-cnn") if flip else (low, high, "digits-cnn",
                                                                         "digits-mlp")
    d = compare(a, b, name_a=na, name_b=nb, metric="test loss", higher_is_better=False)
    assert d.p_value < 0.05
    assert verdict(d, scale=1.0, unit="") == (
        "digits-cnn has 0.112 lower test loss than digits-mlp "
        "(95% CI 0.100 to 0.123, p < 0.001, 5 and 6 seeds)")


def test_not_significant_sentence_exact() -> None:
    # diff 2 points, se 1 point, df 8: CI 2 ± 2.306; projection t(18) · 1.581 · sqrt(2/10) = 1.49
    d = compare(A, B, name_a="digits-cnn", name_b="digits-mlp")
    assert verdict(d) == (
        "no significant difference in test accuracy between digits-cnn and digits-mlp at 5 seeds "
        "each (p = 0.081; difference 2.0 points, 95% CI -0.3 to 4.3); more seeds would narrow "
        "the CI to about ±1.5 points with 10 seeds each")
    assert projected_half_width(math.sqrt(0.00025), 10) == pytest.approx(0.014856, abs=1e-6)


def test_verdict_corrected_uses_holm_p() -> None:
    d = compare([0.95, 0.96, 0.97, 0.955, 0.965], [0.93, 0.94, 0.945, 0.96, 0.95], name_a="a", name_b="b")
    assert 0.01 < d.p_value < 0.05
    fam = holm([d, _diff(0.5), _diff(0.6)])
    assert fam[0].p_adjusted == pytest.approx(3 * d.p_value)
    assert verdict(fam[0]).startswith("a beats b")
    corrected = verdict(fam[0], corrected=True)
    assert corrected.startswith("no significant difference")
    assert f"{format_p(3 * d.p_value)} (Holm-corrected);" in corrected


@pytest.mark.parametrize("n", [2, 3, 4])
def test_fewer_than_five_seeds_is_inconclusive_whatever_p(n: int) -> None:
    d = compare(GOOD[:n], BAD[:n], name_a="a", name_b="b")
    assert d.p_value < 0.05 and not d.conclusive and MIN_SEEDS_TO_CONCLUDE == 5
    text = verdict(d)
    assert text.startswith(f"inconclusive: a vs b on test accuracy at {n} seeds each, fewer than 5 per side, "
                           "so the interval is too wide to conclude (difference ")
    assert format_p(d.p_value) in text and text.endswith(f"with {max(5, 2 * n)} seeds each")
    assert outcome(d) == "inconclusive"


def test_outcome_words() -> None:
    assert outcome(compare(GOOD, BAD, name_a="a", name_b="b")) == "better"
    assert outcome(compare(BAD, GOOD, name_a="a", name_b="b")) == "worse"
    low, high = [0.10, 0.11, 0.105, 0.102, 0.108], [0.22, 0.23, 0.21, 0.225, 0.215]
    assert outcome(compare(low, high, name_a="a", name_b="b", higher_is_better=False)) == "better"
    assert outcome(compare(A, B, name_a="a", name_b="b")) == "not significant"  # p = 0.081
    assert outcome(compare([0.9], BAD, name_a="a", name_b="b")) == "cannot test"
    d = compare([0.95, 0.96, 0.97, 0.955, 0.965], [0.93, 0.94, 0.945, 0.96, 0.95], name_a="a", name_b="b")
    family = holm([d, _diff(0.5), _diff(0.6)])  # p = 0.043, Holm 0.13
    assert outcome(family[0]) == "better" and outcome(family[0], corrected=True) == "not significant"


def test_verdict_digits_and_unit_override() -> None:
    d = compare(GOOD, BAD, name_a="a", name_b="b")
    assert verdict(d, scale=1.0, unit="", digits=2).startswith("a beats b by 0.07 in test accuracy "
                                                               "(95% CI 0.06 to 0.08")


def test_format_p() -> None:
    assert [format_p(p) for p in (0.0, 0.0009, 0.001, 0.0412, 0.41, 0.05, 1.0)] == [
        "p < 0.001", "p < 0.001", "p = 0.001", "p = 0.041", "p = 0.41", "p = 0.05", "p = 1.0"]


# ---------------------------------------------------------------------------------------------
# holm


def test_holm_hand_example() -> None:
    out = holm([_diff(0.01, "a"), _diff(0.04, "b"), _diff(0.03, "c")])
    assert [d.p_adjusted for d in out] == pytest.approx([0.03, 0.06, 0.06])
    assert [d.name_a for d in out] == ["a", "b", "c"]  # same order, raw p untouched
    assert [d.p_value for d in out] == [0.01, 0.04, 0.03]


def test_holm_nan_not_counted_and_capped() -> None:
    out = holm([_diff(float("nan")), _diff(0.02), _diff(0.6), _diff(0.3)])
    assert math.isnan(out[0].p_adjusted)
    assert [d.p_adjusted for d in out[1:]] == pytest.approx([0.06, 0.6, 0.6])  # m = 3
    assert holm([_diff(0.7), _diff(0.8)])[0].p_adjusted == 1.0
    assert holm([]) == [] and holm([_diff(0.2)])[0].p_adjusted == 0.2


def test_holm_monotone_and_bounded() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 0.2, 12)
    adj = np.array([d.p_adjusted for d in holm([_diff(float(x)) for x in p])])
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and np.all(adj <= 1)
    assert np.all(adj <= np.minimum(1, len(p) * p))  # never worse than Bonferroni


# ---------------------------------------------------------------------------------------------
# seeds


def test_seeds_for_half_width() -> None:
    targets = [0.001, 0.003, 0.005, 0.01, 0.02, 0.05]
    seeds = [seeds_for_half_width(0.01, t) for t in targets]
    assert seeds == sorted(seeds, reverse=True) and seeds[-1] == 2
    for n, t in zip(seeds, targets):
        assert projected_half_width(0.01, n) <= t
        if n > 2:
            assert projected_half_width(0.01, n - 1) > t  # smallest such n
    assert seeds_for_half_width(0.0, 0.001) == 2
    assert seeds_for_half_width(0.01, 0.0) == 1000 == seeds_for_half_width(1.0, 1e-6)
    assert seeds_for_half_width(0.01, 0.01, confidence=0.99) > seeds_for_half_width(0.01, 0.01)


def test_module_does_not_import_torch() -> None:
    path = Path(__file__).resolve().parents[1] / "tinyvision" / "stats.py"
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('s', {str(path)!r})\n"
            "m = importlib.util.module_from_spec(spec); sys.modules['s'] = m\n"
            "spec.loader.exec_module(m)\n"
            "m.verdict(m.compare([1, 2, 3], [2, 3, 4], name_a='a', name_b='b'))\n"
            "assert 'torch' not in sys.modules, 'stats imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_difference_of_accuracies_has_its_interval_inside_plus_minus_100_points() -> None:
    """The classic lr sweep's seeds at lr 0.1 (13%-93%) against lr 1e-6 (~10%): a plain Welch
    interval reaches +104 points; a difference of proportions cannot, so it is clipped at 1."""
    wild, flat = [0.13, 0.93, 0.11, 0.92, 0.85], [0.09, 0.10, 0.095, 0.098, 0.091]
    plain = compare(wild, flat, name_a="0.1", name_b="1e-06")
    bounded = compare(wild, flat, name_a="0.1", name_b="1e-06", proportion=True)
    assert plain.ci_high > 1.0 and bounded.ci_high == 1.0
    assert bounded.ci_low == plain.ci_low and bounded.p_value == plain.p_value  # the test itself is unchanged
    tight = compare([0.95, 0.96, 0.97], [0.90, 0.91, 0.92], name_a="a", name_b="b", proportion=True)
    loose = compare([0.95, 0.96, 0.97], [0.90, 0.91, 0.92], name_a="a", name_b="b")
    assert (tight.ci_low, tight.ci_high) == (loose.ci_low, loose.ci_high)  # inside the bounds: unchanged
