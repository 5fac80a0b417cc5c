"""Running Great Expectations suites: one ephemeral context per validation run.

The context holds a pandas and, when asked, a Spark data source; every validated batch is
stored in the context's results store so one ``build_docs`` call renders the run's Data
Docs (HTML) into the reports folder. Results come back as plain :class:`Check` records:
which expectation on which column, passed or not, what was observed and what was
allowed, so the command line, the JSON summary and the gates read one shape.

Each expectation carries ``meta["check"]`` (a short name such as ``psi`` or ``range``)
and, when it is about one feature, ``meta["feature"]``.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.data_context.types.resource_identifiers import (
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)
from great_expectations.expectations.expectation import (
    ColumnMapExpectation,
    ColumnPairMapExpectation,
    MulticolumnMapExpectation,
)
from great_expectations.util import convert_to_json_serializable

ENGINES = ("pandas", "spark")
DOCS_SITE = "adstack"
# Pandas frames with more values than this have their map expectations validated column
# group by column group.
NARROW_CELLS = 10_000_000
MAP_EXPECTATIONS = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
# Keyword arguments that say what an expectation allowed, for the failure messages.
_BOUND_KEYS = (
    "min_value", "max_value", "threshold", "quantile_ranges", "mostly", "value_set",
    "column_A", "row_condition",
)  # fmt: skip


def check(expectation: gxe.Expectation, name: str, feature: str | None = None, **meta: Any):
    """Tag ``expectation`` with the check it implements and the feature it is about."""
    expectation.meta = {"check": name, **({"feature": feature} if feature else {}), **meta}
    return expectation


@dataclass
class Check:
    suite: str
    check: str
    expectation: str
    column: str | None
    feature: str | None
    passed: bool
    observed: Any
    allowed: dict[str, Any]
    failing_rows: list[int] = field(default_factory=list)
    error: str | None = None
    # Column-value expectations: the share of values (in %) that failed, and a few of them.
    unexpected_percent: float | None = None
    unexpected_values: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        subject = self.feature or self.column or "table"
        allowed = ", ".join(f"{k}={_short(v)}" for k, v in self.allowed.items())
        if self.error:
            return f"{self.suite}: {subject} {self.check} could not run: {self.error}"
        if self.observed is None and self.unexpected_percent is not None:
            shown = ", ".join(_short(v) for v in self.unexpected_values[:5])
            observed = f"{self.unexpected_percent:.3g}% of values failed, e.g. [{shown}]"
        else:
            observed = f"observed {_short(self.observed)}"
        return f"{self.suite}: {subject} {self.check}: {observed} (allowed {allowed})"

    def as_dict(self) -> dict[str, Any]:
        return convert_to_json_serializable(asdict(self))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and "values" in value:  # quantiles
        return "[" + ", ".join(_short(v) for v in value["values"]) + "]"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class SuiteResult:
    suite: str
    checks: list[Check]
    rows: int | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "passed": self.passed,
            "rows": self.rows,
            "expectations": len(self.checks),
            "failed": len(self.failures),
            "failures": [c.as_dict() for c in self.failures],
        }


class Runner:
    """Validates pandas or Spark DataFrames against suites; keeps results for Data Docs."""

    def __init__(self, docs_dir: Path | None = None, run_name: str = "adstack") -> None:
        self.docs_dir = docs_dir
        self.run_id = RunIdentifier(run_name=run_name, run_time=datetime.datetime.now(datetime.UTC))

    @cached_property
    def context(self):  # GX does not export its context type
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        if self.docs_dir is not None:
            self.docs_dir.mkdir(parents=True, exist_ok=True)
            context.add_data_docs_site(
                site_name=DOCS_SITE,
                site_config={
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(self.docs_dir.resolve()),
                    },
                },
            )
        return context

    @cached_property
    def _pandas(self):
        asset = self.context.data_sources.add_pandas("pandas").add_dataframe_asset("frame")
        return asset.add_batch_definition_whole_dataframe("whole")

    @cached_property
    def _spark(self):
        asset = self.context.data_sources.add_spark("spark").add_dataframe_asset("frame")
        return asset.add_batch_definition_whole_dataframe("whole")

    def suite(self, name: str, expectations: list[gxe.Expectation]) -> gx.ExpectationSuite:
        existing = {s.name for s in self.context.suites.all()}
        if name in existing:
            self.context.suites.delete(name)
        suite = self.context.suites.add(gx.ExpectationSuite(name=name))
        for expectation in expectations:
            suite.add_expectation(expectation)
        return suite

    def validate(
        self,
        name: str,
        expectations: list[gxe.Expectation],
        frame: Any,
        complete: bool = False,
    ) -> SuiteResult:
        """Validate ``frame`` (pandas or Spark) against a suite of ``expectations``.

        ``complete`` asks GX for the failing row indices (small pandas tables only).

        GX's pandas engine filters the whole frame (every column) several times for each
        row-by-row (map) expectation, so on a wide, long frame (above ``NARROW_CELLS``
        values) each group of map expectations reading the same columns is validated on
        just those columns, one batch per group; aggregate expectations share one batch
        of the whole frame. The checks come back as one suite's."""
        if _is_pandas(frame) and frame.size > NARROW_CELLS:
            groups = _by_columns(expectations, frame)
            if len(groups) > 1:
                checks = []
                for columns, group in groups.items():
                    part = frame if columns is None else frame[list(columns)]
                    suite_name = name if columns is None else f"{name}.{'+'.join(columns)}"
                    checks += self._validate(suite_name, group, part, complete).checks
                return SuiteResult(name, [replace(c, suite=name) for c in checks])
        return self._validate(name, expectations, frame, complete)

    def _validate(
        self, name: str, expectations: list[gxe.Expectation], frame: Any, complete: bool
    ) -> SuiteResult:
        suite = self.suite(name, expectations)
        definition = self._pandas if _is_pandas(frame) else self._spark
        batch = definition.get_batch(batch_parameters={"dataframe": frame})
        result_format = "COMPLETE" if complete else "SUMMARY"
        result = batch.validate(suite, result_format={"result_format": result_format})
        # GX's quantile expectation reports numpy booleans, which its own results store
        # cannot serialise: convert every result to plain JSON values before storing.
        for outcome in result.results:
            outcome.success = bool(outcome.success)
            outcome.result = convert_to_json_serializable(outcome.result)
        if self.docs_dir is not None:
            result.meta["run_id"] = self.run_id
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
                run_id=self.run_id,
                batch_identifier=batch.id,
            )
            self.context.validation_results_store.set(key, result)
        return SuiteResult(name, [_check(name, outcome) for outcome in result.results])

    def build_docs(self) -> Path | None:
        """Render the run's Data Docs; the path of ``index.html``."""
        if self.docs_dir is None:
            return None
        self.context.build_data_docs(site_names=[DOCS_SITE])
        return self.docs_dir / "index.html"


def _by_columns(
    expectations: list[gxe.Expectation], frame: Any
) -> dict[tuple[str, ...] | None, list[gxe.Expectation]]:
    """Map expectations grouped by the columns they read; ``None`` keys the rest, which
    run on the whole frame (aggregates, table-level ones, and those naming a missing
    column). A row condition reads every column it names."""
    groups: dict[tuple[str, ...] | None, list[gxe.Expectation]] = {}
    for expectation in expectations:
        if not isinstance(expectation, MAP_EXPECTATIONS):
            groups.setdefault(None, []).append(expectation)
            continue
        kwargs = expectation.configuration.kwargs
        columns = [kwargs[k] for k in ("column", "column_A", "column_B") if kwargs.get(k)]
        columns += list(kwargs.get("column_list") or [])
        condition = kwargs.get("row_condition")
        if condition:
            names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(condition))
            columns += [n for n in names if n in frame.columns]
        # A missing column stays on the whole frame, where GX reports it as the error.
        present = columns and all(c in frame.columns for c in columns)
        key = tuple(dict.fromkeys(columns)) if present else None
        groups.setdefault(key, []).append(expectation)
    return groups


def _is_pandas(frame: Any) -> bool:
    return isinstance(frame, pd.DataFrame)


def _error(info: dict[str, Any]) -> str | None:
    """The exception an expectation raised: at the top level, or per metric (keyed by the
    metric's id) when a metric failed to compute."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


def _check(suite: str, outcome) -> Check:
    config = outcome.expectation_config
    kwargs = config.kwargs
    meta = config.meta or {}
    error = _error(outcome.exception_info or {})
    result = outcome.result or {}
    return Check(
        suite=suite,
        check=meta.get("check", config.type),
        expectation=config.type,
        column=kwargs.get("column"),
        feature=meta.get("feature"),
        passed=bool(outcome.success) and error is None,
        observed=result.get("observed_value"),
        allowed={k: kwargs[k] for k in _BOUND_KEYS if kwargs.get(k) is not None},
        failing_rows=[int(i) for i in result.get("unexpected_index_list") or []],
        error=error,
        unexpected_percent=result.get("unexpected_percent"),
        unexpected_values=list(result.get("partial_unexpected_list") or [])[:5],
    )
