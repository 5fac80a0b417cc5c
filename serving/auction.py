"""The auction: pacing, exploration, eCPM ranking and generalised second-price pricing.

Pure functions over column arrays (one entry per candidate ad), no I/O, so each rule is
unit-tested on literal numbers.

Money. A CPC ad bids per click and a CPA ad per conversion, in the bid currency. Its
*quality* is the expected number of billable actions per impression: pCTR for CPC,
pCTR x pCVR for CPA. Its eCPM (expected revenue per thousand impressions) is
``1000 x paced bid x quality``; ads are ranked by eCPM.

Pricing (GSP with quality). The ad in slot k pays, per billable action, the least bid
that keeps its eCPM at or above the next eligible ad's, or above the reserve:
``max(reserve, next eCPM) / (1000 x quality)``. It never pays more than its paced bid.
Exploration may lift an ad's ranking quality above its model quality; the price is
still computed with the model's quality (the advertiser is billed on what the model
expects), so an explored winner can hit the bid cap, and pays at most its bid.

Ties in eCPM go to the higher model quality, then to the lower ad id: deterministic,
so a replayed request gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.units import MICROS_PER_DAY

CPC, CPA = 0, 1
BID_TYPES = {"CPC": CPC, "CPA": CPA}
MILLE = 1000.0


def quality(bid_type: np.ndarray, pctr: np.ndarray, pcvr: np.ndarray) -> np.ndarray:
    """Expected billable actions per impression: pCTR (CPC) or pCTR x pCVR (CPA)."""
    return np.where(np.asarray(bid_type) == CPA, pctr * pcvr, pctr)


@dataclass(frozen=True)
class Pacing:
    """Per-campaign bid multipliers from spend so far today against a daily plan.

    The plan spends the daily budget evenly over the UTC day, plus an allowance of
    ``allowance`` x budget available from midnight (without it, the first sale of the
    day would look infinitely ahead of plan). A campaign at or under plan bids in full;
    ahead of plan its bids are scaled down by ``gain`` per unit of excess ratio, to
    ``floor`` at the lowest; at or over its budget it is excluded.
    """

    allowance: float = 0.02
    gain: float = 2.0
    floor: float = 0.0

    def multipliers(
        self, spend_today: np.ndarray, daily_budget: np.ndarray, now_micros: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(multiplier in [floor, 1], exhausted) per candidate. A missing budget (NaN)
        is unlimited; missing spend (NaN: nothing streamed today) is zero."""
        spend = np.nan_to_num(np.asarray(spend_today, dtype=np.float64), nan=0.0)
        budget = np.asarray(daily_budget, dtype=np.float64)
        limited = ~np.isnan(budget)
        elapsed = (now_micros % MICROS_PER_DAY) / MICROS_PER_DAY
        planned = np.where(limited, budget, 1.0) * min(1.0, elapsed + self.allowance)
        ahead = spend / np.maximum(planned, 1e-12)
        multiplier = np.clip(1.0 - self.gain * (ahead - 1.0), self.floor, 1.0)
        multiplier = np.where(limited, multiplier, 1.0)
        exhausted = limited & (spend >= budget)
        return multiplier, exhausted


@dataclass(frozen=True)
class Exploration:
    """Thompson sampling for ads with little delivery.

    An ad with fewer than ``max_impressions`` streamed impressions in the last 24 hours
    draws a CTR from its Beta posterior: the prior is centred on the model's pCTR with
    ``prior_strength`` pseudo-impressions, updated with the ad's streamed impressions and
    clicks. Its ranking CTR moves from pCTR towards the draw by ``weight`` (0: off, 1:
    the draw alone).
    """

    weight: float = 0.3
    max_impressions: int = 1000
    prior_strength: float = 50.0

    def ranking_ctr(
        self,
        pctr: np.ndarray,
        impressions: np.ndarray,
        clicks: np.ndarray,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ranking CTR, explored, draw; NaN where not explored) per candidate."""
        shown = np.nan_to_num(np.asarray(impressions, dtype=np.float64), nan=0.0)
        clicked = np.minimum(np.nan_to_num(np.asarray(clicks, dtype=np.float64), nan=0.0), shown)
        explored = (shown < self.max_impressions) & (self.weight > 0)
        draw = np.full(len(pctr), np.nan)
        if explored.any():
            alpha = self.prior_strength * pctr[explored] + clicked[explored]
            beta = (
                self.prior_strength * (1.0 - pctr[explored]) + shown[explored] - clicked[explored]
            )
            draw[explored] = rng.beta(alpha, beta)
        ranking = np.where(explored, pctr + self.weight * (np.nan_to_num(draw) - pctr), pctr)
        return ranking, explored, draw


@dataclass(frozen=True)
class Outcome:
    """Winners in slot order (indices into the candidates) and what each pays."""

    winners: np.ndarray  # int64 candidate indices, slot order
    price: np.ndarray  # per billable action, for each winner
    ecpm: np.ndarray  # every candidate's ranking eCPM (0 where ineligible)
    eligible: np.ndarray  # bool per candidate
    below_reserve: np.ndarray  # bool: not excluded, but its eCPM is under the reserve


def run(
    ad_id: np.ndarray,
    bid: np.ndarray,
    model_quality: np.ndarray,
    ranking_quality: np.ndarray,
    multiplier: np.ndarray,
    excluded: np.ndarray,
    slots: int,
    reserve_ecpm: float = 0.0,
) -> Outcome:
    """Rank by eCPM and price every winner by generalised second price.

    ``bid`` per billable action (NaN: no bid, ineligible); ``multiplier`` the pacing
    multiplier; ``excluded`` candidates cannot win (exhausted budget, unknown ad).
    Candidates whose eCPM is below ``reserve_ecpm`` or zero are not eligible.
    """
    if slots < 1:
        raise ValueError("slots must be at least 1")
    if reserve_ecpm < 0:
        raise ValueError("reserve must not be negative")
    paced = np.asarray(bid, dtype=np.float64) * multiplier
    ecpm = MILLE * np.nan_to_num(paced, nan=0.0) * ranking_quality
    excluded = np.asarray(excluded, dtype=bool)
    below_reserve = ~excluded & (ecpm < reserve_ecpm)
    eligible = ~excluded & ~np.isnan(paced) & (ecpm > 0) & ~below_reserve
    ecpm = np.where(eligible, ecpm, 0.0)
    candidates = np.flatnonzero(eligible)
    # lexsort: last key first. eCPM descending, model quality descending, ad id ascending.
    order = candidates[
        np.lexsort((ad_id[candidates], -model_quality[candidates], -ecpm[candidates]))
    ]
    winners = order[:slots]
    next_ecpm = np.append(ecpm[order[1:]], 0.0)[: len(winners)]
    threshold = np.maximum(reserve_ecpm, next_ecpm)
    per_action = threshold / (MILLE * np.maximum(model_quality[winners], 1e-12))
    price = np.minimum(per_action, paced[winners])
    return Outcome(winners.astype(np.int64), price, ecpm, eligible, below_reserve)


@dataclass(frozen=True)
class Decision:
    """One auction decided: the outcome and the per-candidate inputs that made it."""

    outcome: Outcome
    multiplier: np.ndarray  # pacing multiplier per candidate
    exhausted: np.ndarray  # bool: budget spent
    explored: np.ndarray  # bool: ranked on an exploration draw
    draw: np.ndarray  # the draw, NaN where not explored


def decide(
    ad_id: np.ndarray,
    bid: np.ndarray,
    bid_type: np.ndarray,
    pctr: np.ndarray,
    pcvr: np.ndarray,
    delivery: tuple[np.ndarray, np.ndarray],
    budget: tuple[np.ndarray, np.ndarray],
    now_micros: int,
    excluded: np.ndarray,
    slots: int,
    reserve_ecpm: float,
    pacing: Pacing,
    exploration: Exploration | None,
    rng: np.random.Generator | None = None,
) -> Decision:
    """Pacing, exploration, quality, eCPM, reserve and GSP prices, each computed once.

    ``delivery``: the ads' streamed (impressions, clicks) of the last 24 hours (NaN: none
    streamed); ``budget``: the campaigns' (spend today, daily budget); ``pcvr`` NaN where
    not scored (CPC ads do not need it to rank); ``exploration`` None: rank on pCTR."""
    n = len(ad_id)
    multiplier, exhausted = pacing.multipliers(budget[0], budget[1], now_micros)
    pcvr = np.nan_to_num(pcvr, nan=0.0)
    ranking_ctr, explored, draw = pctr, np.zeros(n, bool), np.full(n, np.nan)
    if exploration is not None and exploration.weight > 0:
        if rng is None:
            raise ValueError("exploration needs a random generator")
        ranking_ctr, explored, draw = exploration.ranking_ctr(pctr, *delivery, rng)
    outcome = run(
        ad_id,
        bid,
        quality(bid_type, pctr, pcvr),
        quality(bid_type, ranking_ctr, pcvr),
        multiplier,
        np.asarray(excluded, dtype=bool) | exhausted,
        slots,
        reserve_ecpm,
    )
    return Decision(outcome, multiplier, exhausted, explored, draw)
