"""Text ids as int64: the one function the ingest and the scorer's API both use.

Every id in adstack is an int64 (Feast entity keys, Redis keys and model hashing agree
on it). A source whose ids are text (device ids, domains, "u-1234") has them hashed:

    id = int.from_bytes(blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
         & 0x7FFF_FFFF_FFFF_FFFF

the first 8 bytes of the BLAKE2b digest of the UTF-8 text, big-endian, top bit cleared
(63 bits, so the id is a non-negative int64). Any language with BLAKE2b reproduces it;
the scorer's API applies it to every id sent as a JSON string, so clients need not.
"""

from __future__ import annotations

from hashlib import blake2b

import numpy as np
import pandas as pd

ID_MASK = 0x7FFF_FFFF_FFFF_FFFF


def text_id(text: str) -> int:
    """The int64 id of a text id."""
    return int.from_bytes(blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") & ID_MASK


def as_id(value: int | str) -> int:
    """An API id: integers pass through, text is hashed with :func:`text_id`."""
    return value if isinstance(value, int) else text_id(value)


def hash_ids(values: pd.Series) -> pd.Series:
    """:func:`text_id` of every value (as text); nulls stay null. Nullable Int64."""
    present = values.notna().to_numpy()
    out = np.zeros(len(values), dtype=np.int64)
    text = values[present].astype("string").to_numpy(dtype=object)
    out[present] = np.fromiter((text_id(t) for t in text), dtype=np.int64, count=len(text))
    return pd.Series(out, index=values.index, dtype="Int64").mask(~present)
