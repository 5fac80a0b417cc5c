"""PSI and KS as computed from reference profiles, on small literal data."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from validation import profile as profiles
from validation.profile import categorical_profile, current_stats, ks, numeric_profile, psi


def _current(profile, values):
    return current_stats(pd.DataFrame({profile.name: values}), [profile])[profile.name]


def test_identical_samples_have_zero_psi_and_ks() -> None:
    values = np.arange(1000, dtype=float)
    p = numeric_profile("x", values)
    current = _current(p, values)
    assert psi(p, current) == pytest.approx(0.0, abs=1e-12)
    assert ks(p, current) == pytest.approx(0.0, abs=1e-12)


def test_psi_matches_the_formula_on_decile_bins() -> None:
    reference = np.arange(1, 1001, dtype=float)  # deciles at 100, 200, ... 900
    p = numeric_profile("x", reference)
    assert p.bins == [100.5 * 1 + 100.0 * (k - 1) for k in range(1, 10)]
    # Current: every value in the first decile bin (<= 100) and none elsewhere.
    current = _current(p, np.full(50, 7.0))
    expected = (1 - 0.1) * np.log(1 / 0.1) + 9 * (1e-4 - 0.1) * np.log(1e-4 / 0.1)
    assert psi(p, current) == pytest.approx(expected, rel=1e-9)


def test_ks_equals_scipy_at_the_grid_and_never_exceeds_it() -> None:
    rng = np.random.default_rng(0)
    reference, shifted = rng.normal(size=20_000), rng.normal(0.3, size=20_000)
    p = numeric_profile("x", reference)
    ours = ks(p, _current(p, shifted))
    exact = stats.ks_2samp(reference, shifted).statistic
    assert ours <= exact + 1e-12
    assert ours == pytest.approx(exact, abs=0.01)  # a 2% grid of a smooth distribution


def test_discrete_counts_with_a_point_mass() -> None:
    reference = np.array([0] * 700 + [1] * 200 + [2] * 100, dtype=float)
    p = numeric_profile("clicks", reference)
    # Cut halfway between distinct values; nothing lies above the largest.
    assert p.grid == [0.5, 1.5] and p.bins == [0.5, 1.5]
    assert p.cdf == pytest.approx([0.7, 0.9])
    current = _current(p, np.array([0] * 500 + [1] * 300 + [2] * 200, dtype=float))
    assert ks(p, current) == pytest.approx(0.2)
    bins_ref, bins_cur = np.array([0.7, 0.2, 0.1]), np.array([0.5, 0.3, 0.2])
    assert psi(p, current) == pytest.approx(
        float(np.sum((bins_cur - bins_ref) * np.log(bins_cur / bins_ref)))
    )


def test_a_point_mass_moving_less_than_halfway_to_its_neighbour_stays_in_its_bin() -> None:
    # Twenty advertisers' daily clicks, each repeated on its impressions' rows.
    clicks = np.repeat(np.arange(1, 21) * 100.0, 50)
    p = numeric_profile("advertiser_clicks_1d", clicks)
    slightly_more = _current(p, clicks * 1.02)
    assert psi(p, slightly_more) == pytest.approx(0.0, abs=1e-12)
    assert ks(p, slightly_more) == pytest.approx(0.0, abs=1e-12)
    doubled = _current(p, clicks * 2)
    assert psi(p, doubled) > 1 and ks(p, doubled) >= 0.45


def test_nulls_are_counted_apart_from_the_distribution() -> None:
    p = numeric_profile("rate", [0.1, None, 0.3, None])
    assert p.null_fraction == 0.5 and p.mean == pytest.approx(0.2)
    current = _current(p, pd.Series([0.1, 0.3, None, None, None, None], dtype="Float64"))
    assert current.null_fraction == pytest.approx(4 / 6)
    assert ks(p, current) == pytest.approx(0.0)


def test_categorical_shares_fold_unseen_values_into_other() -> None:
    p = categorical_profile("device", ["mobile"] * 6 + ["desktop"] * 4)
    assert p.weights == {"mobile": 0.6, "desktop": 0.4}
    current = _current(p, ["mobile"] * 5 + ["tablet"] * 5)
    assert current.weights == {"mobile": 0.5, profiles.OTHER: 0.5}
    ref = np.array([0.4, 0.6, 1e-4])  # desktop, mobile, other
    cur = np.array([1e-4, 0.5, 0.5])
    assert psi(p, current) == pytest.approx(float(np.sum((cur - ref) * np.log(cur / ref))))
    assert ks(p, current) is None


def test_integer_vocabulary_values_compare_as_text() -> None:
    p = categorical_profile("hour_of_day", np.array([1, 1, 2, 3]))
    assert p.weights == {"1": 0.5, "2": 0.25, "3": 0.25}
    assert psi(p, _current(p, pd.Series([1, 1, 2, 3], dtype="Int64"))) == pytest.approx(0.0)
