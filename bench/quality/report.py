"""The report: tables of the model-quality section, rows of BENCHMARKS.md, the JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import save_rows, write_section
from bench.quality.plan import GOAL_SPEEDUP, PARTS

MODEL_LABELS = {
    "ours_lr": "ours LR",
    "ours_dcn": "ours DCN-v2 (defaults)",
    "ours_dcn_selected": "ours DCN-v2 (selected on calibration: {variant})",
    "lightgbm": "LightGBM",
    "deepctr_dcn": "deepctr-torch DCN (matrix)",
    "ours_esmm": "ours ESMM",
    "deepctr_esmm": "deepctr-torch ESMM",
    "ours_dcn_clicked_only": "ours DCN-v2 on clicked rows only (naive)",
    "lightgbm_clicked_only": "LightGBM on clicked rows only",
}


def quality_table(section: dict, title: str) -> list[str]:
    lines = [
        f"**{title}** ({section['ceiling']['rows']:,} test rows, "
        f"{section['ceiling']['positives']:,} positives; "
        "metrics after calibration)",
        "",
        "| model | AUC | NE | ECE | quantile ECE | AUC gap to ceiling | NE gap to ceiling "
        "| train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, result in section["models"].items():
        m, g = result["test"], result["gap_to_ceiling"]
        label = MODEL_LABELS[name].format(variant=result.get("variant", ""))
        lines.append(
            f"| {label} | {m['auc']:.4f} | {m['normalized_entropy']:.4f} | {m['ece']:.4f} | "
            f"{m['ece_quantile']:.4f} | {g['auc']:+.4f} | {100 * g['ne_relative']:+.1f}% | "
            f"{result['seconds']:.0f} |"
        )
    c = section["ceiling"]
    lines.append(
        f"| ceiling (true probability) | {c['auc']:.4f} | {c['normalized_entropy']:.4f} | "
        f"{c['ece']:.4f} | {c['ece_quantile']:.4f} | 0 | 0 | - |"
    )
    return lines


def real_table(section: dict, title: str) -> list[str]:
    test = section["training_set"]["rows_by_split"].get("test", {})
    lines = [
        f"**{title}** ({test.get('rows', 0):,} test rows, {test.get('clicks', 0):,} positives; "
        "AUC of raw scores with 95% bootstrap interval; NE and ECE after calibration)",
        "",
        "| model | AUC | 95% CI | NE | ECE | train s |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in section["models"].items():
        m, (low, high) = result["test"], result["test_auc_ci95"]
        lines.append(
            f"| {MODEL_LABELS[name].format(variant='')} | "
            f"{result['test_uncalibrated']['auc']:.4f} | "
            f"[{low:.4f}, {high:.4f}] | {m['normalized_entropy']:.4f} | {m['ece']:.4f} | "
            f"{result['seconds']:.0f} |"
        )
    d = section["ours_minus_lightgbm_auc"]
    lines += [
        "",
        f"Ours minus LightGBM: {d['difference']:+.4f} (paired bootstrap 95% CI "
        f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]).",
    ]
    return lines


def quality_section(figures: dict, command: str, date: str) -> list[str]:
    lines = ["## Model quality", "", f"`{command}`, {date}.", ""]
    titles = {
        "sim_ctr": ("Simulator CTR, test days", quality_table),
        "sim_cvr": ("Simulator CVR (pCVR on clicked test rows)", quality_table),
        "talkingdata": ("TalkingData, label = install", real_table),
        "open_bandit": ("Open Bandit, label = click", real_table),
    }
    for key, (title, table) in titles.items():
        if key in figures:
            earlier = figures[key].get("recorded_by")
            if earlier:
                title += f" (from `{earlier['command']}`, {earlier['date']})"
            lines += [*table(figures[key], title), ""]
    for item in figures.get("not_done", []):
        lines.append(f"- Not done: {item['what']}: {item['reason']}")
    return lines


def thousands(rate: float) -> str:
    return f"{rate / 1e3:.0f}k" if rate >= 1e4 else f"{rate / 1e3:.1f}k"


def throughput_row(t: dict) -> tuple[str, str, str]:
    def goal(ratio: float) -> str:
        return "met" if ratio >= GOAL_SPEEDUP else "missed"

    fastest = min(t["deepctr_epoch_seconds"]) / min(t["ours_epoch_seconds"])
    epochs = len(t["ours_epoch_seconds"])
    if "paired_epochs" in t:
        how = f"median of {epochs} epochs alternating with deepctr-torch's"
        r = t["regularisation"]
        l2 = "no L2" if r["weight_decay"] == 0 else f"weight decay {r['weight_decay']}"
        alike = (
            f"; same regularisation: {l2}, MLP dropout {r['mlp_dropout']}, id dropout "
            f"{r['id_dropout']}, early stopping"
        )
    else:  # recorded before the epochs alternated and the regularisation was aligned
        how = f"median epoch of {epochs}, separate runs"
        alike = "; its default L2 1e-5 and no id dropout: not the same regularisation"
    return (
        f"ours DCN-v2 {thousands(t['ours_examples_per_second'])} examples/s ({how}, "
        f"{t['rows']:,} rows, batch {t['batch_size']}, {t['threads']} threads; goal 3x)",
        f"deepctr-torch DCN {thousands(t['deepctr_examples_per_second'])} examples/s "
        f"(median epoch of {len(t['deepctr_epoch_seconds'])}{alike})",
        f"{t['ratio']:.1f}x median epochs ({goal(t['ratio'])}); fastest epochs "
        f"{fastest:.1f}x ({goal(fastest)})",
    )


def rows(figures: dict) -> dict[str, tuple[str, str, str]]:
    out = {}
    if "sim_ctr" in figures:
        s = figures["sim_ctr"]
        ours, sel = s["models"]["ours_dcn"], s["models"]["ours_dcn_selected"]
        lgbm, dctr, c = s["models"]["lightgbm"], s["models"]["deepctr_dcn"], s["ceiling"]
        met = s["goals"]["ours_dcn"]
        out["quality_sim_ctr"] = (
            f"ours DCN-v2 AUC {ours['test']['auc']:.4f}, "
            f"NE {ours['test']['normalized_entropy']:.4f}, "
            f"ECE {ours['test']['ece']:.4f} (quantile {ours['test']['ece_quantile']:.4f}); "
            f"gap to ceiling AUC {ours['gap_to_ceiling']['auc']:+.4f}, NE "
            f"{100 * ours['gap_to_ceiling']['ne_relative']:+.1f}% (goals 0.01 / 3%: "
            f"{'met' if met['auc_within_0.01_of_ceiling'] else 'missed'} / "
            f"{'met' if met['ne_within_3pct_of_ceiling'] else 'missed'}); selected variant "
            f"`{s['selected_variant']}` AUC {sel['test']['auc']:.4f}; ceiling AUC {c['auc']:.4f}, "
            f"NE {c['normalized_entropy']:.4f}",
            f"LightGBM AUC {lgbm['test']['auc']:.4f}, NE {lgbm['test']['normalized_entropy']:.4f}; "
            f"deepctr-torch DCN AUC {dctr['test']['auc']:.4f}, NE "
            f"{dctr['test']['normalized_entropy']:.4f}",
            f"AUC vs LightGBM {ours['test']['auc'] - lgbm['test']['auc']:+.4f}, vs deepctr "
            f"{ours['test']['auc'] - dctr['test']['auc']:+.4f}",
        )
        out["train_throughput"] = throughput_row(s["throughput"])
    if "sim_cvr" in figures:
        s = figures["sim_cvr"]
        ours, c = s["models"]["ours_esmm"], s["ceiling"]
        others = {
            "deepctr_esmm": "deepctr-torch ESMM",
            "ours_dcn_clicked_only": "naive DCN on clicks",
            "lightgbm_clicked_only": "LightGBM on clicks",
        }
        out["quality_sim_cvr"] = (
            f"ours ESMM pCVR AUC {ours['test']['auc']:.4f}, NE "
            f"{ours['test']['normalized_entropy']:.4f}, ECE {ours['test']['ece']:.4f}; gap to "
            f"ceiling AUC {ours['gap_to_ceiling']['auc']:+.4f}, NE "
            f"{100 * ours['gap_to_ceiling']['ne_relative']:+.1f}%; ceiling AUC {c['auc']:.4f}",
            "; ".join(
                f"{label} AUC {s['models'][k]['test']['auc']:.4f}, NE "
                f"{s['models'][k]['test']['normalized_entropy']:.4f}"
                for k, label in others.items()
            ),
            ", ".join(
                f"vs {label} {ours['test']['auc'] - s['models'][k]['test']['auc']:+.4f} AUC"
                for k, label in others.items()
            ),
        )
    for key, name in (("talkingdata", "TalkingData installs"), ("open_bandit", "Open Bandit")):
        if key not in figures:
            continue
        s = figures[key]
        o, lg, d = s["models"]["ours_dcn"], s["models"]["lightgbm"], s["ours_minus_lightgbm_auc"]
        test = s["training_set"]["rows_by_split"]["test"]
        out[f"quality_{key}"] = (
            f"{name}: ours DCN-v2 AUC {o['test_uncalibrated']['auc']:.4f} "
            f"[{o['test_auc_ci95'][0]:.4f}, "
            f"{o['test_auc_ci95'][1]:.4f}] ({test['rows']:,} test rows, {test['clicks']} "
            "positives, bootstrap 95% CI)",
            f"LightGBM AUC {lg['test_uncalibrated']['auc']:.4f} [{lg['test_auc_ci95'][0]:.4f}, "
            f"{lg['test_auc_ci95'][1]:.4f}]",
            f"{d['difference']:+.4f} AUC, paired 95% CI [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
            f"; CIs overlap: {s['cis_overlap']}",
        )
    return out


# The part of the run each table row comes from.
ROW_PARTS = {
    "quality_sim_ctr": "sim_ctr",
    "train_throughput": "sim_ctr",
    "quality_sim_cvr": "sim_cvr",
    "quality_talkingdata": "talkingdata",
    "quality_open_bandit": "open_bandit",
}


def keep_earlier_parts(figures: dict, parts: list[str], path: Path) -> list[str]:
    """Carry over, from the last run recorded at ``path``, the parts this run did not
    measure; each keeps the command, date and commit that produced it. Returns the parts
    carried."""
    if not path.exists():
        return []
    previous = json.loads(path.read_text())
    carried = []
    for part in PARTS:
        if part not in parts and part in previous:
            origin = {k: previous[k] for k in ("command", "date", "commit")}
            figures[part] = previous[part] | {
                "recorded_by": previous[part].get("recorded_by", origin)
            }
            carried.append(part)
    return carried


def origins(figures: dict) -> dict[str, tuple[str, str, str]]:
    """Rows whose figures were carried from an earlier run: that run's command, date and
    commit."""
    out = {}
    for name, part in ROW_PARTS.items():
        earlier = (
            figures.get(part, {}).get("recorded_by")
            if isinstance(figures.get(part), dict)
            else None
        )
        if earlier:
            out[name] = (earlier["command"], earlier["date"], earlier["commit"])
    return out


def record(figures: dict, command: str) -> Path:
    """The JSON, the section and the rows of BENCHMARKS.md (rendered from the JSON by
    bench.report); a --quick run's go to bench/results/quick/."""
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    write_section("quality", quality_section(figures, command, date))
    cells: dict[str, tuple[str, ...]] = {}
    earlier = origins(figures)
    for name, (result, baseline, ratio) in rows(figures).items():
        cells[name] = (result, baseline, ratio, *earlier.get(name, (command, date)))
    return save_rows("quality", {"command": command, **figures}, cells, command=command)
