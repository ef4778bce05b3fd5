"""The dashboard in a real headless Chromium (Debian's ``chromium`` driven by Playwright) against
``llome serve`` on the embedded default, started as a subprocess in a temporary directory.

The browser tests skip with the reason when /usr/bin/chromium or the playwright package is
missing (``.ci/run`` installs Chromium); the HTTP-level tests (login, cookie, CSRF, labs) run anyway. ``LLOME_UI_SCREENSHOTS=DIR`` saves a screenshot of each page into DIR (the
README's pictures come from ``LLOME_UI_SCREENSHOTS=docs/screenshots``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    LLOME,
    TINY_EHRLICH_CAMPAIGN,
    TINY_LLOME,
    Procs,
    clean_env,
    free_port,
)
from tests.integration.test_e2e import LAB_ALPHABET, LAB_LENGTH, Lab

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROUND_TIMEOUT_MS = 150_000  # one tiny LLOME round on a busy 2-core machine

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]


def browser_missing() -> str | None:
    if sync_playwright is None:
        return "the playwright package is not installed (pip install playwright; never `playwright install`)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run does it)"
    return None


class Server:
    def __init__(self, base: str, cwd: Path, procs: Procs) -> None:
        self.base, self.cwd, self.procs = base, cwd, procs

    @property
    def key(self) -> str:
        """The embedded default's first API key, written where it was started."""
        return (self.cwd / ".llome" / "api-key").read_text().strip()

    def new_key(self, lab: str) -> str:
        """``llome keys create --lab LAB`` on the server's database; the key is the last line."""
        out = subprocess.run(
            [LLOME, "keys", "create", "--lab", lab],
            cwd=self.cwd,
            env=self.procs.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip().splitlines()[-1]

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    cwd = tmp_path_factory.mktemp("ui")
    procs = Procs(cwd, clean_env(LLOME_PROGRESS_INTERVAL_S="0.3"))
    try:
        port = free_port()
        procs.server(port, cwd=cwd)
        yield Server(f"http://127.0.0.1:{port}", cwd, procs)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium; the tests that drive it skip with the reason when it or Playwright is missing
    (the HTTP-level tests of the same pages still run)."""
    if (reason := browser_missing()) is not None:
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Any, server: Server) -> Iterator[Page]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(20_000)
    # Nothing may come from anywhere but our server (no CDN, no fonts, no analytics).
    outside: list[str] = []
    pg.on(
        "request",
        lambda r: (
            None if r.url.startswith((server.base, "data:", "blob:")) else outside.append(r.url)
        ),
    )
    pg.outside_requests = outside  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        ctx.close()


def shoot(page: Page, name: str) -> None:
    target = os.environ.get("LLOME_UI_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
        )
        page.screenshot(path=str(Path(target) / name), full_page=True)


def log_in(page: Page, server: Server, path: str = "/ui") -> None:
    page.goto(server.base + path)
    expect(page).to_have_url(re.compile(r"/ui/login"))
    shoot(page, "login.png")
    page.get_by_label("API key").fill(server.key)
    page.get_by_label("API key").press("Enter")  # keyboard only
    expect(page).to_have_url(re.compile(re.escape(path) + "$"))


def upload(page: Page, name: str, data: bytes) -> None:
    page.get_by_label("CSV file").set_input_files(
        {"name": name, "mimeType": "text/csv", "buffer": data}
    )
    expect(page.locator("#u-peek")).to_contain_text(name)  # the script's look at the file
    page.get_by_role("button", name="Preview upload").click()
    expect(page.locator("#preview")).to_contain_text("nothing is stored yet")


@contextmanager
def server_log_on_failure(server: Server, page: Page) -> Iterator[None]:
    """A wait that fails says where the campaign stood and what the server logged."""
    try:
        yield
    except AssertionError as exc:
        status = (
            page.locator("#status").inner_text()
            if page.locator("#status").count()
            else page.content()[:2000]
        )
        raise AssertionError(
            f"{exc}\n--- page status ---\n{status}\n{server.procs.logs()[-6000:]}"
        ) from None


def fill_template(text: str, lab: Lab) -> bytes:
    """The downloaded worksheet with every score filled in, its columns unchanged."""
    reader = csv.DictReader(io.StringIO(text))
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=reader.fieldnames or [])
    w.writeheader()
    for row in reader:
        row["score"] = str(lab.score(row["sequence"]))
        w.writerow(row)
    return out.getvalue().encode()


def test_pages_need_a_login_and_the_cookie_is_httponly_and_samesite_strict(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as c:
        r = c.get("/ui/campaigns/1")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        login = c.get("/ui/login")
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        wrong = c.post("/ui/login", data={"api_key": "not-a-key", "csrf": token})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        ok = c.post("/ui/login", data={"api_key": server.key, "csrf": token})
        assert ok.status_code == 303 and ok.headers["location"] == "/ui"
        page = c.get("/ui")
        assert page.status_code == 200
        out = c.post(
            "/ui/logout",
            data={"csrf": re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)},
        )
        assert (
            out.status_code == 303 and c.get("/ui").status_code == 303
        )  # logged out: back to login


def session_client(server: Server, key: str) -> httpx.Client:
    c = httpx.Client(base_url=server.base, timeout=30)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
    assert c.post("/ui/login", data={"api_key": key, "csrf": token}).status_code == 303
    return c


def test_another_labs_campaign_does_not_exist_on_the_dashboard(server: Server) -> None:
    with server.api() as api:
        r = api.post(
            "/campaigns",
            json={"name": "ours", "oracle": {"kind": "wetlab", "alphabet": "ACGT", "length": 8}},
        )
        assert r.status_code == 201, r.text
        cid = r.json()["id"]
    with closing(session_client(server, server.new_key("other lab"))) as other:
        assert other.get(f"/ui/campaigns/{cid}").status_code == 404
        assert other.get(f"/ui/campaigns/{cid}/plot.png").status_code == 404
        assert f'data-campaign="{cid}"' not in other.get("/ui").text
    with closing(session_client(server, server.key)) as ours:
        page = ours.get(f"/ui/campaigns/{cid}")
        assert page.status_code == 200
        assert "<title>ours · llome</title>" in page.text  # the title is the name, not markup


def test_a_form_post_without_the_sessions_csrf_token_changes_nothing(server: Server) -> None:
    with httpx.Client(base_url=server.base, timeout=30) as c:
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/login").text).group(1)
        c.post("/ui/login", data={"api_key": server.key, "csrf": token})
        fresh = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui").text).group(1)
        form = {"name": "forged", "oracle_kind": "wetlab", "alphabet": "ACGT", "length": "8"}
        for bad in ({}, {"csrf": token}, {"csrf": fresh[:-2] + "xx"}):  # none, pre-login, altered
            r = c.post("/ui/campaigns", data={**form, **bad})
            assert r.status_code == 400 and "CSRF" in r.text
        with server.api() as api:
            assert all(x["name"] != "forged" for x in api.get("/campaigns").json()["items"])


def test_the_create_form_shows_the_apis_own_validation_messages_next_to_the_fields(
    page: Page, server: Server
) -> None:
    log_in(page, server)
    page.get_by_label("Name", exact=True).fill("bad one")
    page.get_by_label("Alphabet", exact=True).fill("AAB")
    page.get_by_label("Sequence length", exact=True).fill("0")
    page.get_by_role("button", name="Create campaign").click()
    expect(page.locator("#form-errors")).to_be_visible()
    with server.api() as api:
        r = api.post(
            "/campaigns",
            json={"name": "bad one", "oracle": {"kind": "wetlab", "alphabet": "AAB", "length": 0}},
        )
    assert r.status_code == 422
    for err in r.json()["errors"]:
        input_id = {"oracle.alphabet": "alphabet", "oracle.length": "length"}[err["field"]]
        expect(page.locator(f"#e-{input_id}")).to_contain_text(err["reason"])
        expect(page.locator(f"#f-{input_id}")).to_have_attribute("aria-invalid", "true")
    shoot(page, "campaigns-form-errors.png")


def test_a_lab_runs_a_wetlab_round_from_the_dashboard(page: Page, server: Server) -> None:
    lab = Lab()
    log_in(page, server)
    page.get_by_label("Name", exact=True).fill("dashboard round trip")
    page.get_by_label("Oracle", exact=True).select_option("wetlab")
    page.get_by_label("Alphabet", exact=True).fill(LAB_ALPHABET)
    page.get_by_label("Sequence length", exact=True).fill(str(LAB_LENGTH))
    page.get_by_label("Batch size (oracle calls per round)").fill("8")
    page.get_by_label("Rounds", exact=True).fill("1")
    page.get_by_label("Random seed", exact=True).fill("1")
    page.get_by_label("Advanced settings (JSON, merged into the request)").fill(
        json.dumps({"optimizer": TINY_LLOME, "model": TINY_EHRLICH_CAMPAIGN["model"]})
    )
    page.get_by_role("button", name="Create campaign").click()
    expect(page).to_have_url(re.compile(r"/ui/campaigns/\d+"))
    cid = int(re.search(r"/ui/campaigns/(\d+)", page.url).group(1))
    expect(page.locator("#status")).to_contain_text("waiting for data")

    # A half-valid seed file: the preview names the bad row and offers no commit. Its first
    # sequence is measured twice more, once far off: the preview lists that row, kept.
    seed = lab.seed_csv()
    first = seed.decode().splitlines()[1].split(",")[0]
    bad = seed + f"{first},{lab.score(first)}\n{first},1000\n{'Z' * LAB_LENGTH},0.5\n".encode()
    upload(page, "bad-seed.csv", bad)
    bad_row = len(bad.decode().splitlines())
    expect(page.locator("#row-errors")).to_contain_text(str(bad_row))
    expect(page.locator("#commit")).to_have_count(0)
    expect(page.locator("#commit-skip")).to_contain_text("42 accepted")  # or keep the good rows
    expect(page.locator("#pv-replicates")).to_contain_text("1 sequence(s)")
    expect(page.locator("#outliers tbody tr")).to_have_count(1)
    expect(page.locator("#outliers tbody td").first).to_have_text(str(bad_row - 1))  # the 1000
    shoot(page, "campaign-upload-errors.png")
    with server.api() as api:
        assert api.get(f"/campaigns/{cid}/sequences").json()["items"] == []

    upload(page, "seed.csv", seed)
    expect(page.locator("#pv-rows")).to_have_text("40")
    expect(page.locator("#pv-new")).to_have_text("40")
    shoot(page, "campaign-upload-preview.png")
    with server.api() as api:  # the preview stored nothing
        assert api.get(f"/campaigns/{cid}/sequences").json()["items"] == []
    page.get_by_role("button", name=re.compile("Commit 40")).click()
    expect(page.locator(".flash")).to_contain_text("stored 40 new measurement")
    score_plot = page.locator("#plot-score").get_attribute("src")

    # The page refreshes itself until the round's batch is there.
    with server_log_on_failure(server, page):
        expect(page.locator("#candidates")).to_be_visible(timeout=ROUND_TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("awaiting lab results")
    assert page.locator("#candidates tbody tr").count() == 8
    shoot(page, "campaign-batch.png")
    with page.expect_download() as dl:
        page.locator("#dl-fasta").click()
    fasta = Path(dl.value.path()).read_text().splitlines()
    assert len(fasta) == 16 and all(line.startswith(">") for line in fasta[::2])

    # The batch goes to the lab; one candidate is withdrawn (it will not be synthesised).
    page.get_by_role("button", name="Mark released to the lab").click()
    expect(page.locator(".flash")).to_contain_text("released to the lab (8 candidate(s))")
    expect(page.locator("#candidates tbody")).to_contain_text("released")
    page.locator("#candidates tbody tr").last.locator("a").click()
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Withdraw from the lab").click()
    expect(page.locator(".flash")).to_contain_text("withdrawn")
    page.get_by_role("link", name=re.compile("campaign dashboard round trip")).click()
    expect(page.locator("#candidates tbody tr").last).to_contain_text("withdrawn")

    with page.expect_download() as dl:
        page.locator("#dl-template").click()
    template = Path(dl.value.path()).read_text()
    header = template.splitlines()[0].split(",")
    assert header[:2] == ["candidate_id", "sequence"] and "score" in header
    assert len(template.splitlines()) == 1 + 7  # the withdrawn candidate is not on the worksheet
    results = fill_template(template, lab)

    upload(page, "results.csv", results)
    expect(page.locator("#pv-new")).to_have_text("7")
    page.get_by_role("button", name=re.compile("Commit 7")).click()
    expect(page.locator(".flash")).to_contain_text("stored 7 new measurement")
    expect(page.locator("#upload-log tbody tr")).to_have_count(3)  # bad seed, seed, results
    with server_log_on_failure(server, page):
        expect(page.locator("#status")).to_contain_text("completed", timeout=ROUND_TIMEOUT_MS)

    # The plot now has round 1 in it: a new image URL that loads.
    new_plot = page.locator("#plot-score").get_attribute("src")
    assert new_plot != score_plot
    page.wait_for_function(
        "() => { const i = document.querySelector('#plot-score'); "
        "return i.complete && i.naturalWidth > 0; }"
    )
    expect(page.locator("#rounds tbody tr")).to_have_count(2)
    with server.api() as api:
        metrics = api.get(f"/campaigns/{cid}/metrics").json()["rounds"]
    best = max(r["best_so_far"] for r in metrics if r["best_so_far"] is not None)
    expect(page.locator("#best")).to_have_text(f"{best:.4g}")
    shoot(page, "campaign.png")

    # One candidate's lineage: from the seed sequence it was refined from to itself.
    first = page.locator("#candidates tbody tr").first.locator("a")
    cand_id = first.inner_text()
    first.click()
    expect(page.locator("h1")).to_have_text(f"Candidate {cand_id}")
    steps = page.locator("#trajectory tbody tr")
    assert steps.count() >= 2
    assert steps.last.locator("code").first.inner_text() == page.locator("#cand-seq").inner_text()
    shoot(page, "candidate.png")

    page.goto(server.base + "/ui")
    row = page.locator(f'#campaigns tr[data-campaign="{cid}"]')
    expect(row).to_contain_text("completed")
    expect(row).to_contain_text("1 / 1")
    shoot(page, "campaigns.png")
    assert page.outside_requests == []  # type: ignore[attr-defined]


def test_pause_resume_and_cancel_buttons_move_the_campaign(page: Page, server: Server) -> None:
    with server.api() as api:
        r = api.post(
            "/campaigns",
            json={"name": "buttons", "oracle": {"kind": "wetlab", "alphabet": "ACGT", "length": 8}},
        )
        cid = r.json()["id"]
    log_in(page, server, f"/ui/campaigns/{cid}")
    status = page.locator("#status")
    page.get_by_role("button", name="Pause").click()
    expect(status).to_contain_text("paused")
    page.get_by_role("button", name="Resume").click()
    expect(status).to_contain_text("waiting for data")
    page.once("dialog", lambda d: d.dismiss())  # the confirmation guards a final step
    page.get_by_role("button", name="Cancel campaign").click()
    expect(status).to_contain_text("waiting for data")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel campaign").click()
    expect(status).to_contain_text("cancelled")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    with server.api() as api:
        assert api.get(f"/campaigns/{cid}").json()["status"] == "cancelled"
