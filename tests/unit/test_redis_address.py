"""REDIS_URL is parsed once; Feast's connection string and the scorer's pool follow it."""

from __future__ import annotations

import pytest

from core.feast_redis import feast_connection_string
from core.settings import RedisAddress
from serving.redis_pipe import RedisPipe


def test_one_parse_for_feast_and_the_scorer() -> None:
    url = "rediss://reader:p%40ss@cache.internal:6380/3"
    address = RedisAddress.parse(url)
    assert address == RedisAddress("cache.internal", 6380, 3, "reader", "p@ss", True)
    assert feast_connection_string(url) == (
        "cache.internal:6380,db=3,username=reader,password=p@ss,ssl=true"
    )
    pipe = RedisPipe(url)
    assert (pipe.host, pipe.port, pipe.db, pipe.password) == ("cache.internal", 6380, 3, "p@ss")
    assert pipe.ssl is not None
    assert feast_connection_string("redis://localhost") == "localhost:6379"


@pytest.mark.parametrize(
    ("url", "message"),
    [("http://h:1/0", "must start with redis://"), ("redis://h:1/x", "must be a number")],
)
def test_bad_urls_name_the_variable(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisAddress.parse(url)
