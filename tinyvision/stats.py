"""Statistics for honest comparisons across seeds: summaries, differences, verdicts.

Per-seed metric values (one number per training run) -> numbers and sentences that do not overclaim:

- `summarize` -> `Summary`: mean, sample std and a Student t confidence interval of the mean (for
  accuracies on the logit scale, mapped back: never outside [0, 1]; for losses never below 0).
- `compare` -> `Difference`: the difference of two configurations' means, its Welch confidence
  interval and the two-sided Welch t-test p-value.
- `holm`: Holm-Bonferroni adjusted p-values when several comparisons are made at once.
- `verdict` / `outcome`: a plain-English sentence / one word about a `Difference` (who wins, by
  how much, how sure). With fewer than MIN_SEEDS_TO_CONCLUDE seeds on a side the interval is too
  wide to conclude from: the verdict is "inconclusive", whatever the p-value.
- `seeds_for_half_width` / `projected_half_width`: how many seeds a tighter interval would take.

Pure (no I/O, no torch, no global state). None and NaN values (a failed run, a missing metric)
are ignored everywhere, so callers can pass raw result columns. scipy is imported lazily.
In a `Difference`, "a" is the candidate and "b" the reference, diff = mean(a) - mean(b) whatever
the metric's direction; `higher_is_better` only decides who "wins" in the sentence.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["KINDS", "MIN_SEEDS_TO_CONCLUDE", "Difference", "Summary", "compare", "format_p", "holm", "outcome",
           "projected_half_width", "seeds_for_half_width", "summarize", "verdict"]

NAN = float("nan")
MAX_SEEDS = 1000  # cap of seeds_for_half_width
MIN_SEEDS_TO_CONCLUDE = 5  # per side: below it a verdict is "inconclusive", whatever p says
LOGIT_EPS = 1e-12  # a proportion's mean is kept in [eps, 1 - eps] before its logit (see summarize)
KINDS = {  # summarize's `kind` -> the interval it gives, as tables and docstrings name it
    "real": "Student t interval of the mean",
    "proportion": "Student t interval on the logit scale, mapped back (never outside 0 to 100%)",
    "nonnegative": "Student t interval of the mean, never below 0",
}


# -- helpers ----------------------------------------------------------------------------------

def _clean(values: Sequence[Optional[float]]) -> np.ndarray:
    """The values as a float64 array, None and NaN dropped."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return np.asarray(kept, dtype=np.float64)


def _std(x: np.ndarray) -> float:
    """Sample std (ddof=1); exactly 0.0 when all values are equal; NaN when n < 2."""
    if x.size < 2:
        return NAN
    if x.max() == x.min():  # avoid a rounding-noise 1e-17 std that would make a test "certain"
        return 0.0
    return float(np.std(x, ddof=1))


def _t_quantile(confidence: float, df: float) -> float:
    """The two-sided Student-t critical value: t such that P(|T_df| <= t) = confidence."""
    from scipy import stats

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return float(stats.t.ppf(0.5 + confidence / 2.0, df))


def _pct(confidence: float) -> str:
    """0.95 -> '95%'."""
    return f"{100 * confidence:g}%"


# -- one configuration ------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    """Mean of n per-seed values with its sample std and confidence interval (`method`).

    n == 0: everything NaN. n == 1: mean is the value, std and the CI are NaN (one seed says
    nothing about seed-to-seed noise). All-equal values: std 0 and CI (mean, mean).
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    confidence: float = 0.95
    method: str = KINDS["real"]

    @property
    def half_width(self) -> float:
        """Half the CI's width (NaN when the CI is undefined)."""
        return (self.ci_high - self.ci_low) / 2.0

    def format(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """'95.71 ± 0.12 (95% CI 95.41 to 96.01, n=3)': mean ± sample std, then the CI; every
        number times `scale` (100: percent), with `digits` decimals and `unit`. n == 1: '95.71
        (n=1)'; n == 0: 'n/a (n=0)'."""
        def num(x: float) -> str:
            return f"{round(x * scale, digits) + 0.0:.{digits}f}{unit}"

        if self.n == 0:
            return "n/a (n=0)"
        if self.n == 1:
            return f"{num(self.mean)} (n=1)"
        ci = f"{_pct(self.confidence)} CI {num(self.ci_low)} to {num(self.ci_high)}"
        return f"{num(self.mean)} ± {num(self.std)} ({ci}, n={self.n})"


def summarize(values: Sequence[Optional[float]], confidence: float = 0.95, *,
              kind: str = "real") -> Summary:
    """Summary of per-seed values; None and NaN entries are ignored (not counted in n).

    kind "real": mean ± t_{(1+confidence)/2, n-1} · std / sqrt(n) (Student t, sample std);
    "nonnegative" (losses, times): the same, cut at 0; "proportion" (accuracies, in [0, 1]): the
    t interval on the logit scale, mapped back, so never outside [0, 1] (seeds at 99% and 96%:
    1.5% to 100.0%, where plain t says 78.4% to 116.6%). It is centred on logit(mean) with the
    delta-method standard error std / (sqrt(n) · mean (1 - mean)), so it always holds the mean.
    Seeds at exactly 0% or 100% need no correction (no seed's own logit is taken); the mean is
    clipped to [LOGIT_EPS, 1 - LOGIT_EPS] as a numerical guard only.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    x = _clean(values)
    n, method = int(x.size), KINDS[kind]
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN, confidence, method)
    if kind == "proportion" and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"a proportion must be in [0, 1], got {x.min() if x.min() < 0 else x.max()}")
    mean, std = float(x.mean()), _std(x)
    if not std > 0:  # one value (std NaN): no CI; all values equal (std 0): the CI is the mean
        return Summary(n, mean, std, *(2 * [NAN if n == 1 else mean]), confidence, method)
    half = _t_quantile(confidence, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if kind == "proportion":
        from scipy.special import expit  # 1 / (1 + e^-z), without overflow

        m = min(max(mean, LOGIT_EPS), 1.0 - LOGIT_EPS)
        z, half_z = math.log(m / (1.0 - m)), half / (m * (1.0 - m))  # d logit(m) / dm = 1 / (m (1 - m))
        low, high = float(expit(z - half_z)), float(expit(z + half_z))
    elif kind == "nonnegative":
        low = max(low, 0.0)
    return Summary(n, mean, std, low, high, confidence, method)


# -- two configurations -----------------------------------------------------------------------

@dataclass(frozen=True)
class Difference:
    """Candidate a versus reference b on one metric: diff = mean_a - mean_b.

    ci_low/ci_high: the Welch confidence interval of diff (Welch-Satterthwaite df).
    p_value: two-sided Welch t-test. p_adjusted: Holm-corrected p (see `holm`); it equals
    p_value until `holm` is applied to a family of comparisons. When either side has fewer
    than 2 values, p and the CI are NaN (cannot test).
    """

    name_a: str
    name_b: str
    metric: str
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_a: int
    n_b: int
    higher_is_better: bool = True
    p_adjusted: Optional[float] = None  # None -> p_value
    mean_a: float = NAN
    mean_b: float = NAN
    std_a: float = NAN
    std_b: float = NAN
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.p_adjusted is None:
            object.__setattr__(self, "p_adjusted", self.p_value)

    @property
    def testable(self) -> bool:
        """Whether both sides have at least 2 values (so there is a p-value and a CI)."""
        return self.n_a >= 2 and self.n_b >= 2

    @property
    def conclusive(self) -> bool:
        """Whether both sides have MIN_SEEDS_TO_CONCLUDE values: fewer make the CI too wide to judge."""
        return min(self.n_a, self.n_b) >= MIN_SEEDS_TO_CONCLUDE

    @property
    def pooled_std(self) -> float:
        """Pooled sample std of both sides (NaN unless testable); used for seed projections."""
        if not self.testable:
            return NAN
        ss = self.std_a ** 2 * (self.n_a - 1) + self.std_b ** 2 * (self.n_b - 1)
        return math.sqrt(ss / (self.n_a + self.n_b - 2))


def _welch(a: np.ndarray, b: np.ndarray, sa: float, sb: float,
           confidence: float) -> tuple[float, float, float]:
    """(ci_low, ci_high, p) for mean(a) - mean(b); both sides have n >= 2 and not both std 0.

    p is the two-sided Welch t-test, equal to scipy.stats.ttest_ind(a, b, equal_var=False) but
    from the same se and df as the CI: p < 1 - confidence exactly when the CI excludes 0 (and no
    scipy precision warnings when one side's values are all equal).
    """
    from scipy import stats

    diff = float(a.mean() - b.mean())
    va, vb = sa ** 2 / a.size, sb ** 2 / b.size
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = _t_quantile(confidence, df) * se
    p = float(2.0 * stats.t.sf(abs(diff) / se, df))
    return diff - half, diff + half, p


def compare(a: Sequence[Optional[float]], b: Sequence[Optional[float]], *, name_a: str,
            name_b: str, metric: str = "test accuracy", higher_is_better: bool = True,
            confidence: float = 0.95, proportion: bool = False) -> Difference:
    """Welch comparison of per-seed values a (candidate) and b (reference); a proportion's
    difference and its interval lie in [-1, 1] (the interval is clipped there).

    None/NaN values are ignored. Degenerate cases:
    - fewer than 2 values on either side: p and CI are NaN (the verdict says it cannot test);
    - both sides with zero variance and equal means: diff 0, CI (0, 0), p = 1.0;
    - both sides with zero variance and different means: CI (diff, diff) and p = 0.0, because
      with no seed-to-seed noise at all the observed gap is exactly the true gap. (This is the
      limit of the t-test as the noise goes to 0; it usually means the seed was not applied.)
    """
    xa, xb = _clean(a), _clean(b)
    sa, sb = _std(xa), _std(xb)
    ma, mb = (float(x.mean()) if x.size else NAN for x in (xa, xb))
    diff = ma - mb
    if xa.size < 2 or xb.size < 2:
        lo, hi, p = NAN, NAN, NAN
    elif sa == 0.0 and sb == 0.0:
        lo, hi, p = diff, diff, (1.0 if diff == 0.0 else 0.0)
    else:
        lo, hi, p = _welch(xa, xb, sa, sb, confidence)
    lo, hi = (max(lo, -1.0), min(hi, 1.0)) if proportion and not math.isnan(lo) else (lo, hi)
    return Difference(name_a, name_b, metric, diff, lo, hi, p, int(xa.size), int(xb.size),
                      higher_is_better, p, ma, mb, sa, sb, confidence)


def holm(differences: Sequence[Difference]) -> list[Difference]:
    """Copies of `differences` (same order) with Holm-Bonferroni adjusted p in p_adjusted.

    Step-down: sort the m finite p-values ascending, p_(i) -> max_{j <= i} (m - j + 1) p_(j),
    capped at 1, so adjusted p-values are monotone in the raw ones. NaN p-values (untestable
    comparisons) stay NaN and are not counted in m.
    """
    tested = sorted((i for i, d in enumerate(differences) if not math.isnan(d.p_value)),
                    key=lambda i: differences[i].p_value)
    m = len(tested)
    adjusted = {i: NAN for i in range(len(differences))}
    running = 0.0
    for rank, i in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * differences[i].p_value))
        adjusted[i] = running
    return [dataclasses.replace(d, p_adjusted=adjusted[i]) for i, d in enumerate(differences)]


# -- how many seeds ---------------------------------------------------------------------------

def projected_half_width(std: float, n: int, confidence: float = 0.95) -> float:
    """Welch CI half-width of a difference with n seeds per side and the same std on both.

    With equal n and std the Welch df is 2(n - 1), so this is t_{2n-2} · std · sqrt(2 / n).
    """
    if n < 2:
        return NAN
    return _t_quantile(confidence, 2 * n - 2) * std * math.sqrt(2.0 / n)


def seeds_for_half_width(std: float, target: float, confidence: float = 0.95) -> int:
    """Smallest n >= 2 seeds per side whose `projected_half_width` is <= target, in std's units.

    std 0 needs only 2 seeds; an unreachable target (<= 0, or over MAX_SEEDS seeds) gives MAX_SEEDS.
    """
    from scipy import stats

    if std < 0 or math.isnan(std) or math.isnan(target):
        raise ValueError(f"need std >= 0 and a target, got std={std}, target={target}")
    if std == 0:
        return 2
    n = np.arange(2, MAX_SEEDS + 1)
    half = stats.t.ppf(0.5 + confidence / 2.0, 2 * n - 2) * std * np.sqrt(2.0 / n)
    ok = np.flatnonzero(half <= target)
    return int(n[ok[0]]) if ok.size else MAX_SEEDS


# -- sentences --------------------------------------------------------------------------------

def format_p(p: float) -> str:
    """'p < 0.001' below 0.001, else two significant digits: 'p = 0.041', 'p = 0.41'."""
    if math.isnan(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.2g}"
    return f"p = {text}" if "." in text else f"p = {text}.0"


def _decimals(d: Difference, scale: float) -> int:
    """Decimals for a sentence: 1 when scaled (points), else 3 significant digits of the
    larger of |diff| and the CI half-width, so that all numbers in it line up."""
    if scale != 1.0:
        return 1
    ref = max(abs(d.diff), abs(d.ci_high - d.ci_low) / 2.0)
    if not ref > 0 or math.isinf(ref):
        return 3
    return max(0, 2 - math.floor(math.log10(ref)))


def _number(x: float, scale: float, digits: int) -> str:
    """x·scale with `digits` decimals, never '-0.0'."""
    return f"{round(x * scale, digits) + 0.0:.{digits}f}"


def _seeds(n1: int, n2: int) -> str:
    """'5 seeds each' or '5 and 3 seeds'."""
    return f"{n1} seeds each" if n1 == n2 else f"{n1} and {n2} seeds"


def verdict(d: Difference, *, alpha: float = 0.05, scale: float = 100.0, unit: str = " points",
            corrected: bool = False, digits: Optional[int] = None) -> str:
    """One plain-English sentence about d; the better configuration is named first.

    Significant (p < alpha): 'digits-cnn beats digits-mlp by 3.1 points of test accuracy
    (95% CI 2.0 to 4.2, p < 0.001, 5 seeds each)', or for a lower-is-better metric
    'digits-cnn has 0.12 lower test loss than digits-mlp (95% CI ..., p = ..., 5 seeds each)'.
    Otherwise: 'no significant difference in test accuracy between A and B at 5 seeds each
    (p = 0.41; difference 0.4 points, 95% CI -1.1 to 1.9); more seeds would narrow the CI to
    about ±0.9 points with 10 seeds each' (pooled std, twice the seeds, at least
    MIN_SEEDS_TO_CONCLUDE). Fewer than MIN_SEEDS_TO_CONCLUDE seeds a side: 'inconclusive: A vs B
    on test accuracy at 2 seeds each, ...', whatever p. corrected=True judges and reports the Holm
    p (p_adjusted). Numbers are multiplied by `scale` and followed by `unit` (scale=1.0, unit=""
    for losses); `digits` fixes the decimals (default: 1 when scaled, else 3 significant digits of
    the larger of the difference and the CI half-width).
    """
    if not d.testable or math.isnan(d.diff):
        return (f"cannot test: need at least 2 seeds per side to compare {d.name_a} and "
                f"{d.name_b} on {d.metric} (have {d.n_a} and {d.n_b})")
    p = d.p_adjusted if corrected else d.p_value
    p_text = format_p(p) + (" (Holm-corrected)" if corrected else "")
    places = _decimals(d, scale) if digits is None else digits

    def num(x: float) -> str:
        return _number(x, scale, places)

    ci = f"{_pct(d.confidence)} CI {num(d.ci_low)} to {num(d.ci_high)}"
    if not d.conclusive:
        text = (f"inconclusive: {d.name_a} vs {d.name_b} on {d.metric} at {_seeds(d.n_a, d.n_b)}, fewer "
                f"than {MIN_SEEDS_TO_CONCLUDE} per side, so the interval is too wide to conclude "
                f"(difference {num(d.diff)}{unit}, {ci}, {p_text})")
    elif p < alpha:
        return _significant(d, num, unit, _pct(d.confidence) + " CI", p_text)
    else:
        text = (f"no significant difference in {d.metric} between {d.name_a} and {d.name_b} at "
                f"{_seeds(d.n_a, d.n_b)} ({p_text}; difference {num(d.diff)}{unit}, {ci})")
    return text + _more_seeds(d, num, unit)


def outcome(d: Difference, *, alpha: float = 0.05, corrected: bool = False) -> str:
    """The verdict in a word, for a table: "better" or "worse" (a against b, p < alpha), "not
    significant", "inconclusive" (fewer than MIN_SEEDS_TO_CONCLUDE seeds a side) or "cannot test"."""
    if not d.testable or math.isnan(d.diff):
        return "cannot test"
    if not d.conclusive:
        return "inconclusive"
    if not (d.p_adjusted if corrected else d.p_value) < alpha:
        return "not significant"
    return "better" if (d.diff > 0) == d.higher_is_better else "worse"


def _significant(d: Difference, num: Callable[[float], str], unit: str, ci: str,
                 p_text: str) -> str:
    """The sentence for a significant difference, winner first, gap and CI as positive."""
    a_wins = (d.diff > 0) == d.higher_is_better
    win, lose = (d.name_a, d.name_b) if a_wins else (d.name_b, d.name_a)
    n_win, n_lose = (d.n_a, d.n_b) if a_wins else (d.n_b, d.n_a)
    lo, hi = (d.ci_low, d.ci_high) if d.diff > 0 else (-d.ci_high, -d.ci_low)
    tail = f"({ci} {num(lo)} to {num(hi)}, {p_text}, {_seeds(n_win, n_lose)})"
    gap = f"{num(abs(d.diff))}{unit}"
    if d.higher_is_better:
        of = "of" if unit.strip() else "in"
        return f"{win} beats {lose} by {gap} {of} {d.metric} {tail}"
    return f"{win} has {gap} lower {d.metric} than {lose} {tail}"


def _more_seeds(d: Difference, num: Callable[[float], str], unit: str) -> str:
    """'; more seeds would narrow the CI to about ±X with N seeds each' (or '' if no noise)."""
    std = d.pooled_std
    if not std > 0:
        return ""
    n = max(MIN_SEEDS_TO_CONCLUDE, 2 * max(d.n_a, d.n_b))
    half = projected_half_width(std, n, d.confidence)
    return f"; more seeds would narrow the CI to about ±{num(half)}{unit} with {n} seeds each"
