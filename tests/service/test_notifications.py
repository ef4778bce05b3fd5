"""Webhooks: the SSRF guard at creation, delivery to a receiver on loopback with its HMAC
signature, retries with backoff (at most 8 tries), event filters, and delivery by the real
Celery task of the embedded worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import drain
from tests.service.test_uploads import csv_bytes, seed_rows, upload


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next queued status."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.calls.append((dict(self.headers.items()), body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def notifications(client, cid: int) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    r = client.get(f"/campaigns/{cid}/notifications")
    assert r.status_code == 200, r.text
    return r.json()["items"]


def create(client, receiver: Receiver, **overrides: Any) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = {
        "name": "hooked",
        "oracle": {"kind": "wetlab", "alphabet": "ACDEFG", "length": 6},
        "optimizer": {"kind": "ga", "mutation_prob": 0.3},
        "batch_size": 20,
        "rounds": 2,
        "notify_url": receiver.url,
        **overrides,
    }
    r = client.post("/campaigns", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_notify_url_outside_the_allowed_hosts_is_a_422(client, receiver) -> None:
    r = client.post(
        "/campaigns",
        json={
            "name": "x",
            "oracle": {"kind": "wetlab", "alphabet": "AC", "length": 4},
            "notify_url": "http://10.0.0.7/hook",
        },
    )
    assert r.status_code == 422
    problem = r.json()
    assert "not one the operator allows" in problem["detail"] and "127.0.0.1" in problem["detail"]
    assert problem["errors"][0]["field"] == "notify_url"
    bad_scheme = client.post(
        "/campaigns",
        json={
            "name": "x",
            "oracle": {"kind": "wetlab", "alphabet": "AC", "length": 4},
            "notify_url": "file:///etc/passwd",
        },
    )
    assert bad_scheme.status_code == 422 and "http or https" in bad_scheme.text


def test_allowed_hosts_come_from_the_operator() -> None:
    from api.config import Settings
    from api.services.notifications import host_allowed

    assert Settings(redis_url=None).notify_hosts == {"127.0.0.1"}  # the embedded default
    assert Settings(redis_url="redis://r:6379").notify_hosts == frozenset()  # off by default
    ops = Settings(redis_url="redis://r:6379", notify_allowed_hosts="hooks.lab.org, .example.org")
    assert host_allowed("https://hooks.lab.org/x", ops) and host_allowed(
        "https://a.example.org/", ops
    )
    assert not host_allowed("https://example.org.evil.net/", ops)
    assert not host_allowed("http://127.0.0.1/", ops)


def test_batch_ready_is_posted_signed_and_listed(client, runtime, publisher, receiver) -> None:
    created = create(client, receiver)
    cid, secret = created["id"], created["notify_secret"]
    assert len(secret) == 64 and client.get(f"/campaigns/{cid}").json()["notify_secret"] is None
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    drain(runtime, publisher)
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    [(headers, body)] = receiver.calls
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Llome-Signature"] == expected
    payload = json.loads(body)
    assert payload["event"] == "batch_ready" and payload["campaign_id"] == cid
    assert payload["batch_id"] == bid and payload["url"].endswith(f"/campaigns/{cid}/batches/{bid}")
    assert set(payload) == {"event", "campaign_id", "batch_id", "at", "url"}
    [note] = notifications(client, cid)
    assert (note["event"], note["status"], note["attempts"], note["last_status_code"]) == (
        "batch_ready",
        "delivered",
        1,
        200,
    )


def test_failed_attempts_are_retried_with_backoff_at_most_eight_times(
    client, runtime, publisher, receiver
) -> None:
    from worker import notify

    cid = create(client, receiver)["id"]
    receiver.answers = [500, 503]
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    outcomes = drain(runtime, publisher)
    assert ("llome.deliver_notification", "retry") in outcomes
    [note] = notifications(client, cid)
    assert note["status"] == "pending" and note["attempts"] == 1 and note["last_status_code"] == 500
    assert "500" in note["last_error"] and note["next_attempt_at"] is not None
    assert notify.deliver(runtime, note["id"]) == 60.0  # the second wait doubles the first (30 s)
    assert notify.deliver(runtime, note["id"]) is None  # the third attempt got a 200
    [note] = notifications(client, cid)
    assert note["status"] == "delivered" and note["attempts"] == 3 and len(receiver.calls) == 3

    cid = create(client, receiver, notify_events=["batch_ready"])["id"]
    receiver.answers = [503] * 20
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    drain(runtime, publisher)
    [note] = notifications(client, cid)
    waits = [30.0] + [notify.deliver(runtime, note["id"]) for _ in range(8)]
    assert waits[:7] == [30.0 * 2**k for k in range(7)] and waits[7:] == [None, None]
    assert timedelta(minutes=55) < timedelta(seconds=sum(waits[:7])) < timedelta(minutes=70)
    [note] = notifications(client, cid)
    assert note["status"] == "failed" and note["attempts"] == 8  # the ninth call sent nothing


def test_events_are_filtered_and_each_happens_once(client, runtime, publisher, receiver) -> None:
    from api.db import session_scope
    from api.services import campaigns as campaign_service
    from api.services import notifications as service

    cid = create(client, receiver, notify_events=["failed"])["id"]
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    drain(runtime, publisher)
    assert receiver.calls == [] and notifications(client, cid) == []  # batch_ready not asked for
    with session_scope(runtime.session_factory) as s:
        campaign = campaign_service.get_or_404(s, cid, lock=True)
        campaign_service.fail(s, campaign, "the assay robot broke")
        assert service.emit(s, campaign, "failed") is None  # once per campaign
    drain(runtime, publisher)
    [(_, body)] = receiver.calls
    assert json.loads(body)["event"] == "failed" and "batch_id" not in json.loads(body)
    assert json.loads(body)["url"] == f"http://127.0.0.1:8000/campaigns/{cid}"
    assert [n["event"] for n in notifications(client, cid)] == ["failed"]


def test_labels_overdue_when_a_released_batch_passes_its_ttl(
    client, app, runtime, publisher, receiver
) -> None:
    from api.db import utcnow

    cid = create(
        client,
        receiver,
        notify_events=["labels_overdue"],
        oracle={"kind": "wetlab", "alphabet": "ACDEFG", "length": 6, "label_ttl": "1h"},
    )["id"]
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    drain(runtime, publisher)
    bid = client.get(f"/campaigns/{cid}/batches").json()["items"][0]["id"]
    assert client.post(f"/campaigns/{cid}/batches/{bid}/release").status_code == 200
    app.state.clock = lambda: utcnow() + timedelta(hours=2)
    try:
        assert client.post(f"/campaigns/{cid}/expire").json()["expired"] > 0
    finally:
        del app.state.clock
    drain(runtime, publisher)
    [note] = notifications(client, cid)
    assert (note["event"], note["batch_id"], note["status"]) == ("labels_overdue", bid, "delivered")


def test_the_embedded_worker_delivers_and_retries(receiver, tmp_path: Path) -> None:
    from api.config import Settings
    from llome_client import Client
    from tests.live_server import LiveServer

    live = LiveServer(
        Settings(
            database_url=f"sqlite:///{tmp_path}/llome.db",
            redis_url=None,
            data_dir=tmp_path / "data",
            notify_retry_base_s=0.2,
        )
    ).start()
    try:
        receiver.answers = [500]
        with Client(live.url, live.api_key) as c:
            campaign = c.create_campaign(
                {
                    "name": "live hooks",
                    "oracle": {"kind": "wetlab", "alphabet": "ACDEFG", "length": 6},
                    "optimizer": {"kind": "ga", "mutation_prob": 0.3},
                    "batch_size": 20,
                    "rounds": 1,
                    "notify_url": receiver.url,
                    "notify_events": ["batch_ready"],
                }
            )
            import pandas as pd

            campaign.upload_measurements(pd.DataFrame(seed_rows(), columns=["sequence", "score"]))
            campaign.wait_for_batch(timeout=60, progress=False, poll_s=0.2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                items = c.request("GET", f"/campaigns/{campaign.id}/notifications").json()["items"]
                if items and items[0]["status"] == "delivered":
                    break
                time.sleep(0.1)
            assert items[0]["status"] == "delivered" and items[0]["attempts"] == 2
            assert len(receiver.calls) == 2 and receiver.calls[0][1] == receiver.calls[1][1]
    finally:
        live.stop()


def test_the_recovery_sweep_resends_a_delivery_whose_message_was_lost(
    client, runtime, publisher, receiver, session_factory
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from api.db import session_scope, utcnow
    from api.models import Notification
    from worker import runner

    cid = create(client, receiver, notify_events=["batch_ready"])["id"]
    receiver.answers = [500]
    assert upload(client, cid, csv_bytes("sequence,score", seed_rows())).status_code == 201
    drain(runtime, publisher)  # the first attempt fails; its retry message is then lost
    [note] = notifications(client, cid)
    assert note["status"] == "pending"
    runner.recover(runtime)
    assert "llome.deliver_notification" not in publisher.names()  # not overdue yet
    with session_scope(session_factory) as s:
        s.execute(
            update(Notification)
            .where(Notification.id == note["id"])
            .values(next_attempt_at=utcnow() - timedelta(minutes=10))
        )
    runner.recover(runtime)
    assert ("llome.deliver_notification", (note["id"],)) in publisher.sent
    drain(runtime, publisher)
    [note] = notifications(client, cid)
    assert note["status"] == "delivered" and note["attempts"] == 2


def test_notifications_page_oldest_first_with_a_cursor(client, runtime, receiver) -> None:
    from api.db import session_scope
    from api.services import campaigns as campaign_service
    from api.services import notifications as service

    cid = create(client, receiver)["id"]
    with session_scope(runtime.session_factory) as s:
        campaign = campaign_service.get_or_404(s, cid)
        notes = [service.emit(s, campaign, "batch_ready", batch_id=b) for b in (1, 2, 3)]
        ids = [n.id for n in notes if n is not None]
    assert len(ids) == 3
    first = client.get(f"/campaigns/{cid}/notifications", params={"limit": 2}).json()
    assert [n["id"] for n in first["items"]] == ids[:2] and first["next_cursor"] == str(ids[1])
    second = client.get(
        f"/campaigns/{cid}/notifications", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert [n["id"] for n in second["items"]] == ids[2:] and second["next_cursor"] is None
    bad = client.get(f"/campaigns/{cid}/notifications", params={"cursor": "abc"})
    assert bad.status_code == 422 and "cursor" in bad.text
