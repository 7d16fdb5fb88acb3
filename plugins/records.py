"""The built-in record types and their own merge check, registered through the same hooks a plugin
would use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from salesmgr.model.fields import (
    Choice,
    Currency,
    Date,
    DateOrTimestamp,
    Email,
    Field,
    Money,
    Percent,
    RecordId,
    RecordType,
    Text,
    Timestamp,
)
from salesmgr.plugin.hookspecs import hookimpl

if TYPE_CHECKING:
    from salesmgr.merge.engine import MergeSession
    from salesmgr.model.pipeline import Record

STAGES = ("Lead", "Qualified", "Proposal", "Negotiation", "Won", "Lost")
ACTIVITY_KINDS = ("call", "meeting", "email", "note")


def opportunity_type() -> RecordType:
    return RecordType(
        "opportunity",
        [
            Field("company", Text(200), required=True, help="the customer's company"),
            Field("title", Text(200), required=True, help="what is being sold"),
            Field("contact", Text(200), help="the person to talk to"),
            Field("phone", Text(50)),
            Field("email", Email()),
            Field("stage", Choice(STAGES), help=" | ".join(STAGES),
                  default=lambda header: "Lead"),
            Field("value", Money(), help="deal value, e.g. 12000.50"),
            Field("currency", Currency(), help="ISO 4217 code; default: the pipeline's",
                  default=lambda header: header.get("currency")),
            Field("probability", Percent(0, 100), help="0-100 (percent)"),
            Field("close_date", Date(), help="expected close, YYYY-MM-DD"),
            Field("next_action", Text(500)),
            Field("next_action_date", Date()),
            Field("owner", Text(200), default=lambda header: header.get("owner")),
            Field("notes", Text(), help="free text, any number of lines"),
            Field("created", Timestamp(), default=_now, automatic=True),
            Field("external_id", Text(200),
                  help="its id in the CRM it was imported from (import --update finds it)"),
        ],
        help="a sales opportunity",
        title_field="company",
        text_merge_fields=frozenset({"notes"}),
        identity_fields=("company", "title"),
    )


def activity_type() -> RecordType:
    return RecordType(
        "activity",
        [
            Field("opportunity_id", RecordId(), required=True),
            Field("kind", Choice(ACTIVITY_KINDS), required=True, help=" | ".join(ACTIVITY_KINDS)),
            Field("date", DateOrTimestamp(), required=True, default=_now),
            Field("summary", Text(), help="what was said or done"),
        ],
        help="a call, meeting, e-mail or note logged against an opportunity",
        title_field="summary",
    )


def _now(header: object) -> str:
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")


@hookimpl
def salesmgr_register_record_types(register: Callable[[RecordType], None]) -> None:
    register(opportunity_type())
    register(activity_type())


@hookimpl
def salesmgr_validate_merged(session: MergeSession, record: Record) -> list[str]:
    """An activity merged in for an opportunity that is deleted on the desktop: say so."""
    if record.kind != "activity":
        return []
    parent = session.desktop.records.get(record.values.get("opportunity_id", ""))
    if parent is not None and parent.deleted:
        return [
            f"activity {record.id[:8]} was logged on opportunity {parent.id[:8]}, which is deleted"
        ]
    return []
