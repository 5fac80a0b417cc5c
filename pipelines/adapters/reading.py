"""Reading raw files without losing rows.

A CSV line with the wrong number of fields (a truncated file, a stray delimiter) is
not skipped: it is kept as a row whose fields are all null except ``_bad_line``, so
ingest quarantines it with its text. A file that cannot be read at all (a truncated
Parquet footer) raises :class:`UnreadableFile` naming the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.context import ContextField


class UnreadableFile(ValueError):
    pass


@dataclass
class RawBatch:
    """Rows of one source file: mapped to flat columns, and as read (for quarantine)."""

    source_file: Path
    frame: pd.DataFrame
    original: pd.DataFrame
    time_format: str | None = None
    # Declared context fields the frame carries as ``ctx_<name>`` columns.
    context: tuple[ContextField, ...] = ()


def read_csv(
    path: Path, *, sep: str = ",", header: bool = True, names: list[str] | None = None
) -> pd.DataFrame:
    """Every row of a CSV as text; malformed lines become rows flagged ``_bad_line``."""
    options = dict(
        sep=sep, dtype=str, keep_default_na=True, header=0 if header else None, names=names
    )
    try:
        frame = pd.read_csv(path, **options)
        frame["_bad_line"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    except pd.errors.ParserError:
        bad_lines: list[str] = []

        def keep(fields: list[str]) -> None:
            bad_lines.append(sep.join(fields))
            return None

        frame = pd.read_csv(path, engine="python", on_bad_lines=keep, **options)
        frame["_bad_line"] = pd.Series(pd.NA, index=frame.index, dtype="string")
        extra = pd.DataFrame({"_bad_line": pd.array(bad_lines, dtype="string")})
        frame = pd.concat([frame, extra], ignore_index=True)
    except (UnicodeDecodeError, csv.Error, pd.errors.EmptyDataError) as error:
        raise UnreadableFile(f"{path}: not a readable CSV ({error})") from error
    frame["_row"] = range(1, len(frame) + 1)
    return frame


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise UnreadableFile(f"{path}: not a readable Parquet file ({error})") from error
    frame = table.to_pandas()
    frame["_bad_line"] = pd.Series(pd.NA, index=frame.index, dtype="string")
    frame["_row"] = range(1, len(frame) + 1)
    return frame


def require_columns(frame: pd.DataFrame, names: list[str], source_file: Path) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise UnreadableFile(
            f"{source_file}: missing columns {missing}; found {list(frame.columns)}"
        )


def with_row_info(flat: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """Carry the source row number and any malformed line text onto the flat frame."""
    flat["_row"] = raw["_row"].to_numpy()
    flat["_bad_line"] = raw["_bad_line"].to_numpy()
    return flat
