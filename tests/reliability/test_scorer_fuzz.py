"""The scorer process fuzzed from its own OpenAPI schema with schemathesis.

The schema at ``/openapi.json`` is the contract clients code against (docs/serving.md),
so anything it lets a client send, valid or not, must be answered without a server
error: a 2xx that conforms to the schema, or a 4xx whose JSON ``detail`` tells a human
what was wrong. Each operation becomes schemathesis strategies of positive (schema-valid)
and negative (schema-violating) cases, drawn by Hypothesis for /v1/auction, /v1/score
and /v1/events; /v1/events is fuzzed with the stack's bearer token and without a valid
one, which must never be accepted. Hypothesis is derandomised and keeps no example
database, so every run sends the same cases and a failure reproduces on the next run.

The operations' strategies are used with Hypothesis's ``@given`` rather than
``schemathesis.pytest.from_fixture``: schemathesis 4.32.5's lazy fixture loader sets
``request.node._nodeid``, which pytest 9.2 no longer has. Each test counts the cases it
sent and asserts its share; the last test asserts the module's total (at least 500).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import redis
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from core import event_bus
from tests.reliability.conftest import Scorer
from tests.stack import TOKEN

# Cases each test sends (Hypothesis's max_examples, asserted per test) and the least the
# module must send in all, should these be cut to save time.
EXAMPLES = {"auction": 600, "score": 400, "events_token": 400, "events_no_token": 200}
TOTAL_FLOOR = 500
CASES: Counter[str] = Counter()
STATUSES: Counter[tuple[str, int]] = Counter()
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
Send = Callable[[schemathesis.Case], schemathesis.Response]


@pytest.fixture(scope="module")
def scorer_schema(scorer: Scorer) -> Iterator[schemathesis.BaseSchema]:
    """The running scorer's schema; the event stream entries the fuzzing adds are
    deleted afterwards, so the shared stack's Redis is left as it was found."""
    client = redis.Redis.from_url(scorer.stack.url)
    last = client.xrevrange(event_bus.STREAM_KEY, count=1)
    try:
        yield schemathesis.openapi.from_url(f"{scorer.url}/openapi.json")
    finally:
        added = client.xrange(event_bus.STREAM_KEY, f"({last[0][0].decode()}" if last else "-")
        if added:
            client.xdel(event_bus.STREAM_KEY, *[entry_id for entry_id, _ in added])
        client.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def fuzz(
    schema: schemathesis.BaseSchema, path: str, label: str, send: Send, accepted_floor: int = 50
) -> None:
    """Send ``EXAMPLES[label]`` positive and negative cases of ``POST path``. At least
    ``accepted_floor`` must be answered 2xx, so the fuzzing reaches past validation into
    the handlers (features, scoring, the auction, the event stream)."""
    operation = schema[path]["POST"]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(FUZZ, max_examples=EXAMPLES[label])
    @given(case=cases)
    def one(case: schemathesis.Case) -> None:
        check(label, case, send(case))

    one()
    statuses = {status: n for (name, status), n in STATUSES.items() if name == label}
    accepted = sum(n for status, n in statuses.items() if 200 <= status < 300)
    assert CASES[label] >= EXAMPLES[label], f"{label}: sent {CASES[label]} cases, {statuses}"
    assert accepted >= accepted_floor, f"{label}: {accepted} accepted, statuses {statuses}"


def check(label: str, case: schemathesis.Case, response: schemathesis.Response) -> None:
    """No 5xx; 2xx conform to the schema; anything else is a 4xx with a readable detail."""
    CASES[label] += 1
    status = response.status_code
    STATUSES[label, status] += 1
    sent = f"{case.as_curl_command()}\n-> {status} {response.text[:400]}"
    assert status < 500, f"server error:\n{sent}"
    if 200 <= status < 300:
        case.validate_response(response, checks=[response_schema_conformance])
        return
    assert 400 <= status < 500, f"neither 2xx nor 4xx:\n{sent}"
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), sent
    detail = response.json().get("detail")
    if isinstance(detail, list):  # request validation: one message per problem
        assert detail and all(isinstance(e.get("msg"), str) and e["msg"] for e in detail), sent
    else:
        assert isinstance(detail, str) and detail.strip(), f"no human-readable detail:\n{sent}"


def test_auction_answers_any_input_without_server_error(
    scorer_schema: schemathesis.BaseSchema, http: requests.Session
) -> None:
    fuzz(scorer_schema, "/v1/auction", "auction", lambda case: case.call(session=http))


def test_score_answers_any_input_without_server_error(
    scorer_schema: schemathesis.BaseSchema, http: requests.Session
) -> None:
    fuzz(scorer_schema, "/v1/score", "score", lambda case: case.call(session=http))


def test_events_with_token_answers_any_input_without_server_error(
    scorer_schema: schemathesis.BaseSchema, http: requests.Session
) -> None:
    def send(case: schemathesis.Case) -> schemathesis.Response:
        return with_authorization(case, f"Bearer {TOKEN}").call(session=http)

    fuzz(scorer_schema, "/v1/events", "events_token", send)


def test_events_without_valid_token_are_refused(
    scorer_schema: schemathesis.BaseSchema, http: requests.Session
) -> None:
    def send(case: schemathesis.Case) -> schemathesis.Response:
        """Every other case has no Authorization header, the rest a wrong token."""
        wrong = "Bearer not-the-token" if CASES["events_no_token"] % 2 else None
        response = with_authorization(case, wrong).call(session=http)
        assert not 200 <= response.status_code < 300, f"accepted: {case.as_curl_command()}"
        return response

    fuzz(scorer_schema, "/v1/events", "events_no_token", send, accepted_floor=0)


def with_authorization(case: schemathesis.Case, value: str | None) -> schemathesis.Case:
    """``case`` with exactly this Authorization header (none for None), whatever the
    generated headers held."""
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers if value is None else {**headers, "Authorization": value}
    return case


def test_fuzzing_sent_at_least_500_cases() -> None:
    if set(CASES) != set(EXAMPLES):
        pytest.skip(f"counts the whole module's cases; only {sorted(CASES)} ran")
    total = sum(CASES.values())
    assert total >= TOTAL_FLOOR, f"{total} cases: {dict(CASES)}"
    print(f"fuzzed {total} cases: {dict(CASES)}; statuses {dict(sorted(STATUSES.items()))}")
