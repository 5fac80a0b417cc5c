"""Metrics, calibration, the feature map and the models on small literal data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from artifact import calibration
from artifact.feature_map import HASH, MISSING_INDEX, FeatureMap
from artifact.metrics import auc, calibration_ratio, ece_equal_width, ece_quantile, field_ece, gate
from training.models import MODELS, ModelConfig, build_model, pairwise_interactions


def test_auc_matches_sklearn_with_ties() -> None:
    y = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    s = np.array([0.1, 0.4, 0.4, 0.8, 0.3, 0.3, 0.9, 0.8])
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_ece_and_ratio_on_literal_bins() -> None:
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.05, 0.05, 0.95, 0.95, 0.95, 0.95])
    # Two equal-width bins: |0.05 - 0.25| and |0.95 - 0.75|, each half the rows.
    assert ece_equal_width(y, p) == pytest.approx(0.2)
    assert ece_quantile(y, p, bins=2) == pytest.approx(0.2)
    assert calibration_ratio(y, p) == pytest.approx(4.0 / 4)
    advertiser = np.array([1, 1, 2, 2, 1, 1, 2, 2])
    # Advertiser 1: mean p 0.5, rate 0.25; advertiser 2: mean p 0.5, rate 0.75.
    assert field_ece(y, p, advertiser) == pytest.approx(0.25)


def test_gate_refuses_miscalibration() -> None:
    fine = {"ece": 0.004, "ece_quantile": 0.01, "calibration_ratio": 1.01}
    assert gate(fine).passed
    doubled = fine | {"calibration_ratio": 2.02}
    result = gate(doubled)
    assert not result.passed and "calibration ratio" in result.reasons[0]
    assert not gate(fine | {"ece_quantile": 0.03}).passed


def test_platt_recovers_a_known_distortion() -> None:
    rng = np.random.default_rng(0)
    true_logit = rng.normal(-2.5, 1.0, 200_000)
    y = rng.random(true_logit.size) < 1 / (1 + np.exp(-true_logit))
    # The model's logits are the truth squashed and shifted: a = 2, b = 1 undoes it.
    raw = 1 / (1 + np.exp(-(0.5 * true_logit - 0.5)))
    params = calibration.fit_platt(raw, y)
    assert params["a"] == pytest.approx(2.0, abs=0.05)
    assert params["b"] == pytest.approx(1.0, abs=0.1)
    fitted = calibration.fit(raw, y)
    assert ece_quantile(y, calibration.apply(fitted, raw)) < 0.003
    iso = calibration.fit_isotonic(raw, y)
    assert np.all(np.diff(calibration.apply(iso, np.sort(raw))) >= 0)


def test_feature_map_oov_missing_and_stable_hashing() -> None:
    train = pd.DataFrame(
        {
            "user_id": np.arange(1, 101, dtype=np.int64),
            "device": ["mobile"] * 60 + ["desktop"] * 39 + ["rare"],
            "clicks_7d": np.arange(100, dtype=np.int64),
            "ctr_7d": [np.nan, *np.linspace(0, 0.1, 99)],
        }
    )
    fm = FeatureMap.fit(train, ["user_id"], ["device"], ["clicks_7d", "ctr_7d"], {"clicks_7d"})
    assert fm.sparse[0].kind == HASH and fm.sparse[0].buckets == 1024
    assert fm.sparse[1].vocabulary == ["desktop", "mobile"]  # "rare" is below min_count
    again = FeatureMap.from_dict(fm.to_dict())
    rows = {
        "user_id": np.array([5, 5, 10**15], dtype=object),
        "device": np.array(["mobile", "rare", None], dtype=object),
        "clicks_7d": np.array([3.0, np.nan, 1e9]),
        "ctr_7d": np.array([np.nan, 0.05, 0.05]),
    }
    encoded = again.transform(rows)
    assert encoded.sparse[0, 0] == encoded.sparse[1, 0] != MISSING_INDEX
    assert encoded.sparse[:, 1].tolist() == [2, MISSING_INDEX, MISSING_INDEX]
    assert encoded.missing == {"user_id": 0, "device": 1, "clicks_7d": 1, "ctr_7d": 1}
    assert fm.dense[0].transform == "log1p" and fm.dense[1].transform == "identity"
    assert fm.dense[0].fill == 0.0 and fm.dense[1].fill == pytest.approx(0.05)
    assert encoded.dense.dtype == np.float32 and np.abs(encoded.dense).max() <= 8.0
    with pytest.raises(ValueError, match="floats beyond"):
        again.transform(rows | {"user_id": np.array([1.0, 2.0, 2.0**60])})


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_models_return_logits_per_row_and_export_to_onnx_with_parity(
    kind: str, tmp_path: Path
) -> None:
    import onnxruntime

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, hidden=(8,)), [10, 5, 3], dense_dim=4)
    for p in model.parameters():  # away from the zero initialisation of first-order weights
        torch.nn.init.normal_(p, std=0.3)
    model.eval()
    sparse = torch.tensor([[0, 4, 2], [9, 0, 1], [3, 2, 0]])
    dense = torch.randn(3, 4)
    out = model(sparse, dense)
    outputs = out if isinstance(out, tuple) else (out,)
    assert len(outputs) == (2 if kind == "esmm" else 1)
    assert all(o.shape == (3,) for o in outputs)
    # Every input changes the logit: no field is silently ignored.
    for column in range(3):
        moved = sparse.clone()
        moved[:, column] = (moved[:, column] + 1) % torch.tensor([10, 5, 3])[column]
        changed = model(moved, dense)
        changed = changed if isinstance(changed, tuple) else (changed,)
        assert not torch.allclose(changed[0], outputs[0]), (kind, column)
    names = [f"logit_{i}" for i in range(len(outputs))]
    path = tmp_path / f"{kind}.onnx"
    torch.onnx.export(
        model, (sparse, dense), str(path), input_names=["sparse", "dense"],
        output_names=names, dynamic_axes={"sparse": {0: "b"}, "dense": {0: "b"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    got = onnxruntime.InferenceSession(str(path)).run(
        None, {"sparse": sparse.numpy(), "dense": dense.numpy()}
    )
    for ours, theirs in zip(outputs, got, strict=True):
        assert np.max(np.abs(ours.detach().numpy() - theirs)) < 1e-5


def test_a_factorisation_machine_sums_every_pair_once() -> None:
    fields = torch.randn(2, 4, 3)
    pairs = sum((fields[:, i] * fields[:, j]).sum(dim=1) for i in range(4) for j in range(i + 1, 4))
    assert torch.allclose(pairwise_interactions(fields), pairs, atol=1e-5)


def test_the_gate_names_a_shift_between_periods() -> None:
    from artifact.metrics import PeriodShift

    fine = {"ece": 0.004, "ece_quantile": 0.01, "calibration_ratio": 1.01}
    # The click rate fell from 3% to 2%: a model right on the calibration period predicts
    # about 1.5x the test clicks, which is what the ratio shows.
    shift = PeriodShift(0.03, 50_000, 0.02, 50_000)
    assert shift.expected_ratio == pytest.approx(1.5) and shift.z > 10
    result = gate(fine | {"calibration_ratio": 1.48}, shift)
    assert not result.passed
    assert "a shift between periods, not the model" in result.reasons[0], result.reasons
    # The same ratio without a moved rate is the model's own bias: no such claim.
    same_rate = PeriodShift(0.02, 50_000, 0.02, 50_000)
    assert "shift" not in gate(fine | {"calibration_ratio": 1.48}, same_rate).reasons[0]
    # A moved rate that does not account for the ratio is not blamed either.
    assert "shift" not in gate(fine | {"calibration_ratio": 0.8}, shift).reasons[0]


def test_platt_never_reverses_the_ranking() -> None:
    from artifact.calibration import apply, fit_platt

    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.2, 20_000)
    # Labels run against the scores: a free slope would turn negative and flip the order.
    y = (rng.random(20_000) < 0.21 - p).astype(float)
    fitted = fit_platt(p, y)
    assert fitted["a"] == 0.0
    calibrated = apply(fitted, np.sort(p))
    assert np.all(np.diff(calibrated) >= 0)
    assert calibrated.mean() == pytest.approx(y.mean(), rel=0.02)
