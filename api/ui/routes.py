"""The dashboard: server-rendered pages under /ui, from the services the REST routes call.

Every page but the login needs a session (the lab's API key, resolved on each request); every
form post carries the session's CSRF token. Errors a form can show are shown on its page; the
rest are the API's problem details.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from api import notation
from api.csvio import write_rows
from api.db import end_transaction
from api.errors import LlomeError
from api.models import TERMINAL_CAMPAIGN, CampaignStatus
from api.services import batches as batch_service
from api.services import campaigns as campaign_service
from api.services import metrics as metrics_service
from api.services import twins
from api.ui import auth, data

HERE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/ui", include_in_schema=False)

STATUS_TEXT: dict[str, str] = {
    CampaignStatus.CREATED: "waiting for data",
    CampaignStatus.SEEDING: "seeding",
    CampaignStatus.TRAINING: "training",
    CampaignStatus.GENERATING: "generating",
    CampaignStatus.AWAITING_LABELS: "awaiting lab results",
    CampaignStatus.LABELLING: "labelling",
    CampaignStatus.PAUSED: "paused",
    CampaignStatus.COMPLETED: "completed",
    CampaignStatus.FAILED: "failed",
    CampaignStatus.CANCELLED: "cancelled",
}


class LoginRequired(Exception):
    pass


def install(app: FastAPI) -> None:
    """Mount the dashboard on ``app``: its pages, its static files, its login redirect."""
    app.state.ui_sessions = auth.SessionStore(app.state.session_factory)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        if request.method == "GET" and not request.url.path.endswith(".json"):
            target = quote(
                request.url.path + (f"?{request.url.query}" if request.url.query else "")
            )
            return RedirectResponse(f"/ui/login?next={target}", status_code=303)
        return JSONResponse({"detail": "log in at /ui/login"}, status_code=401)


# --- plumbing -----------------------------------------------------------------------------


def _db(request: Request) -> Session:
    return request.app.state.session_factory()


class Ctx:
    """One request's session, database transaction and lab."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.ui = auth.current(request)
        if self.ui is None or self.ui.api_key_id is None:
            raise LoginRequired()
        self.key_id: int = self.ui.api_key_id
        self.db = _db(request)
        self.lab = auth.lab_of(self.db, self.key_id)
        if self.lab is None:  # the key was revoked since login
            self.db.close()
            auth.store(request).drop(request.cookies.get(auth.COOKIE))
            raise LoginRequired()
        self.lab_id: int = self.lab.id

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        end_transaction(self.db, succeeded=exc_type is None)

    def check_csrf(self, token: str | None) -> None:
        if not auth.csrf_ok(self.ui, token):
            raise LlomeError(
                "the form's CSRF token is missing or stale: reload the page and try again"
            )

    def render(self, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        context.update(csrf=self.ui.csrf if self.ui else "", lab=self.lab, status_text=STATUS_TEXT)
        return templates.TemplateResponse(self.request, name, context, status_code=status_code)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _flash(request: Request) -> str | None:
    return request.query_params.get("msg")


# --- login --------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui") -> HTMLResponse:
    sid = request.cookies.get(auth.COOKIE)
    ui = auth.store(request).get(sid)
    if ui is None:
        sid, ui = auth.store(request).new()
    resp = templates.TemplateResponse(
        request,
        "login.html",
        {"csrf": ui.csrf, "next": _safe_next(next), "error": None, "lab": None},
    )
    auth.set_cookie(resp, sid, _secure(request))  # type: ignore[arg-type]
    return resp


def _safe_next(target: str) -> str:
    # Only our own pages: never redirect a user to another site after login.
    return target if target.startswith("/ui") and not target.startswith("//") else "/ui"


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request, api_key: str = Form(""), csrf: str = Form(""), next: str = Form("/ui")
) -> Response:
    ui = auth.current(request)
    if not auth.csrf_ok(ui, csrf):
        return RedirectResponse(f"/ui/login?next={quote(_safe_next(next))}", status_code=303)
    with _db(request) as db:
        found = auth.login(db, api_key)
    if found is None:
        assert ui is not None
        return templates.TemplateResponse(
            request,
            "login.html",
            status_code=401,
            context={
                "csrf": ui.csrf,
                "next": _safe_next(next),
                "lab": None,
                "error": "That key is not valid: paste the lab's API key (see .llome/api-key "
                "or `llome keys create`).",
            },
        )
    # A fresh session id at login: an id planted before login is worthless after it.
    auth.store(request).drop(request.cookies.get(auth.COOKIE))
    sid, _ = auth.store(request).new(api_key_id=found[0])
    resp = RedirectResponse(_safe_next(next), status_code=303)
    auth.set_cookie(resp, sid, _secure(request))
    return resp


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    ui = auth.current(request)
    if auth.csrf_ok(ui, csrf):
        auth.store(request).drop(request.cookies.get(auth.COOKIE))
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(auth.COOKIE, path="/ui")
    return resp


# --- campaigns ----------------------------------------------------------------------------


def _list_page(
    ctx: Ctx,
    form: dict[str, str] | None = None,
    field_errors: dict[str, str] | None = None,
    other_errors: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    rows = [data.summary(ctx.db, c) for c in data.campaigns_of(ctx.db, ctx.lab_id)]
    return ctx.render(
        "campaigns.html",
        status_code=status_code,
        rows=rows,
        form=form or {},
        field_errors=field_errors or {},
        other_errors=other_errors or [],
        msg=_flash(ctx.request),
        terminal=TERMINAL_CAMPAIGN,
    )


@router.get("", response_class=HTMLResponse)
def campaigns_page(request: Request) -> HTMLResponse:
    with Ctx(request) as ctx:
        return _list_page(ctx)


@router.post("/campaigns", response_class=HTMLResponse)
async def create_campaign(request: Request) -> Response:
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    with Ctx(request) as ctx:
        ctx.check_csrf(form.get("csrf"))
        body, pre_errors = data.campaign_body(form)
        spec, errors = data.validate_campaign(body) if not pre_errors else (None, [])
        if spec is None:
            by_input, other = data.errors_by_input(errors)
            by_input.update(pre_errors)
            return _list_page(ctx, form, by_input, other, status_code=422)
        campaign = campaign_service.create(ctx.db, data=spec, lab_id=ctx.lab_id)
        cid = campaign.id
    return RedirectResponse(
        f"/ui/campaigns/{cid}?msg=" + quote(f"campaign {cid} created"), status_code=303
    )


@router.get("/campaigns/{campaign_id}", response_class=HTMLResponse)
def campaign_page(request: Request, campaign_id: int) -> HTMLResponse:
    with Ctx(request) as ctx:
        return _campaign_page(ctx, campaign_id)


def _campaign_page(
    ctx: Ctx, campaign_id: int, preview: data.Preview | None = None, status_code: int = 200
) -> HTMLResponse:
    campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id)
    s = data.summary(ctx.db, campaign)
    m = data.metrics(ctx.db, campaign)
    batch = data.open_batch(ctx.db, campaign)
    parents = {}
    if batch is not None:
        parents = {
            c.candidate_id: notation.mutations(c.parent, c.sequence) or "" for c in batch.candidates
        }
    return ctx.render(
        "campaign.html",
        status_code=status_code,
        c=s.read,
        s=s,
        metrics=m,
        batch=batch,
        mutations=parents,
        plot_v=data.plot_version(m),
        preview=preview,
        msg=_flash(ctx.request),
        terminal=TERMINAL_CAMPAIGN,
        uploads=data.recent_uploads(ctx.db, campaign),
        twin=twins.twin_of(ctx.db, campaign),
    )


@router.get("/campaigns/{campaign_id}/status.json")
def campaign_status(request: Request, campaign_id: int) -> JSONResponse:
    """What the page's script refreshes: status, progress, and a version of the plotted data."""
    with Ctx(request) as ctx:
        campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id)
        read = campaign_service.to_read(ctx.db, campaign)
        m = data.metrics(ctx.db, campaign)
        batches, _ = batch_service.list_(ctx.db, campaign, cursor=None, limit=1)
        p = read.progress
        return JSONResponse(
            {
                "status": read.status,
                "status_text": STATUS_TEXT.get(read.status, read.status),
                "round": read.round,
                "rounds": read.rounds,
                "phase": p.phase,
                "percent": p.percent,
                "eta_s": p.eta_s,
                "message": p.message,
                "error": read.error,
                "plot_v": data.plot_version(m),
                "batch": f"{batches[0].id}-{batches[0].status}-{batches[0].remaining}"
                if batches
                else None,
            }
        )


@router.get("/campaigns/{campaign_id}/plot.png")
def plot(request: Request, campaign_id: int, kind: str = "score") -> Response:
    with Ctx(request) as ctx:
        campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id)
        m = data.metrics(ctx.db, campaign)
        title = f"campaign {campaign.id}: {campaign.name}"
        png = (
            metrics_service.fractions_png(m, title)
            if kind == "fractions"
            else metrics_service.plot_png(m, title)
        )
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/campaigns/{campaign_id}/actions/{action}")
def campaign_action(
    request: Request, campaign_id: int, action: str, csrf: str = Form("")
) -> Response:
    actions = {
        "pause": campaign_service.pause,
        "resume": campaign_service.resume,
        "cancel": campaign_service.cancel,
    }
    if action not in actions:
        return JSONResponse({"detail": f"unknown action {action!r}"}, status_code=404)
    with Ctx(request) as ctx:
        ctx.check_csrf(csrf)
        campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id, lock=True)
        try:
            actions[action](ctx.db, campaign)
            msg = f"campaign {action}{'d' if action.endswith('e') else 'ed'}"
        except LlomeError as exc:
            msg = exc.message
    return RedirectResponse(f"/ui/campaigns/{campaign_id}?msg={quote(msg)}", status_code=303)


# --- batches: downloads, release ----------------------------------------------------------


def _batch(ctx: Ctx, campaign_id: int, batch_id: int) -> tuple[Any, Any]:
    campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id)
    return campaign, batch_service.get_or_404(ctx.db, campaign, batch_id)


def _attachment(body: Any, media: str, filename: str) -> Response:
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/campaigns/{campaign_id}/batches/{batch_id}/download.csv")
def batch_csv(request: Request, campaign_id: int, batch_id: int) -> Response:
    with Ctx(request) as ctx:
        campaign, batch = _batch(ctx, campaign_id, batch_id)
        rows = [
            [c.candidate_id, c.sequence, c.score, c.feasible]
            for c in batch_service.candidates(ctx.db, batch)
        ]
        body = "".join(write_rows(batch_service.CSV_COLUMNS, rows))
    return _attachment(
        body, "text/csv; charset=utf-8", f"campaign-{campaign.id}-batch-{batch.id}.csv"
    )


@router.get("/campaigns/{campaign_id}/batches/{batch_id}/template.csv")
def batch_template(request: Request, campaign_id: int, batch_id: int) -> Response:
    """The lab's worksheet: fill in score (and status) and upload it back unchanged in shape."""
    with Ctx(request) as ctx:
        campaign, batch = _batch(ctx, campaign_id, batch_id)
        body = data.template_csv(ctx.db, campaign, batch)
    return _attachment(
        body, "text/csv; charset=utf-8", f"campaign-{campaign.id}-batch-{batch.id}-template.csv"
    )


@router.get("/campaigns/{campaign_id}/batches/{batch_id}/batch.fasta")
def batch_fasta(request: Request, campaign_id: int, batch_id: int) -> Response:
    with Ctx(request) as ctx:
        campaign, batch = _batch(ctx, campaign_id, batch_id)
        body = data.batch_fasta(ctx.db, batch)
    return _attachment(
        body, "text/plain; charset=utf-8", f"campaign-{campaign.id}-batch-{batch.id}.fasta"
    )


@router.post("/campaigns/{campaign_id}/batches/{batch_id}/release")
def release(request: Request, campaign_id: int, batch_id: int, csrf: str = Form("")) -> Response:
    """Mark the batch ordered: its candidates are now in the lab (released)."""
    with Ctx(request) as ctx:
        ctx.check_csrf(csrf)
        campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id, lock=True)
        batch = batch_service.get_or_404(ctx.db, campaign, batch_id)
        try:
            n = data.release(ctx.db, campaign, batch)
            msg = f"batch {batch_id} released to the lab ({n} candidate(s))"
        except LlomeError as exc:
            ctx.db.rollback()
            msg = exc.message
    return RedirectResponse(f"/ui/campaigns/{campaign_id}?msg={quote(msg)}", status_code=303)


# --- uploads: preview, commit -------------------------------------------------------------


@router.post("/campaigns/{campaign_id}/uploads", response_class=HTMLResponse)
def upload_preview(
    request: Request,
    campaign_id: int,
    csrf: str = Form(""),
    target: str = Form("measurements"),
    file: UploadFile = File(...),
) -> HTMLResponse:
    """Validate the file and show what committing it would store; no measurement is stored yet."""
    with Ctx(request) as ctx:
        ctx.check_csrf(csrf)
        settings = request.app.state.settings
        raw = file.file.read(settings.max_upload_bytes + 1)
        batch_id = int(target) if target.isdigit() else None
        assert ctx.ui is not None
        preview = data.preview_upload(
            ctx.db,
            ctx.lab_id,
            campaign_id,
            batch_id,
            raw,
            file.filename or "upload.csv",
            settings,
            key_id=ctx.key_id,
        )
        ctx.db.commit()  # the previewed upload is kept: the commit button names it
        return _campaign_page(ctx, campaign_id, preview=preview)


@router.post("/campaigns/{campaign_id}/uploads/{upload_id}/commit")
def upload_commit(
    request: Request,
    campaign_id: int,
    upload_id: int,
    csrf: str = Form(""),
    skip_rejected: str = Form(""),
) -> Response:
    with Ctx(request) as ctx:
        ctx.check_csrf(csrf)
        try:
            done = data.commit_upload(
                ctx.db,
                ctx.lab_id,
                campaign_id,
                upload_id,
                request.app.state.settings,
                skip_rejected=skip_rejected == "true",
            )
            msg = (
                "this file was committed before: nothing new stored"
                if done.already_committed
                else f"stored {done.new_measurements} new measurement(s)"
            )
        except LlomeError as exc:
            ctx.db.rollback()
            msg = f"nothing stored: {exc.message}"
    return RedirectResponse(f"/ui/campaigns/{campaign_id}?msg={quote(msg)}", status_code=303)


# --- one candidate ------------------------------------------------------------------------


@router.get("/campaigns/{campaign_id}/candidates/{candidate_id}", response_class=HTMLResponse)
def candidate_page(request: Request, campaign_id: int, candidate_id: int) -> HTMLResponse:
    with Ctx(request) as ctx:
        campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id)
        lin = data.lineage(ctx.db, campaign, candidate_id)
        detail = data.candidate_detail(ctx.db, campaign, candidate_id)
        return ctx.render(
            "candidate.html",
            campaign=campaign,
            lin=lin,
            detail=detail,
            candidate_id=candidate_id,
            msg=_flash(request),
            can_withdraw=data.can_withdraw(detail.status),
        )


@router.post("/campaigns/{campaign_id}/candidates/{candidate_id}/withdraw")
def withdraw(
    request: Request, campaign_id: int, candidate_id: int, csrf: str = Form("")
) -> Response:
    """Take the candidate out of the lab for good: it is never proposed again."""
    with Ctx(request) as ctx:
        ctx.check_csrf(csrf)
        campaign = data.campaign_of(ctx.db, ctx.lab_id, campaign_id, lock=True)
        try:
            data.withdraw(ctx.db, campaign, candidate_id)
            msg = f"candidate {candidate_id} withdrawn"
        except LlomeError as exc:
            ctx.db.rollback()
            msg = exc.message
    return RedirectResponse(
        f"/ui/campaigns/{campaign_id}/candidates/{candidate_id}?msg={quote(msg)}", status_code=303
    )
