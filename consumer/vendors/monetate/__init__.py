"""Monetate (Kibo) consumer data privacy (VENDOR-FACTS §2): settings, adapter, setup.

Auth: a JWT `{"username", "iat"}` signed RS256 with the API user's private key buys a token
from the Auth API; `TokenAuth` sends it as `Authorization: Token <token>` until shortly
before it expires and fetches a new one once on a 401. A 403 means the key was revoked.

Submission: one upload of `schema_rows` (`customer_id`, `delete_request_time`) to the
configured `customer_data_privacy` dataset per batch. Monetate has no job id, so each
upload becomes synthetic jobs (`upload-<12 hex>`, no personal data) of at most
`status_checks_per_poll` customer ids, which the poll slots check at once; rows are
upserted by customer id, so sending one again is harmless.

Completion: Monetate deletes in nightly batches (24-48 h) and only answers per customer
id, through a status endpoint limited to about one request a second for all our work
(`status_rate_per_second`, held for every loop and replica by the worker's call gate):
`NOT_FOUND` after submission means the id is gone (erased, or never held) -> COMPLETED;
`PENDING` / `FOUND` -> still IN_PROGRESS. A poll checks at most `status_checks_per_poll`
ids of its job, from a random one on, and stops at the first still open: an upload is
deleted all at once, so while it is pending a poll costs one check and the next waits
longer (a quarter of the job's age, up to `poll_interval_seconds`); once it is deleted each
id costs one check. The random start keeps a few ids that never go away from hiding the
rest.

The dataset is created once by `erasure-worker setup` (`create_dataset`, idempotent: the
documented 400 "exists" answer means it is there). Only documented endpoints are called,
and none of them reads a dataset back, so nothing short of a write can tell whether it
exists: `check` proves the credentials only. Until the dataset exists every upload gets
404, which makes Monetate unusable but is no fault of the items: it is raised as
`VendorAuthError` (calls stop, items wait) with a message saying what to run.

The vendor is a package because it is more than 400 lines: `settings` (its config
section), `adapter` (the calls) and `wire` (what the calls carry).
"""

from __future__ import annotations

from consumer.vendors.http import Sleep, VendorHttp
from consumer.vendors.monetate.adapter import MonetateAdapter
from consumer.vendors.monetate.settings import MonetateSettings
from consumer.vendors.registry import VendorEntry

__all__ = ["VENDOR", "MonetateAdapter", "MonetateSettings"]

# Monetate documents no read of a dataset: only an upload would tell, and check never writes.
_UNCHECKED_DATASET = (
    "dataset {dataset} not checked (no documented read-only call can tell; "
    "`erasure-worker setup` creates it, idempotently)"
)


def create_dataset(settings: MonetateSettings) -> str:
    """`erasure-worker setup`: create the dataset uploads go to, unless it exists."""
    adapter = MonetateAdapter(settings)
    try:
        created = adapter.create_dataset()
    finally:
        adapter.close()
    return f"dataset {settings.dataset} {'created' if created else 'already exists'}"


def unchecked_dataset(settings: MonetateSettings) -> str:
    """What `check` says it did not prove: that the dataset exists."""
    return _UNCHECKED_DATASET.format(dataset=settings.dataset)


def _adapter(settings: MonetateSettings, http: VendorHttp, sleep: Sleep) -> MonetateAdapter:
    """In-call retries wait with the loop's `sleep`, so shutdown cuts the wait short."""
    return MonetateAdapter(settings, http, sleep=sleep)


VENDOR = VendorEntry(
    "monetate",
    MonetateSettings,
    adapter=_adapter,
    setup=create_dataset,
    check_note=unchecked_dataset,
)
