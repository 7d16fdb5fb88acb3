"""The phone's own apps: next actions as an iCalendar file, contacts as vCards.

Written with icalendar and vobject.  Every event, to-do and card has a UID derived from the
record it comes from and nothing else, so importing a newer file into the calendar or address
book updates what an earlier one added instead of duplicating it; ``LAST-MODIFIED`` / ``REV``
carry the record's last change so the app knows which copy is newer.

- `next_actions_calendar`: one all-day event (or to-do, due that day) per live opportunity with a
  next-action date: "next action — company: title", with the deal in the description.
- `contact_cards`: one vCard 3.0 per contact (the same person and company on several deals is
  one card; its UID comes from the oldest of those deals' ids).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import icalendar
import vobject

from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.reports import due_date, fold, sorted_records

PRODID = "-//salesmgr//next actions//EN"
UID_DOMAIN = "salesmgr.invalid"  # RFC 6761: never a real host, so never someone else's UIDs
CARD_NAMESPACE = uuid.UUID("0f4c3c62-9a56-4d5c-9a4e-5a1e5ea1c0de")


def changed_at(record: Record) -> datetime:
    return datetime.fromtimestamp(record.last_change.at / 1000, UTC).replace(microsecond=0)


def deal_text(record: Record) -> str:
    values = record.values
    lines = [f"{values.get('company', '')}: {values.get('title', '')}"]
    for name in ("contact", "phone", "email", "stage"):
        if values.get(name):
            lines.append(f"{name.replace('_', ' ')}: {values[name]}")
    if values.get("value"):
        lines.append(f"value: {values['value']} {values.get('currency', '')}".rstrip())
    lines.append(f"salesmgr id: {record.id}")
    return "\n".join(lines)


def next_actions_calendar(pipeline: Pipeline, *, todos: bool = False) -> bytes:
    """An iCalendar file (RFC 5545) of the live opportunities' next actions."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    if pipeline.name:
        calendar.add("x-wr-calname", f"{pipeline.name}: next actions")
    for record in sorted_records(list(pipeline.live("opportunity")), "next_action_date"):
        day = due_date(record)
        if day is None:
            continue
        values = record.values
        item: icalendar.Event | icalendar.Todo = icalendar.Todo() if todos else icalendar.Event()
        item.add("uid", f"{record.id}-next-action@{UID_DOMAIN}")
        item.add("dtstamp", changed_at(record))
        item.add("last-modified", changed_at(record))
        action = values.get("next_action") or "Next action"
        item.add("summary", f"{action} — {values.get('company', '')}: {values.get('title', '')}")
        item.add("description", deal_text(record))
        if todos:
            item.add("due", day)
        else:
            item.add("dtstart", day)
            item.add("dtend", day + timedelta(days=1))
            item.add("transp", "TRANSPARENT")  # a reminder, not a meeting: the day stays free
        calendar.add_component(item)
    data: bytes = calendar.to_ical()
    return data


def contact_key(record: Record) -> tuple[str, str]:
    return fold(record.values.get("contact", "").strip()), fold(record.values.get("company", ""))


def name_parts(full: str) -> tuple[str, str]:
    """("given names", "family name"): the last word is taken as the family name, which is all
    a single free-text field can tell."""
    words = full.split()
    if len(words) < 2:
        return "", full.strip()
    return " ".join(words[:-1]), words[-1]


def contact_cards(pipeline: Pipeline) -> str:
    """vCards (3.0) of the people on the live opportunities."""
    people: dict[tuple[str, str], list[Record]] = {}
    for record in sorted_records(list(pipeline.live("opportunity")), None):
        if record.values.get("contact", "").strip():
            people.setdefault(contact_key(record), []).append(record)
    return "".join(card(records) for records in people.values())


def first_value(records: Iterable[Record], name: str) -> str:
    return next((r.values[name] for r in records if r.values.get(name)), "")


def card(records: list[Record]) -> str:
    oldest = min(records, key=lambda r: r.id)
    full = oldest.values["contact"].strip()
    given, family = name_parts(full)
    vcard = vobject.vCard()
    vcard.add("uid").value = f"urn:uuid:{uuid.uuid5(CARD_NAMESPACE, oldest.id)}"
    vcard.add("fn").value = full
    vcard.add("n").value = vobject.vcard.Name(family=family, given=given)
    company = oldest.values.get("company", "")
    if company:
        vcard.add("org").value = [company]
    phone = first_value(records, "phone")
    if phone:
        tel = vcard.add("tel")
        tel.value = phone
        tel.type_param = "WORK"
    email = first_value(records, "email")
    if email:
        mail = vcard.add("email")
        mail.value = email
        mail.type_param = "INTERNET"
    deals = "\n".join(f"{r.values.get('title', '')} ({r.values.get('stage', '')})"
                      for r in records)
    vcard.add("note").value = deals
    newest = max(changed_at(r) for r in records)
    vcard.add("rev").value = newest.strftime("%Y-%m-%dT%H:%M:%SZ")
    text: str = vcard.serialize()
    return text

