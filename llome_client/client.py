"""The Python client: a campaign driven from a notebook. Responses are parsed into the API's own
pydantic schemas (``api.schemas``), so the client and the server cannot disagree on a shape."""

from __future__ import annotations

import io
import time
from typing import Any, Self

import httpx
import pandas as pd

from api.schemas.batches import BatchRead, BatchSummary
from api.schemas.campaigns import CampaignRead
from api.schemas.common import Page, Problem
from api.schemas.metrics import MetricsRead
from api.schemas.uploads import UploadRead
from llome_client.errors import CampaignEnded, UploadRejected, ValidationFailed, error_for

ENDED = frozenset({"completed", "failed", "cancelled"})
# Columns a results or measurements upload understands; others (lineage from to_frame) are
# dropped before sending, so a frame from Batch.to_frame() can be filled in and sent back as is.
UPLOAD_COLUMNS = ("candidate_id", "sequence", "mutant", "score", "feasible", "status")


class PNG(bytes):
    """PNG bytes that Jupyter shows inline."""

    def _repr_png_(self) -> bytes:
        return bytes(self)


class Client:
    """``Client(base_url, api_key)``: one connection pool; use as a context manager or ``close()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers={"Authorization": f"Bearer {api_key}"}
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send; any 4xx or 5xx answer raises the typed exception that carries its problem."""
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            exc = error_for(response.status_code, body, method=method, url=str(response.url))
            if "Retry-After" in response.headers:
                exc.retry_after = float(response.headers["Retry-After"])
            raise exc
        return response

    def create_campaign(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Campaign:
        """Create a campaign from the same body as ``POST /campaigns``; a retry with the same
        ``idempotency_key`` returns the campaign made the first time."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        read = CampaignRead.model_validate(
            self.request("POST", "/campaigns", json=spec, headers=headers).json()
        )
        return Campaign(self, read)

    def campaign(self, campaign_id: int) -> Campaign:
        return Campaign(
            self,
            CampaignRead.model_validate(self.request("GET", f"/campaigns/{campaign_id}").json()),
        )

    def import_campaign(self, bundle: bytes) -> Campaign:
        """Restore a bundle (``Campaign.bundle()``) as a new campaign of this key's lab."""
        files = {"file": ("campaign.tar.gz", bundle, "application/gzip")}
        read = CampaignRead.model_validate(
            self.request("POST", "/campaigns/import", files=files).json()
        )
        return Campaign(self, read)

    def campaigns(self, limit: int = 50) -> list[Campaign]:
        """The lab's campaigns, newest first (every page)."""
        out: list[Campaign] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
            page = Page[CampaignRead].model_validate(
                self.request("GET", "/campaigns", params=params).json()
            )
            out += [Campaign(self, c) for c in page.items]
            if not page.next_cursor:
                return out
            cursor = page.next_cursor


class Campaign:
    """One campaign; ``read`` is its state as last fetched (``status()`` fetches it again)."""

    def __init__(self, client: Client, read: CampaignRead) -> None:
        self.client, self.read, self.id = client, read, read.id

    def __repr__(self) -> str:
        return f"<Campaign {self.id} {self.read.name!r} {self.read.status} round {self.read.round}>"

    def _path(self, tail: str = "") -> str:
        return f"/campaigns/{self.id}{tail}"

    def status(self) -> CampaignRead:
        self.read = CampaignRead.model_validate(self.client.request("GET", self._path()).json())
        return self.read

    def pause(self) -> CampaignRead:
        return self._action("pause")

    def resume(self) -> CampaignRead:
        return self._action("resume")

    def cancel(self) -> CampaignRead:
        return self._action("cancel")

    def _action(self, name: str) -> CampaignRead:
        self.read = CampaignRead.model_validate(
            self.client.request("POST", self._path(f"/{name}")).json()
        )
        return self.read

    # --- batches ---------------------------------------------------------------------------

    def batches(self) -> list[BatchSummary]:
        """Every batch, newest first."""
        out: list[BatchSummary] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = Page[BatchSummary].model_validate(
                self.client.request("GET", self._path("/batches"), params=params).json()
            )
            out += page.items
            if not page.next_cursor:
                return out
            cursor = page.next_cursor

    def batch(self, batch_id: int) -> Batch:
        return Batch(
            self,
            BatchRead.model_validate(
                self.client.request("GET", self._path(f"/batches/{batch_id}")).json()
            ),
        )

    def wait_for_batch(
        self, timeout: float | None = None, progress: bool = True, poll_s: float = 1.0
    ) -> Batch:
        """Poll until the campaign waits for the lab, then return that batch. The bar shows the
        server's phase, percent and ETA. Raises ``TimeoutError`` after ``timeout`` seconds and
        ``CampaignEnded`` when the campaign completes, fails or is cancelled first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=100.0, unit="%", bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}"
            )
        try:
            while True:
                read = self.status()
                if bar is not None:
                    p = read.progress
                    bar.set_description(
                        f"round {p.round}/{p.rounds} {p.phase or read.status}", refresh=False
                    )
                    bar.n = p.percent or 0.0
                    bar.set_postfix_str(f"ETA {p.eta_s:.0f} s" if p.eta_s is not None else "")
                if read.status == "awaiting_labels":
                    if bar is not None:
                        bar.n = 100.0
                        bar.set_description(f"round {read.round}/{read.rounds} batch ready")
                    newest = self.batches()[0]
                    return self.batch(newest.id)
                if read.status in ENDED:
                    raise CampaignEnded(
                        self.id,
                        read.status,
                        read.stop_reason or read.error or read.progress.message,
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"campaign {self.id} proposed no batch within {timeout} s "
                        f"(it is {read.status})"
                    )
                time.sleep(poll_s)
        finally:
            if bar is not None:
                bar.close()

    # --- uploads ---------------------------------------------------------------------------

    def upload_measurements(self, df: pd.DataFrame) -> UploadRead:
        """Seed or extra data (``sequence, score`` and optional ``feasible``, ``status``):
        previewed, then committed. Any rejected row raises ``UploadRejected`` (nothing stored)."""
        return self._upload(df, batch_id=None)

    def upload_results(self, batch: Batch | int, df: pd.DataFrame) -> UploadRead:
        """A batch's results (``candidate_id`` or ``sequence``, ``score``, optional ``status``):
        previewed, then committed. Any rejected row raises ``UploadRejected`` (nothing stored)."""
        return self._upload(df, batch_id=batch.id if isinstance(batch, Batch) else int(batch))

    def _upload(self, df: pd.DataFrame, batch_id: int | None) -> UploadRead:
        columns = [c for c in df.columns if c in UPLOAD_COLUMNS]
        data = df[columns].to_csv(index=False).encode()
        form = {"batch_id": str(batch_id)} if batch_id is not None else {}
        try:
            preview = UploadRead.model_validate(
                self.client.request(
                    "POST",
                    self._path("/uploads"),
                    files={"file": ("upload.csv", data, "text/csv")},
                    data=form,
                ).json()
            )
        except ValidationFailed as exc:  # a file refused as a whole (a missing column, ...)
            raise UploadRejected(exc.problem, _errors_frame(exc.problem.errors or [])) from None
        report = preview.report
        if report is not None and report.rejected:
            problem = Problem(
                title="Upload rejected",
                status=422,
                instance=self._path("/uploads"),
                detail=f"{report.rejected} of {report.rows} rows were rejected; nothing was stored",
                errors=report.errors,
            )
            raise UploadRejected(problem, _errors_frame(report.errors), upload=preview)
        if preview.status == "committed":  # the same file was uploaded and committed before
            return preview
        return UploadRead.model_validate(
            self.client.request("POST", self._path(f"/uploads/{preview.id}/commit")).json()
        )

    # --- results ---------------------------------------------------------------------------

    def metrics(self) -> pd.DataFrame:
        """One row per round: oracle calls, best and mean score, regret, fractions, and the
        round's train/proposal accounting flattened into dotted columns."""
        metrics = MetricsRead.model_validate(
            self.client.request("GET", self._path("/metrics")).json()
        )
        rows = [r.model_dump() for r in metrics.rounds]
        return pd.json_normalize(rows) if rows else pd.DataFrame(columns=["round"])

    def export(self, table: str = "sequences") -> pd.DataFrame:
        """Every labelled and proposed sequence with its provenance (``GET .../export``), or
        with ``table="rounds"`` each round's oracle calls and seconds by step."""
        content = self.client.request("GET", self._path("/export"), params={"table": table}).content
        return pd.read_csv(io.BytesIO(content), keep_default_na=True)

    def events(self) -> pd.DataFrame:
        """Every state change, oldest first."""
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = self.client.request("GET", self._path("/events"), params=params).json()
            rows += page["items"]
            if not page.get("next_cursor"):
                return pd.DataFrame(rows)
            cursor = page["next_cursor"]

    def bundle(self, weights: bool = True) -> bytes:
        """The whole campaign as one ``.tar.gz`` (``Client.import_campaign`` restores it)."""
        params = {"weights": str(weights).lower()}
        return self.client.request("GET", self._path("/bundle"), params=params).content

    def plot(self) -> PNG:
        """Best score (regret for Ehrlich) against oracle calls, as PNG (inline in Jupyter)."""
        return PNG(self.client.request("GET", self._path("/plot.png")).content)


class Batch:
    """A proposed batch; ``read`` is the API's ``BatchRead``."""

    def __init__(self, campaign: Campaign, read: BatchRead) -> None:
        self.campaign, self.read, self.id = campaign, read, read.id

    def __repr__(self) -> str:
        return f"<Batch {self.id} round {self.read.round} {self.read.status} size {self.read.size}>"

    def release(self) -> dict[str, Any]:
        """Mark the batch ordered (its candidates become released)."""
        return dict(
            self.campaign.client.request(
                "POST", self.campaign._path(f"/batches/{self.id}/release")
            ).json()
        )

    def template(self) -> pd.DataFrame:
        """``candidate_id, sequence, mutant, score, status`` of every candidate still in the lab."""
        content = self.campaign.client.request(
            "GET", self.campaign._path(f"/batches/{self.id}/template.csv")
        ).content
        return pd.read_csv(
            io.BytesIO(content),
            dtype={"mutant": str, "status": str},
            keep_default_na=False,
            na_values={"score": [""]},
        )

    def to_frame(self) -> pd.DataFrame:
        """``candidate_id, sequence, mutant, score, status`` as the results template has them
        (fill in score, and status for a failure; send it back with ``upload_results``), then
        ``lab_status`` (proposed, released, measured, ...) and the lineage columns. ``mutant``
        (against the reference, else the parent) is filled for candidates still in the lab."""
        first = ["candidate_id", "sequence", "mutant", "score", "status"]
        frame = pd.DataFrame([c.model_dump() for c in self.read.candidates])
        if frame.empty:
            return pd.DataFrame(columns=first)
        frame = frame.rename(columns={"status": "lab_status"})
        template = self.template()[["candidate_id", "mutant", "status"]]
        frame = frame.merge(template, on="candidate_id", how="left")
        return frame[first + [c for c in frame.columns if c not in first]]


def _errors_frame(errors: list[Any]) -> pd.DataFrame:
    rows = [e.model_dump() if hasattr(e, "model_dump") else dict(e) for e in errors]
    frame = pd.DataFrame(rows, columns=["row", "column", "reason", "field"])
    return frame.drop(columns=["field"]) if frame["field"].isna().all() else frame
