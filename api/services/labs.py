"""Labs and their API keys: ``llome keys create --lab NAME``, and the one place a key is checked.

A key is ``llome_`` followed by 43 URL-safe characters (256 random bits). It is printed once;
the database keeps only its SHA-256, so a leaked database does not leak usable keys. Lookups go
by hash (an index, no per-key loop) and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from api.db import utcnow
from api.models import ApiKey, Campaign, Lab

KEY_PREFIX = "llome_"
EMBEDDED_LAB = "default"
KEY_FILE = Path(".llome") / "api-key"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_lab(session: Session, name: str) -> Lab:
    """The lab called ``name``, created if new. A new lab starts with no campaigns: every
    campaign already belongs to a lab (those made before labs existed were given to
    ``EMBEDDED_LAB`` by the migration that made ``campaign.lab_id`` required)."""
    name = name.strip()
    if not name:
        raise ValueError("a lab needs a non-empty name")
    lab = session.scalar(select(Lab).where(Lab.name == name))
    if lab is not None:
        return lab
    lab = Lab(name=name)
    session.add(lab)
    session.flush()
    return lab


def create_key(session: Session, lab_name: str) -> tuple[ApiKey, str]:
    """A new key for the lab (created if new): the row and the key itself, shown only now."""
    lab = get_or_create_lab(session, lab_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(lab_id=lab.id, prefix=key[: len(KEY_PREFIX) + 6], key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return row, key


def _plausible(key: str) -> bool:
    # Not worth a query: empty, not ours, or absurdly long.
    return bool(key) and key.startswith(KEY_PREFIX) and len(key) <= 200


def key_and_lab(session: Session, key: str) -> tuple[ApiKey, Lab] | None:
    """The live key row matching ``key`` and its lab, in one query; None when the key is
    unknown or revoked."""
    if not _plausible(key):
        return None
    digest = hash_key(key)
    found = (
        session.execute(
            select(ApiKey, Lab).join(Lab, Lab.id == ApiKey.lab_id).where(ApiKey.key_hash == digest)
        )
        .tuples()
        .first()
    )
    if (
        found is None
        or found[0].revoked_at is not None
        or not hmac.compare_digest(found[0].key_hash, digest)
    ):
        return None
    return found[0], found[1]


# Built once: every request to a campaign runs it, and building a statement costs more Python
# than running it.
_CAMPAIGN_FOR_KEY = (
    select(Campaign, ApiKey.id)
    .join(ApiKey, ApiKey.lab_id == Campaign.lab_id)
    .where(
        Campaign.id == bindparam("campaign_id"),
        ApiKey.key_hash == bindparam("key_hash"),
        ApiKey.revoked_at.is_(None),
    )
)
# The campaign's row lock, as campaigns.get_or_404(lock=True) takes it; not the key's.
_CAMPAIGN_FOR_KEY_LOCKED = _CAMPAIGN_FOR_KEY.with_for_update(of=Campaign)


def campaign_for_key(
    session: Session, campaign_id: int, key: str, *, lock: bool = False
) -> tuple[Campaign, int] | None:
    """The campaign and the id of ``key`` when the key is live and its lab owns the campaign,
    in one query; None otherwise (a bad key, another lab's or a missing campaign). ``lock``
    takes the campaign's row lock: writers of one campaign take turns."""
    if not _plausible(key):
        return None
    found = (
        session.execute(
            _CAMPAIGN_FOR_KEY_LOCKED if lock else _CAMPAIGN_FOR_KEY,
            {"campaign_id": campaign_id, "key_hash": hash_key(key)},
        )
        .tuples()
        .first()
    )
    return None if found is None else (found[0], found[1])


def revoke(session: Session, key_id: int) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def ensure_embedded_key(session: Session, workdir: Path) -> tuple[Path, bool]:
    """The embedded default's first key: when no lab has a key yet, create one for the lab
    ``default`` and write it to ``workdir/.llome/api-key`` (mode 0600). Returns the file and
    whether a key was created now."""
    path = workdir / KEY_FILE
    if session.scalar(select(ApiKey.id).limit(1)) is not None:
        return path, False
    _, key = create_key(session, EMBEDDED_LAB)
    write_key_file(path, key)
    return path, True


def write_key_file(path: Path, key: str) -> None:
    """Write ``key`` readable by its owner only (created 0600, never world-readable at any time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
