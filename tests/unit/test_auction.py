"""Auction rules on literal numbers: ranking, GSP prices, reserve, pacing, exploration."""

from __future__ import annotations

import numpy as np
import pytest

from core.units import MICROS_PER_DAY, MICROS_PER_HOUR
from serving import auction
from serving.auction import CPA, CPC, Exploration, Pacing

HOUR = MICROS_PER_HOUR
NOON = 20_000 * MICROS_PER_DAY + 12 * HOUR


def _run(bid, q, slots=2, reserve=0.0, ranking=None, multiplier=None, excluded=None, ids=None):
    n = len(bid)
    q = np.asarray(q, dtype=float)
    return auction.run(
        np.asarray(ids if ids is not None else np.arange(n) + 100),
        np.asarray(bid, dtype=float),
        q,
        q if ranking is None else np.asarray(ranking, dtype=float),
        np.ones(n) if multiplier is None else np.asarray(multiplier, dtype=float),
        np.zeros(n, bool) if excluded is None else np.asarray(excluded),
        slots,
        reserve,
    )


def test_ranks_by_ecpm_and_each_winner_pays_the_next_ecpm_over_its_quality() -> None:
    # eCPMs: 1000 * bid * q = 20, 30, 10
    out = _run([1.0, 0.5, 2.0], [0.02, 0.06, 0.005])
    assert out.winners.tolist() == [1, 0]
    np.testing.assert_allclose(out.ecpm, [20.0, 30.0, 10.0])
    # Slot 1 pays 20 / (1000 * 0.06); slot 2 pays 10 / (1000 * 0.02).
    np.testing.assert_allclose(out.price, [20 / 60, 0.5])
    # Paying the price exactly keeps the rank: price * q * 1000 == next eCPM.
    np.testing.assert_allclose(out.price * np.array([0.06, 0.02]) * 1000, [20.0, 10.0])


def test_single_candidate_pays_the_reserve_or_nothing() -> None:
    alone = _run([1.0], [0.02], slots=3)
    assert alone.winners.tolist() == [0] and alone.price.tolist() == [0.0]
    reserved = _run([1.0], [0.02], slots=3, reserve=5.0)
    np.testing.assert_allclose(reserved.price, [5.0 / 20.0])


def test_reserve_above_every_ecpm_leaves_the_slots_empty() -> None:
    out = _run([1.0, 0.5], [0.02, 0.06], reserve=100.0)
    assert out.winners.size == 0 and out.price.size == 0
    assert not out.eligible.any()


def test_reserve_between_ecpms_prices_the_last_winner_at_the_reserve() -> None:
    out = _run([1.0, 0.5, 2.0], [0.02, 0.06, 0.005], slots=3, reserve=15.0)
    assert out.winners.tolist() == [1, 0]
    np.testing.assert_allclose(out.price, [20 / 60, 15 / 20])


def test_ties_go_to_higher_model_quality_then_lower_ad_id() -> None:
    # Equal eCPM 20: quality 0.04 beats 0.02; the two with q 0.02 split by ad id.
    out = _run([0.5, 1.0, 1.0], [0.04, 0.02, 0.02], slots=3, ids=[9, 7, 3])
    assert out.winners.tolist() == [0, 2, 1]
    # A tie means paying the full bid: the next eCPM equals one's own.
    np.testing.assert_allclose(out.price, [0.5, 1.0, 0.0])


def test_explored_winner_never_pays_above_its_bid() -> None:
    # Exploration lifts ad 0's ranking quality from 0.01 to 0.05 (eCPM 50 > 30), but the
    # price uses its model quality: 30 / (1000 * 0.01) = 3.0 > bid 1.0, so it pays its bid.
    out = _run([1.0, 1.0], [0.01, 0.03], slots=1, ranking=[0.05, 0.03])
    assert out.winners.tolist() == [0]
    assert out.price.tolist() == [1.0]


def test_cpc_and_cpa_compete_on_expected_value_per_impression() -> None:
    bid_type = np.array([CPC, CPA, CPA])
    pctr = np.array([0.02, 0.05, 0.05])
    pcvr = np.array([0.9, 0.1, 0.01])
    q = auction.quality(bid_type, pctr, pcvr)
    np.testing.assert_allclose(q, [0.02, 0.005, 0.0005])
    # CPC 1.0 per click: eCPM 20. CPA 5.0 per conversion: eCPM 25. CPA 30: eCPM 15.
    out = _run([1.0, 5.0, 30.0], q, slots=3)
    assert out.winners.tolist() == [1, 0, 2]
    # The CPA winner pays per conversion: 20 / (1000 * 0.005) = 4.0.
    np.testing.assert_allclose(out.price, [4.0, 15 / 20, 0.0])


def test_paced_and_excluded_candidates() -> None:
    out = _run([1.0, 1.0, 1.0], [0.03, 0.02, 0.01], multiplier=[0.5, 1.0, 1.0], excluded=[0, 0, 1])
    # Paced eCPMs 15, 20; the third is excluded.
    assert out.winners.tolist() == [1, 0]
    assert out.ecpm[2] == 0.0 and not out.eligible[2]
    # The paced ad pays at most its paced bid (0.5).
    assert out.price[1] == 0.0 and out.price[0] == pytest.approx(15 / 20)


def test_no_bid_is_not_eligible() -> None:
    out = _run([np.nan, 1.0], [0.5, 0.01], slots=2)
    assert out.winners.tolist() == [1]


def test_pacing_spreads_the_budget_over_the_day() -> None:
    pacing = Pacing(allowance=0.0, gain=2.0)
    budget = np.array([240.0, 240.0, 240.0, np.nan, 240.0])
    # At noon the plan is 120. Under plan, 25% ahead, 60% ahead, unlimited, spent out.
    spend = np.array([100.0, 150.0, 192.0, 1e9, 240.0])
    multiplier, exhausted = pacing.multipliers(spend, budget, NOON)
    np.testing.assert_allclose(multiplier[:4], [1.0, 0.5, 0.0, 1.0])
    assert exhausted.tolist() == [False, False, False, False, True]
    # Nothing streamed today (NaN spend) counts as nothing spent.
    multiplier, exhausted = pacing.multipliers(np.array([np.nan]), np.array([10.0]), NOON)
    assert multiplier.tolist() == [1.0] and not exhausted[0]
    # Just after midnight the allowance lets the first sales through.
    early = 20_000 * MICROS_PER_DAY + 60_000_000
    multiplier, _ = Pacing(allowance=0.02).multipliers(np.array([1.0]), np.array([100.0]), early)
    assert multiplier[0] == 1.0


def test_exploration_off_keeps_the_model_ctr() -> None:
    pctr = np.array([0.02, 0.05])
    ranking, explored, draw = Exploration(weight=0.0).ranking_ctr(
        pctr, np.array([0.0, 10.0]), np.array([0.0, 1.0]), np.random.default_rng(0)
    )
    assert ranking.tolist() == pctr.tolist() and not explored.any() and np.isnan(draw).all()


def test_exploration_samples_new_ads_around_their_posterior() -> None:
    exploration = Exploration(weight=1.0, max_impressions=100, prior_strength=50.0)
    pctr = np.full(3, 0.02)
    impressions = np.array([0.0, 90.0, 5000.0])
    clicks = np.array([0.0, 30.0, 100.0])
    rng = np.random.default_rng(1)
    draws = np.array(
        [exploration.ranking_ctr(pctr, impressions, clicks, rng)[0] for _ in range(4000)]
    )
    # New ad: Beta(1, 49), mean 0.02. Ad with 30 clicks in 90 shows: Beta(31, 109), mean
    # 0.221. The established ad is not explored: its ranking CTR is its pCTR.
    assert draws[:, 0].mean() == pytest.approx(0.02, abs=0.002)
    assert draws[:, 1].mean() == pytest.approx(31 / 140, abs=0.005)
    assert draws[:, 0].std() > 0.01 and (draws[:, 2] == 0.02).all()
    half = Exploration(weight=0.5, max_impressions=100).ranking_ctr(
        pctr, impressions, clicks, np.random.default_rng(2)
    )
    assert half[1].tolist() == [True, True, False]
    np.testing.assert_allclose(half[0][:2], 0.02 + 0.5 * (half[2][:2] - 0.02))


def test_decide_paces_explores_and_prices_once() -> None:
    ids = np.array([1, 2, 3, 4])
    nan = np.nan
    decision = auction.decide(
        ids,
        bid=np.array([1.0, 2.0, 10.0, 0.001]),
        bid_type=np.array([CPC, CPA, CPC, CPC]),
        pctr=np.array([0.05, 0.04, 0.05, 0.05]),
        pcvr=np.array([nan, 0.5, nan, nan]),
        delivery=(np.full(4, 5000.0), np.full(4, 100.0)),
        budget=(np.array([0.0, 0.0, 100.0, 0.0]), np.array([nan, nan, 100.0, nan])),
        now_micros=NOON,
        excluded=np.zeros(4, bool),
        slots=2,
        reserve_ecpm=1.0,
        pacing=Pacing(),
        exploration=Exploration(),  # every ad is past max_impressions: nothing explored
        rng=np.random.default_rng(0),
    )
    out = decision.outcome
    # eCPMs: 50 (ad 1), 40 (ad 2: 2 x 0.04 x 0.5 x 1000), ad 3 spent its budget, ad 4 0.05.
    assert decision.exhausted.tolist() == [False, False, True, False]
    assert ids[out.winners].tolist() == [1, 2]
    assert out.below_reserve.tolist() == [False, False, False, True]
    assert not decision.explored.any()
    assert out.price.tolist() == pytest.approx([40.0 / (1000 * 0.05), 1.0 / (1000 * 0.02)])
