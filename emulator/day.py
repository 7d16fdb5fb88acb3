"""A working day on a pipeline, played by a seeded random generator: the demo's story, and
``salesmgr emulator day`` for scripting one's own scenarios.

- `starting_pipeline`: the desktop's pipeline before the day — companies, contacts, phones,
  e-mails, stages with their usual probabilities, values, close dates and a few past activities.
- `road_day`: the salesperson on the road with the device — visits (a meeting logged, the stage
  moved on, a discount agreed, the next step noted), calls logged, a new lead met, a lost deal
  deleted.
- `office_day`: the assistant at the desktop — new opportunities from the web site, a phone
  number corrected, and an edit of the very field the salesperson changed on the road (a true
  conflict for the evening merge).

The same seed on the same pipeline plays the same day: records are chosen in company order, never
by their random ids, and every choice comes from ``random.Random`` seeded with the seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from salesmgr.emulator.device_path import DEVICE_FILE
from salesmgr.errors import PipelineFileError
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.plugin.manager import Registry, get_registry
from salesmgr.plugins.records import STAGES
from salesmgr.storage import editing_pipeline

OPPORTUNITY = "opportunity"
ACTIVITY = "activity"
OPEN_STAGES = STAGES[:4]  # Lead, Qualified, Proposal, Negotiation
PROBABILITY = {"Lead": 10, "Qualified": 25, "Proposal": 50, "Negotiation": 75, "Won": 100,
               "Lost": 0}
DEFAULT_VISITS = 4

COMPANIES = (
    "Acme Logistics", "Baltic Timber", "Brightwave Media", "Castell Foods", "Delta Marine",
    "Elbe Pharma", "Fjord Outdoor", "Granite Insurance", "Harbour Hotels", "Iberia Solar",
    "Juniper Clinics", "Kestrel Aviation", "Lumen Lighting", "Meridian Bank", "Nordic Dairy",
    "Orchard Retail", "Pioneer Rail", "Quarry Stone", "Riverside Schools", "Saffron Catering",
    "Tidewater Ports", "Umbra Optics", "Vantage Motors", "Willow Care", "Xenon Labs",
    "Yellowfin Seafood", "Zephyr Wind", "Alpine Dairy Coop", "Beacon Security", "Cobalt Mining",
    "Dune Textiles", "Ember Bakeries", "Falcon Couriers", "Glacier Water", "Helix Biotech",
)
NEW_COMPANIES = (
    "Aurora Vineyards", "Bastion Storage", "Cedar Furniture", "Drift Surf Co", "Evergreen Homes",
    "Foxglove Gardens", "Gull Ferries", "Hawthorn Law", "Isle Breweries", "Jet Print",
)
PRODUCTS = (
    "Fleet renewal", "Warehouse scanners", "Rugged tablets", "Field service licences",
    "Support contract", "Route planning pilot", "Handheld printers", "Site survey",
    "Barcode upgrade", "Training days", "Spare batteries", "Docking cradles",
)
FIRST_NAMES = (
    "Ana", "Ben", "Carla", "Dmitri", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kasia",
    "Lars", "Maja", "Nils", "Olga", "Pedro", "Rosa", "Sven", "Tariq", "Ulla", "Vera", "Wim",
)
LAST_NAMES = (
    "Almeida", "Berger", "Costa", "Dahl", "Eriksen", "Fischer", "Garcia", "Horvat", "Ivanova",
    "Jansen", "Kowalski", "Lindqvist", "Moreau", "Novak", "Olsen", "Petrov", "Rossi", "Schmidt",
)
NEXT_STEPS = (
    "Send the revised quote", "Book a demo for the warehouse team", "Call the buyer",
    "Prepare the contract", "Visit the second site", "Send references", "Agree delivery dates",
)
VISIT_NOTES = (
    "liked the pilot results", "wants a lower unit price", "budget confirmed for this quarter",
    "asked for a second demo", "comparing us with a competitor", "needs sign-off from finance",
)
CALL_NOTES = (
    "confirmed the meeting", "asked about delivery times", "will send the tender documents",
    "no answer, left a message", "wants the price list", "IT approved the integration",
)


@dataclass
class DayAction:
    """One thing done during the day, as a person would say it."""

    what: str  # "visit", "stage", "value", "call", "new lead", "deleted", "phone", "new"...
    record_id: str  # the opportunity
    label: str
    detail: str = ""
    field: str = ""  # the field changed, if one was...
    value: str | None = None  # ...and what it holds after the change
    added: str = ""  # the id of a record the action created (an activity, an opportunity)

    def line(self) -> str:
        return f"{self.what:<9} {self.label}" + (f": {self.detail}" if self.detail else "")


@dataclass
class DaySummary:
    """What a day did to a pipeline."""

    who: str  # "road" or "office"
    seed: int
    actions: list[DayAction] = field(default_factory=list)

    def did(
        self, what: str, record: Record, detail: str = "", field: str = "", added: str = ""
    ) -> None:
        value = record.values.get(field) if field else None
        self.actions.append(DayAction(what, record.id, label(record), detail, field, value, added))

    def of(self, what: str) -> list[DayAction]:
        return [a for a in self.actions if a.what == what]

    @property
    def contested(self) -> DayAction | None:
        """A field the day changed on an existing record, for the office to contest: the first
        discount agreed, else the first other change."""
        changed = [a for a in self.actions if a.field]
        return next((a for a in changed if a.field == "value"), changed[0] if changed else None)

    def lines(self) -> list[str]:
        return [action.line() for action in self.actions]

    def as_json(self) -> dict[str, Any]:
        return {"who": self.who, "seed": self.seed, "actions": [asdict(a) for a in self.actions]}


def label(record: Record) -> str:
    return f"{record.get('company')} / {record.get('title')}"


def money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('1')):f}"


def phone_number(rng: random.Random) -> str:
    return f"+{rng.choice((31, 44, 45, 46, 47, 49, 351))} {rng.randint(10, 99)} " \
           f"{rng.randint(100, 999)} {rng.randint(1000, 9999)}"


def contact(rng: random.Random, company: str) -> dict[str, str]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    domain = "".join(ch for ch in company.lower() if ch.isalnum())[:16] + ".example"
    return {
        "contact": f"{first} {last}",
        "phone": phone_number(rng),
        "email": f"{first.lower()}.{last.lower()}@{domain}",
    }


def opportunity_values(
    rng: random.Random, company: str, stage: str, today: date
) -> dict[str, str | None]:
    value = Decimal(rng.randrange(2_000, 120_000, 500))
    values: dict[str, str | None] = {
        "company": company,
        "title": rng.choice(PRODUCTS),
        **contact(rng, company),
        "stage": stage,
        "value": money(value),
        "probability": str(PROBABILITY[stage]),
        "close_date": (today + timedelta(days=rng.randint(10, 150))).isoformat(),
    }
    if stage in OPEN_STAGES:
        values["next_action"] = rng.choice(NEXT_STEPS)
        values["next_action_date"] = (today + timedelta(days=rng.randint(1, 20))).isoformat()
    return values


def by_company(pipeline: Pipeline) -> list[Record]:
    """Live opportunities in a stable order: company, title, then id for exact ties."""
    records = pipeline.live(OPPORTUNITY)
    return sorted(records, key=lambda r: (r.get("company"), r.get("title"), r.id))


def open_deals(pipeline: Pipeline) -> list[Record]:
    return [r for r in by_company(pipeline) if r.get("stage", "Lead") in OPEN_STAGES]


def moment(today: date, hour: int, minute: int) -> str:
    return datetime(today.year, today.month, today.day, hour, minute).isoformat()


def starting_pipeline(
    seed: int,
    *,
    opportunities: int = 30,
    name: str = "EMEA field sales",
    owner: str = "ana",
    currency: str = "EUR",
    today: date | None = None,
    registry: Registry | None = None,
) -> Pipeline:
    """A realistic pipeline of ``opportunities`` deals in all stages, and a few past activities."""
    registry = registry or get_registry()
    rng = random.Random(f"pipeline-{seed}")
    today = today or date.today()
    rtype = registry.record_type(OPPORTUNITY)
    activity = registry.record_type(ACTIVITY)
    pipeline = Pipeline.create(name=name, owner=owner, currency=currency)
    weights = (6, 6, 5, 4, 2, 1)  # most deals are early; a few are already won or lost
    companies = rng.sample(COMPANIES, min(opportunities, len(COMPANIES)))
    for company in companies:
        stage = rng.choices(STAGES, weights)[0]
        record, _ = pipeline.add(rtype, opportunity_values(rng, company, stage, today))
        if rng.random() < 0.25:
            when = today - timedelta(days=rng.randint(1, 14))
            pipeline.add(activity, {
                "opportunity_id": record.id,
                "kind": rng.choice(("call", "email", "meeting")),
                "date": when.isoformat(),
                "summary": rng.choice(CALL_NOTES).capitalize(),
            })
    return pipeline


def road_day(
    pipeline: Pipeline,
    seed: int,
    *,
    visits: int = DEFAULT_VISITS,
    today: date | None = None,
    registry: Registry | None = None,
) -> DaySummary:
    """The salesperson's day on the device: visits, calls, a new lead, a lost deal deleted.

    The first visit always moves the stage on and agrees a discount, so the day always changes a
    field the office can contest."""
    registry = registry or get_registry()
    rtype = registry.record_type(OPPORTUNITY)
    activity = registry.record_type(ACTIVITY)
    rng = random.Random(f"road-{seed}")
    today = today or date.today()
    summary = DaySummary("road", seed)
    deals = open_deals(pipeline)
    visited = rng.sample(deals, min(max(visits, 0), len(deals)))
    for number, deal in enumerate(visited):
        hour = 9 + 2 * number
        note = rng.choice(VISIT_NOTES)
        meeting, _ = pipeline.add(activity, {
            "opportunity_id": deal.id, "kind": "meeting", "date": moment(today, hour % 24, 0),
            "summary": f"Visited {deal.get('contact') or 'the buyer'}: {note}",
        })
        summary.did("visit", deal, note, added=meeting.id)
        stage = deal.get("stage", "Lead")
        if number == 0 or rng.random() < 0.6:
            following = STAGES[STAGES.index(stage) + 1]
            pipeline.update(rtype, deal.id, {
                "stage": following, "probability": str(PROBABILITY[following]),
            })
            summary.did("stage", deal, f"{stage} -> {following}", "stage")
        if number == 0 or rng.random() < 0.3:
            old = Decimal(deal.get("value") or "10000")
            new = money(old * Decimal(rng.choice(("0.85", "0.9", "0.95"))))
            pipeline.update(rtype, deal.id, {"value": new})
            summary.did("value", deal, f"discount agreed, {money(old)} -> {new}", "value")
        if deal.get("stage") in OPEN_STAGES:
            step = rng.choice(NEXT_STEPS)
            when = (today + timedelta(days=rng.randint(1, 10))).isoformat()
            pipeline.update(rtype, deal.id, {"next_action": step, "next_action_date": when})
            summary.did("next step", deal, f"{step} by {when}", "next_action")
    seen = {d.id for d in visited}
    callable_deals = [d for d in deals if d.id not in seen]
    called = rng.sample(callable_deals, min(3, len(callable_deals)))
    for number, deal in enumerate(called):
        note = rng.choice(CALL_NOTES)
        call, _ = pipeline.add(activity, {
            "opportunity_id": deal.id, "kind": "call", "date": moment(today, 8, 10 * number),
            "summary": f"Called {deal.get('contact') or 'the buyer'}: {note}",
        })
        summary.did("call", deal, note, added=call.id)
    taken = {r.get("company") for r in pipeline.live(OPPORTUNITY)}
    company = rng.choice([c for c in NEW_COMPANIES if c not in taken] or [f"Lead {seed}"])
    lead, _ = pipeline.add(rtype, {
        **opportunity_values(rng, company, "Lead", today),
        "notes": "Met at the trade fair stand",
    })
    summary.did("new lead", lead, f"{lead.get('contact')}, {lead.get('phone')}", added=lead.id)
    seen |= {d.id for d in called}
    losable = [d for d in callable_deals if d.id not in seen] or callable_deals
    if losable:
        lost = rng.choice(losable)
        pipeline.delete(lost.id)
        summary.did("deleted", lost, "lost to a competitor")
    return summary


def office_day(
    pipeline: Pipeline,
    seed: int,
    *,
    contested: DayAction | None = None,
    today: date | None = None,
    registry: Registry | None = None,
) -> DaySummary:
    """The assistant's day on the desktop: new opportunities, a phone number corrected, and, when
    ``contested`` names a field the road changed, another value for that same field."""
    registry = registry or get_registry()
    rtype = registry.record_type(OPPORTUNITY)
    activity = registry.record_type(ACTIVITY)
    rng = random.Random(f"office-{seed}")
    today = today or date.today()
    summary = DaySummary("office", seed)
    taken = {r.get("company") for r in pipeline.live(OPPORTUNITY)}
    fresh = [c for c in reversed(NEW_COMPANIES) if c not in taken]
    for company in fresh[: rng.randint(2, 3)]:
        record, _ = pipeline.add(rtype, {
            **opportunity_values(rng, company, "Lead", today),
            "notes": "Enquiry from the web site",
        })
        summary.did("new", record, f"{record.get('contact')}, {record.get('value')}",
                    added=record.id)
    with_phone = [r for r in by_company(pipeline) if r.get("phone")
                  and (contested is None or r.id != contested.record_id)]
    if with_phone:
        fixed = rng.choice(with_phone)
        old = fixed.get("phone")
        new = phone_number(rng)
        pipeline.update(rtype, fixed.id, {"phone": new})
        note, _ = pipeline.add(activity, {
            "opportunity_id": fixed.id, "kind": "note", "date": moment(today, 11, 30),
            "summary": "Switchboard gave us the direct line",
        })
        summary.did("phone", fixed, f"corrected {old} -> {new}", "phone", added=note.id)
    target = pipeline.records.get(contested.record_id) if contested else None
    if contested is not None and target is not None and not target.deleted:
        changes = contested_change(target, contested.field, rng)
        pipeline.update(rtype, target.id, changes)
        shown = ", ".join(f"{k} {v}" for k, v in changes.items())
        summary.did("edit", target, f"{shown} (also changed on the road today)", contested.field)
    return summary


def contested_change(record: Record, name: str, rng: random.Random) -> dict[str, str | None]:
    """A value for field ``name`` of ``record`` that differs from any the road would pick."""
    if name == "value":
        old = Decimal(record.get("value") or "10000")
        return {"value": money(old * Decimal("1.05"))}  # the new price list: up, not down
    if name == "stage":
        stage = record.get("stage", "Lead")
        return {"stage": "Lost" if stage != "Lost" else "Lead"}
    return {name: f"{record.get(name)} (office)" if record.get(name) else "set by the office"}


# --- salesmgr emulator day ---------------------------------------------------------------------


@click.command("day")
@click.argument("device_file", type=DEVICE_FILE)
@click.option(
    "--seed", type=int, help="Play this day (default: a new random seed, printed to replay it)."
)
@click.option(
    "--visits",
    type=click.IntRange(min=0),
    default=DEFAULT_VISITS,
    show_default=True,
    help="Customers visited (at most the open deals).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def day_command(device_file: Path, seed: int | None, visits: int, as_json: bool) -> None:
    """Play a day on the road on the pipeline DEVICE_FILE and say what was done.

    Visits (a meeting logged, stages moved on, a discount agreed, the next step noted), calls
    logged, a new lead, a lost deal deleted.  The same --seed on the same file plays the same
    day.  The file may belong to a running emulator: it is replaced atomically, between syncs."""
    if not device_file.exists():
        raise PipelineFileError(
            device_file, "no such file: load the device first (salesmgr load DESKTOP --to URL)"
        )
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    with editing_pipeline(device_file) as pipeline:
        summary = road_day(pipeline, seed, visits=visits)
    if as_json:
        click.echo(json.dumps(summary.as_json(), indent=2))
        return
    click.echo(f"a day on the road (seed {seed}): {len(summary.actions)} changes")
    for line in summary.lines():
        click.echo(f"  {line}")
