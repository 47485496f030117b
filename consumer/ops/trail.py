"""Rendering of a request's audit trail for `erasure-worker status` (contract §5).

Only identifier kinds are shown, never identifier values: the trail is for operators and
auditors, who must not see the personal data being erased.
"""

from __future__ import annotations

from typing import Any

from consumer.ledger.records import ActionTrail, RequestTrail
from consumer.ops.render import iso


def trail_json(trail: RequestTrail) -> dict[str, Any]:
    return {
        "request_id": trail.request_id,
        "status": trail.status.value,
        "regulation": trail.regulation.value,
        "received_at": iso(trail.received_at),
        "due_at": None if trail.due_at is None else iso(trail.due_at),
        "extended_days": trail.extended_days,
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
        "actions": [_action_json(action) for action in trail.actions],
    }


def _action_json(action: ActionTrail) -> dict[str, Any]:
    return {
        "at": iso(action.at),
        "action": action.action,
        "vendor": action.vendor,
        "actor": action.actor,
        "reason": action.reason,
        "detail": action.detail,
    }


def trail_text(trail: RequestTrail) -> str:
    lines = [
        f"request   {trail.request_id}",
        f"status    {trail.status.value}{_reopened(trail)}",
        f"regulation {trail.regulation.value}, requested {iso(trail.requested_at)}, "
        f"received {iso(trail.received_at)}",
        _due_line(trail),
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
    if trail.actions:
        lines += ["", "operator actions:"]
    lines += [_action_line(action) for action in trail.actions]
    return "\n".join(lines)


def _action_line(action: ActionTrail) -> str:
    detail = f" ({action.detail})" if action.detail else ""
    return (
        f"  {iso(action.at)}  {action.vendor or '(request)':<11} {action.action:<8}"
        f" by {action.actor}: {action.reason}{detail}"
    )


def _reopened(trail: RequestTrail) -> str:
    """A FAILED request with an open vendor scope was requeued: say it is under way again."""
    if trail.status.is_terminal and any(not v.status.is_terminal for v in trail.vendors):
        return " (requeued: under way again until every vendor scope is terminal)"
    return ""


def _due_line(trail: RequestTrail) -> str:
    if trail.due_at is None:
        return "due       unknown"
    extended = f", extended by {trail.extended_days} days" if trail.extended_days else ""
    return f"due       {iso(trail.due_at)}{extended}"
