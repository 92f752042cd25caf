"""Statistics over a study's seeds (mnist99.reports.intervals), checked against scipy's t-tests and by simulation."""
import math

import numpy as np
import pytest
from scipy import stats

from mnist99.reports import intervals

VALUES = [0.9812, 0.9840, 0.9826, 0.9851, 0.9833]
REFERENCE = [0.9801, 0.9822, 0.9830, 0.9829, 0.9815]


def test_the_mean_interval_is_scipys_one_sample_t_interval():
    found = intervals.t_interval(VALUES)
    expected = stats.ttest_1samp(VALUES, 0.0).confidence_interval(0.95)
    assert found.n == 5 and found.mean == pytest.approx(np.mean(VALUES))
    assert (found.low, found.high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    narrower = intervals.t_interval(VALUES, confidence=0.8)
    assert found.low < narrower.low < narrower.high < found.high


def test_the_paired_difference_is_scipys_paired_t_interval():
    found = intervals.paired_difference(VALUES, REFERENCE)
    expected = stats.ttest_rel(VALUES, REFERENCE).confidence_interval(0.95)
    assert (found.low, found.high) == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert found.mean == pytest.approx(np.mean(np.subtract(VALUES, REFERENCE)))
    with pytest.raises(ValueError, match="equal lengths, got 5 and 4"):
        intervals.paired_difference(VALUES, REFERENCE[:4])


def test_one_value_has_a_mean_but_no_interval_and_equal_values_a_zero_width_one():
    one = intervals.t_interval([0.98])
    assert one.mean == 0.98 and math.isnan(one.low) and math.isnan(one.high) and not one.excludes_zero
    same = intervals.t_interval([0.98, 0.98, 0.98])
    assert same.low == same.high == pytest.approx(0.98) and same.excludes_zero
    assert math.isnan(intervals.detectable_difference([0.01]))
    assert intervals.detectable_difference([0.01, 0.01]) == 0.0


@pytest.mark.parametrize("values,excludes", [([0.1, 0.2, 0.15], True), ([-0.1, -0.2, -0.15], True),
                                             ([-0.1, 0.2, 0.05], False)])
def test_excludes_zero_says_whether_the_interval_lies_on_one_side_of_0(values, excludes):
    assert intervals.t_interval(values).excludes_zero is excludes


def test_a_true_difference_of_the_detectable_size_is_found_about_80_percent_of_the_time():
    """Simulated studies of 5 seeds whose paired differences have the spread of these ones: a difference of
    ``detectable_difference`` excludes 0 from the paired t-interval in ~80% of them (the t-approximation is
    1.2% low in size, so slightly under 80%); half of it, far less often."""
    differences = np.subtract(VALUES, REFERENCE)
    detectable = intervals.detectable_difference(differences)
    sd = differences.std(ddof=1)
    assert detectable == pytest.approx((stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4)) * sd / math.sqrt(5))
    rng = np.random.default_rng(0)
    for true, (low, high) in ((detectable, (0.76, 0.81)), (detectable / 2, (0.2, 0.35))):
        studies = rng.normal(true, sd, (20000, 5))
        found = np.mean(stats.ttest_1samp(studies, 0.0, axis=1).pvalue < 0.05)
        assert low < found < high, (true, found)
