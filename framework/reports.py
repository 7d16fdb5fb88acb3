"""What a salesperson asks of a pipeline every morning: what it is worth, what is due, find a deal.

A plain core module (no command line, no terminal) that the CLI and the web pages both call, so
a figure is computed in one place:

- ``forecast(pipeline, by="stage"|"month"|"owner", today=None) -> Forecast``: per group and
  currency, the number of deals, their value and their probability-weighted value; totals per
  currency (amounts in different currencies are never added together).  Lost deals are left
  out (``include_lost=True`` keeps them, weighted at their probability, 0 by default).
- ``agenda(pipeline, days=7, owner=None, today=None) -> list[AgendaItem]``: next actions that
  are overdue or due within ``days`` days of ``today``, oldest first.
- ``select(pipeline, search=None, stage=None, owner=None, due_before=None, sort=None)
  -> list[Record]``: the live opportunities that match, sorted.

Amounts are exact `Decimal`s: a weighted value is ``value * probability / 100`` without
rounding, so totals are exact; whoever shows them rounds (``money_2dp``).  A deal without a
probability is weighted by its stage's usual probability (``STAGE_PROBABILITY``), the way CRMs
default it; a deal without a value counts with value 0.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from operator import methodcaller
from typing import Any, Literal, Protocol, TypedDict, Unpack

from salesmgr.errors import ValidationError
from salesmgr.model.pipeline import Pipeline, Record
from salesmgr.model.record_table import LiveColumns

OPPORTUNITY = "opportunity"
GroupBy = Literal["stage", "month", "owner"]
GROUPINGS: tuple[GroupBy, ...] = ("stage", "month", "owner")

# The probability a deal is weighted by when it has none of its own (the usual CRM defaults).
STAGE_PROBABILITY: Mapping[str, int] = {
    "Lead": 10,
    "Qualified": 25,
    "Proposal": 50,
    "Negotiation": 75,
    "Won": 100,
    "Lost": 0,
}
LOST = "Lost"
CENT = Decimal("0.01")


def money_2dp(amount: Decimal) -> Decimal:
    """An amount rounded to cents for display (half up, as people round money)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def amount_in(text: str | None) -> Decimal:
    try:
        return Decimal(text or "0")
    except InvalidOperation:  # written by a foreign version: it is worth nothing we can add
        return Decimal(0)


def amount_of(record: Record) -> Decimal:
    return amount_in(record.values.get("value"))


def probability_of(record: Record) -> int:
    """The deal's own probability, else its stage's usual one, else 0."""
    text = record.values.get("probability")
    if text:
        try:
            return int(text)
        except ValueError:
            pass
    return STAGE_PROBABILITY.get(record.values.get("stage", ""), 0)


def currency_of(record: Record, pipeline: Pipeline) -> str:
    return record.values.get("currency") or pipeline.currency


def value_totals(pipeline: Pipeline, records: Iterable[Record]) -> dict[str, Decimal]:
    """The summed value of ``records`` per currency, by currency code."""
    totals: dict[str, Decimal] = {}
    for record in records:
        currency = currency_of(record, pipeline)
        totals[currency] = totals.get(currency, Decimal(0)) + amount_of(record)
    return dict(sorted(totals.items()))


# -- forecast ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastRow:
    """One group in one currency.  ``group`` is "" for deals without a close date or owner."""

    group: str
    currency: str
    count: int
    value: Decimal
    weighted: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group or None,
            "currency": self.currency,
            "count": self.count,
            "value": f"{money_2dp(self.value):f}",
            "weighted": f"{money_2dp(self.weighted):f}",
        }


@dataclass(frozen=True)
class Forecast:
    """Rows in the grouping's natural order (stages as declared, months in time, owners by name;
    the empty group last), then a total row per currency in ``totals`` (by currency code)."""

    by: GroupBy
    rows: list[ForecastRow]
    totals: list[ForecastRow] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "rows": [row.as_json() for row in self.rows],
            "totals": [{k: v for k, v in t.as_json().items() if k != "group"}
                       for t in self.totals],
        }


def stage_order(stages: Iterable[str]) -> Callable[[str], tuple[int, str]]:
    """Sort key putting stages in their declared order, unknown ones after, by name."""
    rank = {name: i for i, name in enumerate(stages)}
    return lambda name: (rank.get(name, len(rank)), name.casefold())


def declared_stages() -> tuple[str, ...]:
    """The stages the opportunity record type declares, in order (its stage field's choices)."""
    from salesmgr.plugin.manager import get_registry

    spec = get_registry().record_type(OPPORTUNITY).by_name.get("stage")
    return tuple(getattr(spec.kind, "choices", ())) if spec is not None else ()


def group_of(record: Record, by: GroupBy) -> str:
    if by == "stage":
        return record.values.get("stage", "")
    if by == "month":
        return record.values.get("close_date", "")[:7]  # YYYY-MM
    return record.values.get("owner", "")


@dataclass
class Sum:
    """A running count, value and weighted value."""

    count: int = 0
    value: Decimal = Decimal(0)
    weighted: Decimal = Decimal(0)

    def add(self, count: int, value: Decimal, weighted: Decimal) -> None:
        self.count += count
        self.value += value
        self.weighted += weighted


def group_order(by: GroupBy) -> Callable[[tuple[str, str]], Any]:
    """Sort key of a (group, currency) pair: the grouping's natural order, the empty group last."""
    if by == "stage":
        order = stage_order(declared_stages())
        return lambda key: (key[0] == "", order(key[0]), key[1])
    return lambda key: (key[0] == "", key[0].casefold(), key[0], key[1])


def forecast(
    pipeline: Pipeline,
    by: GroupBy = "stage",
    today: date | None = None,
    *,
    include_lost: bool = False,
) -> Forecast:
    """Value and weighted value of the live opportunities, per group of ``by`` and currency.

    ``today`` is accepted for symmetry with `agenda` and for callers that pin the clock; the
    figures do not depend on it."""
    if by not in GROUPINGS:
        raise ValidationError(f"cannot group a forecast by {by!r} (one of {', '.join(GROUPINGS)})")
    # Summed per probability first, then weighted once per probability: the same figures as
    # weighting each deal (sums and products of amounts are exact within Decimal's 28 digits),
    # without a multiplication and a division per deal.
    by_probability: dict[tuple[str, str, int], Sum] = {}
    for record in pipeline.live(OPPORTUNITY):
        if not include_lost and record.values.get("stage") == LOST:
            continue
        key = (group_of(record, by), currency_of(record, pipeline), probability_of(record))
        found = by_probability.get(key)
        if found is None:
            found = by_probability[key] = Sum()
        found.count += 1
        found.value += amount_of(record)
    sums: dict[tuple[str, str], Sum] = {}
    for (group, currency, probability), part in by_probability.items():
        sums.setdefault((group, currency), Sum()).add(
            part.count, part.value, part.value * probability / 100)
    order = group_order(by)
    rows = [ForecastRow(group, currency, s.count, s.value, s.weighted)
            for (group, currency), s in sorted(sums.items(), key=lambda i: order(i[0]))]
    totals: dict[str, Sum] = {}
    for row in rows:
        totals.setdefault(row.currency, Sum()).add(row.count, row.value, row.weighted)
    return Forecast(
        by,
        rows,
        [ForecastRow("", c, s.count, s.value, s.weighted) for c, s in sorted(totals.items())],
    )


# -- agenda -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgendaItem:
    """A next action that is due: ``overdue`` when its date is before today."""

    record_id: str
    company: str
    title: str
    next_action: str
    due: date
    overdue: bool
    owner: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.record_id,
            "company": self.company,
            "title": self.title,
            "next_action": self.next_action,
            "due": self.due.isoformat(),
            "overdue": self.overdue,
            "owner": self.owner,
        }


def day_of(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:  # a foreign version's value: not a date we can schedule
        return None


def due_date(record: Record) -> date | None:
    return day_of(record.values.get("next_action_date"))


def owner_matches(text: str, owner: str) -> bool:
    return text.casefold() == owner.casefold()


def same_owner(record: Record, owner: str | None) -> bool:
    return owner is None or owner_matches(record.values.get("owner", ""), owner)


def agenda(
    pipeline: Pipeline, days: int = 7, owner: str | None = None, today: date | None = None
) -> list[AgendaItem]:
    """Next actions of live opportunities, whatever their stage, that are overdue or due
    within ``days`` days after ``today`` (inclusive), oldest first (then by company)."""
    if days < 0:
        raise ValidationError(f"--days must be 0 or more, not {days}")
    today = today or date.today()
    horizon = today + timedelta(days=days)
    items = []
    for record in pipeline.live(OPPORTUNITY):
        due = due_date(record)
        if due is None or due > horizon or not same_owner(record, owner):
            continue
        values = record.values
        items.append(
            AgendaItem(
                record.id,
                values.get("company", ""),
                values.get("title", ""),
                values.get("next_action", ""),
                due,
                due < today,
                values.get("owner", ""),
            )
        )
    items.sort(key=lambda i: (i.due, i.company.casefold(), i.title.casefold(), i.record_id))
    return items


# -- select -----------------------------------------------------------------------------------

SEARCHED = ("company", "contact", "title", "notes")
# Sort keys and how each compares; "-KEY" sorts descending.  Empty values sort last either way.
SORT_KEYS = (
    "company", "title", "stage", "value", "probability", "close_date", "next_action_date",
    "owner", "created",
)


def fold(text: str) -> str:
    """``Müller`` -> ``muller``, ``STRASSE`` and ``Straße`` alike: accents and case ignored."""
    if text.isascii():
        return text.casefold()
    return unicodedata.normalize("NFKD", text.casefold()).translate(WITHOUT_ACCENTS)


class AccentsDropped(dict[int, int | None]):
    """A `str.translate` table dropping combining characters (accents and the like: those with
    ``unicodedata.combining(c) != 0``) and keeping the rest; each character is looked up once,
    then answered by the dict in C."""

    def __missing__(self, code: int) -> int | None:
        kept = None if unicodedata.combining(chr(code)) else code
        self[code] = kept
        return kept


WITHOUT_ACCENTS = AccentsDropped()


class Rows(Protocol):
    """Records as columns (`LiveColumns`, or `RecordRows` over a list of records): what
    `select` filters and sorts, so a listing of every record needs no `Record` objects."""

    ids: list[str]

    def column(self, name: str) -> Sequence[str | None]: ...


class RecordRows:
    """`Rows` over a list of records."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.ids = [record.id for record in records]
        self.values = [record.values for record in records]

    def column(self, name: str) -> list[str | None]:
        return list(map(methodcaller("get", name), self.values))


def text_matches(texts: Iterable[str], words: list[str]) -> bool:
    """Whether every (folded) word is in one of ``texts``."""
    haystack = fold("\n".join(texts))
    return all(word in haystack for word in words)


def matches_search(record: Record, words: list[str]) -> bool:
    return text_matches((record.values.get(name, "") for name in SEARCHED), words)


def search_texts(rows: Rows) -> list[str]:
    """Per row, what `text_matches` looks in (the searched fields, joined and folded), made
    once for many searches (`OpportunityIndex`)."""
    searched = [rows.column(name) for name in SEARCHED]
    return [fold("\n".join(texts[i] or "" for texts in searched)) for i in range(len(rows.ids))]


def sort_value_of(text: str, key: str) -> Any:
    """How a value of the sort key ``key`` compares."""
    if key == "value":
        return amount_in(text)
    if key == "probability":
        return int(text) if text.isdigit() else 0
    if key == "stage":
        return stage_order(declared_stages())(text)
    return fold(text)


def folded(texts: Sequence[str | None]) -> list[str]:
    """`fold` of each text ("" for none), each distinct text folded once."""
    memo = {text: fold(text or "") for text in set(texts)}
    return list(map(memo.__getitem__, texts))


def sorted_order(rows: Rows, chosen: Iterable[int], sort: str | None) -> list[int]:
    """The rows ``chosen``, by company then title (the default), or by ``sort`` (``-`` in
    front: descending), then company and title; rows without the sort field come last."""
    if sort not in (None, "company", ""):
        descending = sort.startswith("-")
        key = sort.removeprefix("-").replace("-", "_")
        if key not in SORT_KEYS:
            raise ValidationError(f"cannot sort by {sort!r} (one of {', '.join(SORT_KEYS)}; "
                                  "put - in front to sort descending)")
    # (company, title, id) as three stable sorts, least significant first: no key tuples.
    order = sorted(chosen, key=rows.ids.__getitem__)
    order.sort(key=folded(rows.column("title")).__getitem__)
    order.sort(key=folded(rows.column("company")).__getitem__)
    if sort in (None, "company", ""):
        return order
    texts = rows.column(key)
    present = [i for i in order if texts[i]]
    missing = [i for i in order if not texts[i]]
    memo = {text: sort_value_of(text or "", key) for text in set(map(texts.__getitem__, present))}
    present.sort(key=lambda i: memo[texts[i]], reverse=descending)
    return present + missing


def sorted_records(records: list[Record], sort: str | None) -> list[Record]:
    """``records`` in `sorted_order`."""
    return [records[i] for i in sorted_order(RecordRows(records), range(len(records)), sort)]


class Filters(TypedDict, total=False):
    """What `select` and `select_columns` filter and sort by (see `select`)."""

    search: str | None
    stage: str | None
    owner: str | None
    due_before: date | None
    sort: str | None


def matching_rows(
    rows: Rows, haystacks: Sequence[str] | None = None, **filters: Unpack[Filters]
) -> list[int]:
    """The rows that match every filter given (see `select`), in the rows' order.
    ``haystacks``, when given, is `search_texts` of ``rows``, made before."""
    search, stage, owner = filters.get("search"), filters.get("stage"), filters.get("owner")
    due_before = filters.get("due_before")
    chosen: Iterable[int] = range(len(rows.ids))
    if stage is not None:
        wanted, stages = stage.casefold(), rows.column("stage")
        chosen = [i for i in chosen if (stages[i] or "").casefold() == wanted]
    if owner is not None:
        owners = rows.column("owner")
        chosen = [i for i in chosen if owner_matches(owners[i] or "", owner)]
    if due_before is not None:
        dues = rows.column("next_action_date")
        chosen = [i for i in chosen if (day := day_of(dues[i])) is not None and day < due_before]
    words = fold(search).split() if search else []
    if words and haystacks is not None:
        chosen = [i for i in chosen if all(word in haystacks[i] for word in words)]
    elif words:
        searched = [rows.column(name) for name in SEARCHED]
        chosen = [i for i in chosen
                  if text_matches((texts[i] or "" for texts in searched), words)]
    return list(chosen)


def chosen_rows(rows: Rows, **filters: Unpack[Filters]) -> list[int]:
    """The rows that match every filter given (see `select`), in `sorted_order`."""
    return sorted_order(rows, matching_rows(rows, **filters), filters.get("sort"))


def select(
    pipeline: Pipeline,
    search: str | None = None,
    stage: str | None = None,
    owner: str | None = None,
    due_before: date | None = None,
    sort: str | None = None,
) -> list[Record]:
    """The live opportunities that match every filter given:

    - ``search``: each word appears in the company, contact, title or notes (accents and case
      ignored: ``muller`` finds ``Müller``);
    - ``stage``: the stage, case ignored; ``owner``: the owner, case ignored;
    - ``due_before``: the next action is due before this day (not on it).

    `OpportunityIndex` answers the same question many times over one version of a pipeline.
    """
    records = list(pipeline.live(OPPORTUNITY))
    order = chosen_rows(RecordRows(records), search=search, stage=stage, owner=owner,
                        due_before=due_before, sort=sort)
    return [records[i] for i in order]


def select_columns(
    pipeline: Pipeline, **filters: Unpack[Filters]
) -> tuple[LiveColumns, list[int]]:
    """`select` as columns, for listing every record of a big pipeline without making a
    `Record` of each: the live opportunities as `LiveColumns`, and the rows `select` picks, in
    its order (a caller permutes what it made of each row once, not every column)."""
    rows = pipeline.live_columns(OPPORTUNITY)
    order = chosen_rows(rows, **filters)
    if len(order) * 2 < len(rows):  # a filter left few: only those rows are worth keeping
        return rows.take(order), list(range(len(order)))
    return rows, order


class OpportunityIndex:
    """The live opportunities of one version of a pipeline, ready to be searched, filtered and
    sorted again and again, as `select` does once: a server (``salesmgr web``) keeps one per
    version of the pipeline for every page until the pipeline changes.

    Each order is sorted once, when first asked; every record's search text is folded once,
    when a search first needs it; a query's answer is a list of indexes into ``records``, so a
    page of 50 out of 100,000 makes no list of records.  Safe to share between threads: what it
    remembers is only ever replaced by an equal value."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.records: list[Record] = list(pipeline.live(OPPORTUNITY))
        self.rows = RecordRows(self.records)
        self._texts: list[str] | None = None
        self._orders: dict[str, list[int]] = {}

    def order(self, sort: str | None) -> list[int]:
        name = sort or "company"
        found = self._orders.get(name)
        if found is None:
            found = self._orders[name] = sorted_order(self.rows, range(len(self.records)), sort)
        return found

    @property
    def texts(self) -> list[str]:
        """`search_texts` of the records, made on first need."""
        found = self._texts
        if found is None:
            found = self._texts = search_texts(self.rows)
        return found

    def query(self, **filters: Unpack[Filters]) -> list[int]:
        """The indexes of the records that match (see `select`), in its order."""
        sort = filters.get("sort")
        if all(filters.get(name) is None for name in ("search", "stage", "owner", "due_before")):
            return self.order(sort)
        chosen = matching_rows(self.rows, self.texts if filters.get("search") else None,
                               **filters)
        known = self._orders.get(sort or "company")
        if known is not None:
            keep = set(chosen)
            return [i for i in known if i in keep]
        return sorted_order(self.rows, chosen, sort)
