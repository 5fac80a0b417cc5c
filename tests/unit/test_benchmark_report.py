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
