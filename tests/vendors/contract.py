"""One contract, every adapter: a vendor's adapter against its strict sandbox.

The sandboxes reject what the real vendors reject, so an adapter that passes here sends
only well-formed calls within the vendor's limits, survives its faults, and maps its
answers to the statuses of contract §3. Vendor specifics live in the harness a subclass
of `ContractSuite` provides as its `harness` fixture (`test_contract.py` runs every
registered vendor's; `test_fifth_vendor.py` a vendor from outside `consumer`). A scenario
that injects faults also checks that each one fired, so none passes without meeting them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import pytest

from consumer.ledger.records import DueJob, WorkItem
from consumer.model import Status
from consumer.vendors.base import (
    RetryableVendorError,
    SubmitResult,
    VendorAdapter,
    VendorAuthError,
    VendorError,
)
from devtools.sandbox.server import Fault, Sandbox
from tests.support.waiting import wait_until
from tests.vendors.harness import RecordedSleeps, VendorHarness, due_job, poll_until_closed


def unique_values(count: int) -> list[str]:
    return [f"c{uuid.uuid4().hex[:12]}@example.com" for _ in range(count)]


def posts(sandbox: Sandbox, prefix: str) -> int:
    return sum(
        1 for call in sandbox.calls if call.method == "POST" and call.path.startswith(prefix)
    )


def run_to_terminal(
    adapter: VendorAdapter, items: Sequence[WorkItem], timeout: float = 10.0
) -> dict[int, Status]:
    """Submit, then poll every job until the vendor settles each item (a deadline, no sleeps
    beyond the polls themselves)."""
    result = adapter.submit(items)
    statuses = {outcome.item_id: outcome.status for outcome in result.outcomes}
    by_id = {item.item_id: item for item in items}
    for job in result.jobs:
        due = due_job(job, [by_id[i] for i in job.item_ids])
        statuses.update(poll_until_done(adapter, due, timeout))
    return statuses


def poll_until_done(adapter: VendorAdapter, job: DueJob, timeout: float) -> dict[int, Status]:
    closed = poll_until_closed(adapter, job, timeout)
    return {outcome.item_id: outcome.status for outcome in closed.outcomes}


def assert_faults_fired(sandbox: Sandbox, injected: int) -> None:
    """Every fault the scenario injected met a request (else it tested nothing)."""
    assert sandbox.faults_injected() == injected
    assert sandbox.faults_served() == injected, "an injected fault never fired"


class ContractSuite:
    """The scenarios; a subclass supplies the `harness` fixture."""

    @pytest.fixture
    def sandbox(self, harness: VendorHarness) -> Iterator[Sandbox]:
        with harness.running() as sandbox:
            yield sandbox

    @pytest.fixture
    def sleeps(self) -> RecordedSleeps:
        return RecordedSleeps()

    @pytest.fixture
    def adapter(
        self, harness: VendorHarness, sandbox: Sandbox, sleeps: RecordedSleeps
    ) -> Iterator[VendorAdapter]:
        adapter = harness.adapter(harness.settings(sandbox), sleeps)
        yield adapter
        adapter.close()

    def test_existing_and_unknown_identifiers_reach_the_documented_statuses(
        self, harness: VendorHarness, sandbox: Sandbox, adapter: VendorAdapter
    ) -> None:
        existing, unknown = unique_values(2)
        harness.seed(sandbox, existing)
        items = harness.items([existing, unknown])
        batches = [items] if harness.max_ids_per_call > 1 else [[item] for item in items]
        statuses: dict[int, Status] = {}
        for batch in batches:
            statuses.update(run_to_terminal(adapter, batch))
        assert statuses == {
            items[0].item_id: harness.expected.existing,
            items[1].item_id: harness.expected.unknown,
        }

    def test_a_full_batch_at_the_vendor_limit_is_accepted(
        self, harness: VendorHarness, sandbox: Sandbox, adapter: VendorAdapter
    ) -> None:
        items = harness.items(unique_values(harness.max_ids_per_call))
        result = adapter.submit(items)
        failed = [o for o in result.outcomes if o.status is Status.FAILED]
        assert not failed, failed[:3]
        assert all(call.status is not None and call.status < 400 for call in sandbox.calls)

    def test_expired_token_is_refreshed_once(
        self, harness: VendorHarness, sandbox: Sandbox, adapter: VendorAdapter
    ) -> None:
        if not harness.has_tokens:
            pytest.skip(f"{harness.vendor} authenticates every call with a static key")
        adapter.submit(harness.items(unique_values(1)))
        harness.expire_tokens(sandbox)
        before = len(sandbox.calls)
        result = adapter.submit(harness.items(unique_values(1)))
        assert isinstance(result, SubmitResult)
        later = sandbox.calls[before:]
        assert [c.status for c in later if c.path.startswith(harness.submit_path)][:1] == [401]
        assert sum(1 for c in later if c.path.startswith(harness.auth_path)) >= 1
        refused = [c for c in later if c.status == 401 and c.path.startswith(harness.submit_path)]
        assert len(refused) == 1, "one refresh, then the call goes through"

    def test_rate_limited_submission_waits_for_retry_after(
        self,
        harness: VendorHarness,
        sandbox: Sandbox,
        adapter: VendorAdapter,
        sleeps: RecordedSleeps,
    ) -> None:
        adapter.check()
        sandbox.inject(Fault.rate_limited(retry_after=1), path_prefix=harness.submit_path)
        result = adapter.submit(harness.items(unique_values(1)))
        assert result.jobs or result.outcomes
        assert sleeps.waits and max(sleeps.waits) >= 1.0
        assert posts(sandbox, harness.submit_path) == 2
        assert_faults_fired(sandbox, 1)

    @pytest.mark.parametrize(
        "fault",
        [
            Fault.status(500),
            Fault.reset(after_processing=True),
            Fault.delay(1.5, after_processing=True),
        ],
        ids=["500", "reset", "timeout"],
    )
    def test_submission_that_may_have_been_processed_is_not_resent_in_call(
        self, harness: VendorHarness, sandbox: Sandbox, adapter: VendorAdapter, fault: Fault
    ) -> None:
        adapter.check()
        sandbox.inject(fault, path_prefix=harness.submit_path)
        items = harness.items(unique_values(1))
        try:
            result = adapter.submit(items)
        except RetryableVendorError:
            pass
        else:
            assert [o.status for o in result.outcomes] == [Status.QUEUED], "must come back"
        # A timed-out call is logged once the sandbox finally answers it.
        wait_until(lambda: posts(sandbox, harness.submit_path) >= 1, 5, "the submission")
        assert posts(sandbox, harness.submit_path) == 1, "no idempotency key: no blind resend"
        assert_faults_fired(sandbox, 1)

    def test_refused_credentials_stop_the_vendor(
        self, harness: VendorHarness, sandbox: Sandbox, sleeps: RecordedSleeps
    ) -> None:
        harness.refuse_credentials(sandbox)
        adapter = harness.adapter(harness.settings(sandbox), sleeps)
        try:
            with pytest.raises(VendorAuthError):
                adapter.submit(harness.items(unique_values(1)))
            with pytest.raises(VendorError):
                adapter.check()
        finally:
            adapter.close()

    def test_flaky_status_checks_are_retried(
        self, harness: VendorHarness, sandbox: Sandbox, adapter: VendorAdapter
    ) -> None:
        if harness.poll_path is None:
            pytest.skip(f"{harness.vendor} has no status API")
        value = unique_values(1)
        harness.seed(sandbox, value[0])
        items = harness.items(value)
        result = adapter.submit(items)
        assert result.jobs
        sandbox.inject(Fault.reset(), path_prefix=harness.poll_path)
        sandbox.inject(Fault.status(503), path_prefix=harness.poll_path)
        due = due_job(result.jobs[0], items)
        expected = {items[0].item_id: harness.expected.existing}
        assert poll_until_done(adapter, due, 10.0) == expected
        assert_faults_fired(sandbox, 2)

    def test_check_reaches_the_auth_endpoint(
        self, harness: VendorHarness, sandbox: Sandbox, adapter: VendorAdapter
    ) -> None:
        adapter.check()
        assert any(call.path.startswith(harness.auth_path) for call in sandbox.calls)
