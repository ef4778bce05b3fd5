"""Schemathesis against the app's own OpenAPI schema: generated requests (valid and not) to every
operation, sent with a lab's key to the real app on the test database. No 500s; every response
matches the documented status codes, content types and schemas. Bounded: a few examples per
operation, derandomized so a failure reproduces."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

MAX_EXAMPLES = 5


def _schema() -> dict:  # type: ignore[type-arg]
    # The schema only: an app that is never started (its routes are what the fixture app serves).
    from api.config import Settings
    from api.main import create_app

    app = create_app(
        Settings(database_url="sqlite:///:memory:", redis_url=None),
        publisher=lambda *a: None,
        migrate=False,
    )
    return app.openapi()


schema = schemathesis.openapi.from_dict(_schema())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_generated_requests_as_documented(case, app, api_key) -> None:  # type: ignore[no-untyped-def]
    excluded = []
    if (case.method, case.operation.path) == ("POST", "/campaigns"):
        # Cross-field rules (the GA needs two parents, the motifs must fit the length) are not
        # expressible in JSON Schema: a schema-valid campaign may still be a 422 naming the rule.
        excluded.append(positive_data_acceptance)
    if (case.method, case.operation.path) == ("POST", "/campaigns/import"):
        # A bundle is a .tar.gz whose checksums must match: no schema-generated file is one.
        excluded.append(positive_data_acceptance)
    # The key goes per request, so the "is auth really enforced" probe is sent without it.
    case.operation.schema.app = app  # this test's app (its own database and key) serves it
    headers = {"Authorization": f"Bearer {api_key}"}
    sent = {name.lower() for name in (case.headers or {})}
    if (
        case.meta is not None
        and case.meta.generation.mode.is_negative
        and "authorization" not in sent
    ):
        headers = {}  # the negative case is "no key": send none, and a 401 is the right answer
    case.call_and_validate(app=app, headers=headers, excluded_checks=excluded)


# What the fuzzing found, pinned as plain tests.


def test_an_id_past_the_database_integers_is_a_404_not_a_500(client) -> None:
    for path in (
        "/campaigns/2147483648",
        "/campaigns/-9999999999/batches",
        "/campaigns/1/batches/99999999999",
    ):
        r = client.get(path)
        assert r.status_code == 404 and r.headers["content-type"].startswith(
            "application/problem+json"
        ), path


def test_true_or_false_is_not_a_number_and_a_number_is_not_true_or_false(client) -> None:
    base = {"name": "x", "oracle": {"kind": "ehrlich"}}
    for body, field in [
        ({"model": {"num_heads": False}}, "num_heads"),
        ({"optimizer": {"kind": "llome", "generate": {"temperatures": [True]}}}, "temperatures"),
        ({"optimizer": {"kind": "llome", "generate": {"greedy": 0}}}, "greedy"),
    ]:
        r = client.post("/campaigns", json={**base, **body})
        assert r.status_code == 422 and field in r.text, r.text


def test_a_wrong_method_is_a_405_listing_every_allowed_method(client) -> None:
    r = client.request("PUT", "/campaigns")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
