"""The sendmail worker's variables (WORKER_POOL_SIZE, SENDMAIL_*), read for ``sendmail`` and
``dev``, and where ``sendmail`` reads DKIM keys (SENDMAIL_DKIM_SIGNING, ``docs/sendmail.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.settings.models import DkimKeyStore, SendmailOptions

if TYPE_CHECKING:
    from etrans.settings.reader import Reader


def read_sendmail(r: Reader) -> SendmailOptions:
    return SendmailOptions(
        worker_pool_size=r.integer("WORKER_POOL_SIZE", 10, minimum=1, maximum=1000),
        email_timeout_seconds=r.number("SENDMAIL_EMAIL_TIMEOUT_SECONDS", 300.0, minimum=0.1),
        retry_attempts=r.integer("SENDMAIL_RETRY_ATTEMPTS", 5, minimum=0, maximum=20),
        retry_base_seconds=r.number("SENDMAIL_RETRY_BASE_SECONDS", 1.0, minimum=0.0),
        delivered_ttl_seconds=r.integer("SENDMAIL_DELIVERED_TTL_SECONDS", 7 * 24 * 3600,
                                        minimum=7 * 24 * 3600),
        dkim_signing=read_signing_mode(r),
        dkim_signer=read_signer(r),
        dkim_key_cache_seconds=r.number("SENDMAIL_DKIM_KEY_CACHE_SECONDS", 60.0),
        dkim_signer_threads=r.integer("SENDMAIL_DKIM_SIGNER_THREADS", 2, minimum=0,
                                      maximum=64),
    )


DKIM_SIGNING_MODES = ("auto", "on", "off")


def read_signer(r: Reader) -> str:
    signer = r.text("SENDMAIL_DKIM_SIGNER", "process").strip().lower()
    if signer not in ("process", "threads"):
        r.problems.append(f"SENDMAIL_DKIM_SIGNER must be process or threads, got {signer!r}")
    return signer


def read_signing_mode(r: Reader) -> str:
    mode = r.text("SENDMAIL_DKIM_SIGNING", "auto").strip().lower()
    if mode not in DKIM_SIGNING_MODES:
        r.problems.append(f"SENDMAIL_DKIM_SIGNING must be one of {', '.join(DKIM_SIGNING_MODES)},"
                          f" got {mode!r}")
    return mode


def read_dkim_key_store(r: Reader, mode: str) -> DkimKeyStore | None:
    """sendmail's DKIM keys: the Billing DB (DB_URI) when BILLING_V4_URI is set, else the USEND
    DB (USEND_DB_URI); None when that database is not configured (``on`` then is a problem)."""
    external = bool(r.raw("BILLING_V4_URI"))
    name = "DB_URI" if external else "USEND_DB_URI"
    uri = r.uri(name, ("postgresql", "postgres", "sqlite"), required=False)
    if uri is None:
        if mode == "on":
            r.problems.append(f"SENDMAIL_DKIM_SIGNING=on needs {name}: the DKIM keys are read "
                              "there (" + ("BILLING_V4_URI is set: the Billing DB" if external
                                           else "local billing: the USEND DB") + ")")
        return None
    return DkimKeyStore(uri=uri, external=external)
