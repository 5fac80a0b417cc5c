"""BENCHMARKS.md and the README's benchmark block are exactly what bench/results/ says:
a figure typed by hand, or a results file changed without regenerating, fails here."""

from __future__ import annotations

import json
from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def test_benchmarks_page_and_readme_are_generated_from_the_results() -> None:
    stale = report.stale(RESULTS, ROOT / "BENCHMARKS.md", ROOT / "README.md")
    assert stale == [], f"{stale} differ from bench/results/: run python -m bench.report"


def test_every_result_records_its_commit_machine_and_rows() -> None:
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        assert result["commit"] and result["machine"]["cpus"], path.name
        assert result.get("markdown_rows"), f"{path.name} has no BENCHMARKS.md row"


def test_a_hand_edit_is_caught(tmp_path: Path) -> None:
    table, readme = tmp_path / "BENCHMARKS.md", tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_BEGIN}\n{report.README_END}\n")
    report.write(RESULTS, table, readme)
    assert report.stale(RESULTS, table, readme) == []
    table.write_text(table.read_text().replace("| simulator | 1", "| simulator | 9", 1))
    assert report.stale(RESULTS, table, readme) == [str(table)]


def test_a_row_carried_from_an_earlier_run_names_that_run_and_its_commit(tmp_path: Path) -> None:
    from bench.quality.report import origins

    earlier = {"command": "python -m bench.quality --parts talkingdata", "date": "2026-11-24",
               "commit": "9edb78c"}  # fmt: skip
    figures = {"sim_ctr": {}, "talkingdata": {"recorded_by": earlier}}
    assert origins(figures) == {"quality_talkingdata": tuple(earlier.values())}
    result = {"name": "q", "commit": "859aa0e", "machine": {"cpus": 2}, "markdown_rows": {
        "quality_talkingdata": {"result": "r", "baseline": "b", "ratio": "x", **earlier},
        "quality_sim_ctr": {"result": "r", "baseline": "b", "ratio": "x", "command": "c",
                            "date": "2026-12-07"},
    }}  # fmt: skip
    (tmp_path / "q.json").write_text(json.dumps(result))
    lines = report.benchmarks_md(tmp_path).splitlines()
    assert any(
        line.startswith("| quality_talkingdata |") and "| 9edb78c |" in line for line in lines
    )
    assert any(line.startswith("| quality_sim_ctr |") and "| 859aa0e |" in line for line in lines)
