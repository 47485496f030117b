"""Rendering of a request's audit trail for `erasure-worker status` (contract §5).

Only identifier kinds are shown, never identifier values: the trail is for operators and
auditors, who must not see the personal data being erased.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from consumer.work import RequestTrail


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def trail_json(trail: RequestTrail) -> dict[str, Any]:
    return {
        "request_id": trail.request_id,
        "status": trail.status.value,
        "regulation": trail.regulation.value,
        "received_at": iso(trail.received_at),
        "vendors": [
            {
                "vendor": vendor.vendor,
                "status": vendor.status.value,
                "items": [
                    {
                        "identity_type": item.identity_type,
                        "destination": item.destination,
                        "status": item.status.value,
                        "vendor_job_id": item.vendor_job_id,
                        "updated_at": iso(item.updated_at),
                        "detail": item.detail,
                    }
                    for item in vendor.items
                ],
            }
            for vendor in trail.vendors
        ],
    }


def trail_text(trail: RequestTrail) -> str:
    lines = [
        f"request   {trail.request_id}",
        f"status    {trail.status.value}",
        f"regulation {trail.regulation.value}, requested {iso(trail.requested_at)}, "
        f"received {iso(trail.received_at)}",
        "",
        f"{'VENDOR':<11} {'STATUS':<12} {'IDENTITY':<13} {'DEST':<8} {'ITEM':<12} "
        f"{'JOB':<14} {'UPDATED':<25} DETAIL",
    ]
    for vendor in trail.vendors:
        if not vendor.items:
            why = next(
                (e.detail for e in reversed(trail.events) if e.vendor == vendor.vendor), None
            )
            lines.append(f"{vendor.vendor:<11} {vendor.status.value:<12} {'':<77}{why or ''}")
        for item in vendor.items:
            lines.append(
                f"{vendor.vendor:<11} {vendor.status.value:<12} {item.identity_type:<13} "
                f"{item.destination or '-':<8} {item.status.value:<12} "
                f"{item.vendor_job_id or '-':<14} {iso(item.updated_at):<25} {item.detail or ''}"
            )
    lines += ["", "history:"]
    for event in trail.events:
        scope = event.vendor or "(request)"
        previous = event.previous_status.value if event.previous_status else "-"
        lines.append(
            f"  {iso(event.changed_at)}  {scope:<11} {previous:>11} -> {event.status.value:<12}"
            f" {event.vendor_job_id or ''} {event.detail or ''}".rstrip()
        )
    return "\n".join(lines)
