"""Import a CSV table into a pipeline: each row added, updated, left as it is, or refused.

`import_table` works on the pipeline in memory and says per row what it did; the caller saves
only when no row was refused (all or nothing) and this is not a dry run.  Rows are matched to
records by salesmgr's ``id`` column or by a CRM's record id (``external_id``); with
``update=True`` a matched row changes only the fields whose value differs, through
`Pipeline.update`, so each change is an ordinary edit that syncs and merges like any other, and
importing the same file twice changes nothing the second time.

Numbers and dates are read in the given locale (`salesmgr.model.localized`); a currency sign in
an amount (``$12,000.00``) sets the currency, and must agree with a currency column.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from salesmgr.errors import UnknownRecordError, ValidationError
from salesmgr.exchange.profiles import (
    EXTERNAL_ID,
    RECORD_COLUMN,
    ImportProfile,
    column_key,
)
from salesmgr.exchange.tables import Row, Table
from salesmgr.model.fields import Currency, Money, RecordId, RecordType
from salesmgr.model.localized import parse_percent, split_currency
from salesmgr.model.pipeline import DELETED, Pipeline, Record

Action = Literal["add", "update", "unchanged", "refused"]
ID_COLUMN = "id"


@dataclass
class RowOutcome:
    """What happened to one data row."""

    row: Row
    action: Action
    kind: str = ""
    record_id: str | None = None
    label: str = ""
    changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # old, new
    problem: str | None = None
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for a person: ``row 3: update 1a2b3c4d (Acme: Fleet): value 1.00 -> 2.00``."""
        if self.action == "refused":
            return f"{self.row.where()}: refused: {self.problem}"
        short = (self.record_id or "")[:8]
        what = f"{self.row.where()}: {self.action} {self.kind} {short} ({self.label})"
        if self.changes:
            what += ": " + ", ".join(
                f"{name} {old or '(empty)'} -> {new or '(empty)'}"
                for name, (old, new) in self.changes.items()
            )
        return what


@dataclass
class ImportResult:
    outcomes: list[RowOutcome]
    profile: str  # "salesmgr" for salesmgr's own columns
    ignored_columns: list[str] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(1 for o in self.outcomes if o.action == action)

    @property
    def refused(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.action == "refused"]

    @property
    def changed(self) -> bool:
        return any(o.action in ("add", "update") for o in self.outcomes)


@dataclass(frozen=True)
class ColumnPlan:
    """Which field each column fills (None: ignored) and where the special columns are."""

    fields: list[str | None]
    id_at: int | None
    record_at: int | None
    status_at: int | None
    ignored: list[str]


def plan_columns(
    table: Table, profile: ImportProfile | None, types: Mapping[str, RecordType]
) -> ColumnPlan:
    """Map the header onto fields; salesmgr's own columns must all be known (a typo is an
    error), a CRM's columns that the profile does not name are ignored and listed."""
    keys = [column_key(h) for h in table.header]
    known = {name for rtype in types.values() for name in rtype.by_name}
    if profile is None:
        unknown = [h for h, k in zip(table.header, keys, strict=True)
                   if k not in known and k not in (ID_COLUMN, RECORD_COLUMN)]
        if unknown:
            raise ValidationError(
                f"{table.path}: unknown column{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(u) for u in unknown)} (known: id, "
                f"{', '.join(types['opportunity'].by_name)}; for another CRM's export give "
                "--profile or --mapping)"
            )
        fields: list[str | None] = [k if k in known else None for k in keys]
        ignored: list[str] = []
        status_at = None
    else:
        fields = [profile.field_for(h) for h in table.header]
        ignored = [h for h, f in zip(table.header, fields, strict=True)
                   if f is None and h.strip() and not same_column(h, profile.status_column)]
        status_at = next((i for i, h in enumerate(table.header)
                          if same_column(h, profile.status_column)), None)
    named = [f for f in fields if f is not None]
    twice = sorted({f for f in named if named.count(f) > 1})
    if twice:
        raise ValidationError(f"{table.path}: more than one column gives "
                              f"{', '.join(map(repr, twice))}")
    id_at = keys.index(ID_COLUMN) if profile is None and ID_COLUMN in keys else None
    record_at = keys.index(RECORD_COLUMN) if profile is None and RECORD_COLUMN in keys else None
    if record_at is None:
        opportunity = types["opportunity"]
        missing = [f.name for f in opportunity.fields
                   if f.required and f.default is None and f.name not in named]
        if missing:
            raise ValidationError(f"{table.path}: no column for {', '.join(map(repr, missing))} "
                                  "(required)")
    return ColumnPlan(fields, id_at, record_at, status_at, ignored)


def same_column(header: str, name: str | None) -> bool:
    return name is not None and column_key(header) == column_key(name)


def when_deleted(record: Record) -> str:
    moment = datetime.fromtimestamp(record.dot_of(DELETED).at / 1000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class RowRefused(Exception):
    """A row cannot be imported; the message says why (caught per row, never escapes)."""


class Importer:
    """One import: the pipeline, how to read the table, and what was matched so far."""

    def __init__(
        self,
        pipeline: Pipeline,
        types: Mapping[str, RecordType],
        profile: ImportProfile | None,
        locale: str | None,
        update: bool,
    ) -> None:
        self.pipeline = pipeline
        self.types = types
        self.profile = profile
        self.locale = locale
        self.update = update
        self.seen: dict[str, int] = {}  # id or external id -> the row it was first on
        self.by_external: dict[str, Record] = {}
        self.by_title: dict[str, dict[str, list[Record]]] = {}  # built when first needed
        for record in pipeline.records.values():
            external = record.values.get(EXTERNAL_ID)
            if external:
                self.by_external.setdefault(external, record)

    # -- reading one row -----------------------------------------------------------------
    def row_values(self, plan: ColumnPlan, cells: list[str]) -> tuple[str, dict[str, str]]:
        kind = "opportunity"
        if plan.record_at is not None and plan.record_at < len(cells):
            kind = cells[plan.record_at].strip().casefold() or kind
            if kind not in self.types:
                raise RowRefused(f"record {cells[plan.record_at]!r} is not one of "
                                 f"{', '.join(self.types)}")
        rtype = self.types[kind]
        values = {}
        for name, cell in zip(plan.fields, cells, strict=False):
            if name is not None and name in rtype.by_name:
                values[name] = cell
        if self.profile is not None:
            self.read_profile_forms(values, plan, cells)
        self.read_currency_signs(rtype, values)
        return kind, values

    def read_profile_forms(
        self, values: dict[str, str], plan: ColumnPlan, cells: list[str]
    ) -> None:
        profile = self.profile
        assert profile is not None
        if values.get(EXTERNAL_ID, "").strip():
            values[EXTERNAL_ID] = f"{profile.name}:{values[EXTERNAL_ID].strip()}"
        stage = values.get("stage", "").strip()
        if stage:
            ours = profile.stage_for(stage)
            if ours is None and stage.casefold() not in {s.casefold() for s in self.stages()}:
                raise RowRefused(f"stage {stage!r} is not a {profile.name} stage salesmgr knows "
                                 "(map it in a --mapping file)")
            values["stage"] = ours or stage
        if plan.status_at is not None and plan.status_at < len(cells):
            status = profile.statuses.get(cells[plan.status_at].strip().casefold())
            if status is not None:
                values["stage"] = status
        probability = values.get("probability", "").strip()
        if probability:
            try:
                percent = parse_percent(probability, self.locale,
                                        fraction=profile.probability == "fraction")
            except ValueError as problem:
                raise RowRefused(f"probability {problem}") from None
            if percent != percent.to_integral_value():
                raise RowRefused(f"probability {probability!r} is not a whole percentage")
            values["probability"] = str(int(percent))

    def stages(self) -> tuple[str, ...]:
        spec = self.types["opportunity"].by_name.get("stage")
        return tuple(getattr(spec.kind, "choices", ())) if spec is not None else ()

    def read_currency_signs(self, rtype: RecordType, values: dict[str, str]) -> None:
        currency_field = next((f.name for f in rtype.fields if isinstance(f.kind, Currency)), None)
        for spec in rtype.fields:
            text = values.get(spec.name, "")
            if not isinstance(spec.kind, Money) or not text.strip():
                continue
            try:
                number, code = split_currency(text, self.locale)
            except ValueError as problem:
                raise RowRefused(f"{spec.name} {problem}") from None
            values[spec.name] = number
            if code is None or currency_field is None:
                continue
            given = values.get(currency_field, "").strip().upper()
            if given and given != code:
                raise RowRefused(f"{spec.name} {text!r} is in {code} but {currency_field} "
                                 f"says {given}")
            values[currency_field] = code

    # -- matching and applying -------------------------------------------------------------
    def existing(self, kind: str, record_id: str | None, external: str | None) -> Record | None:
        if record_id is not None:
            return self.pipeline.records.get(record_id)
        if external:
            return self.by_external.get(external)
        return None

    def check_repeated(self, row: Row, record_id: str | None, external: str | None) -> None:
        for key in (record_id, external):
            if not key:
                continue
            first = self.seen.setdefault(key, row.number)
            if first != row.number:
                raise RowRefused(f"id {key} is repeated on rows {first} and {row.number}")

    def apply(self, row: Row, plan: ColumnPlan) -> RowOutcome:
        cells = row.cells
        kind, raw = self.row_values(plan, cells)
        rtype = self.types[kind]
        record_id = None
        if plan.id_at is not None and plan.id_at < len(cells) and cells[plan.id_at].strip():
            try:
                record_id = RecordId().normalize(cells[plan.id_at])
            except ValueError as problem:
                raise RowRefused(f"id {problem}") from None
        external = raw.get(EXTERNAL_ID, "").strip() or None
        self.check_repeated(row, record_id, external)
        clean, warnings = rtype.normalize(dict(raw), locale=self.locale)
        label = self.label(rtype, clean)
        record = self.existing(kind, record_id, external)
        if record is None and record_id is None and external is None and self.update:
            twin = self.twin(rtype, clean)
            if twin is not None:  # added from this very row by an earlier import of the file
                return RowOutcome(row, "unchanged", kind, twin.id, label)
        if record is None:
            if kind == "activity":
                self.check_parent(clean)
            added, _ = self.pipeline.add(
                rtype, {k: v for k, v in clean.items() if v is not None}, record_id=record_id
            )
            if added.values.get(EXTERNAL_ID):
                self.by_external.setdefault(added.values[EXTERNAL_ID], added)
            return RowOutcome(row, "add", kind, added.id, label, warnings=warnings)
        which = f"id {record_id}" if record_id else f"external id {external}"
        if record.kind != kind:
            raise RowRefused(f"{which} is a{'n' if record.kind[0] in 'aeiou' else ''} "
                             f"{record.kind}, not a{'n' if kind[0] in 'aeiou' else ''} {kind}")
        if record.deleted:
            raise RowRefused(f"{which} was deleted on {when_deleted(record)}; an import does "
                             "not bring it back")
        if not self.update:
            raise RowRefused(f"{which} is already in the pipeline "
                             f"({self.label(rtype, record.values)}); add --update to change it "
                             "from this file")
        changes = {k: (record.values.get(k), v) for k, v in clean.items()
                   if record.values.get(k) != v}
        if not changes:
            return RowOutcome(row, "unchanged", kind, record.id, label)
        if kind == "activity":
            self.check_parent(clean)
        self.pipeline.update(rtype, record.id, {k: new or "" for k, (_, new) in changes.items()})
        return RowOutcome(row, "update", kind, record.id, label, changes, warnings=warnings)

    def twin(self, rtype: RecordType, clean: Mapping[str, str | None]) -> Record | None:
        """A live record of this type that already has every value the row gives."""
        given = {k: v for k, v in clean.items() if v is not None}
        key = rtype.title_field or ""
        if key not in self.by_title:
            self.by_title[key] = {}
            for record in self.pipeline.live(rtype.name):
                self.by_title[key].setdefault(record.values.get(key, ""), []).append(record)
        for record in self.by_title[key].get(given.get(key, ""), []):
            if record.kind == rtype.name and not record.deleted and all(
                record.values.get(k) == v for k, v in given.items()
            ):
                return record
        return None

    def check_parent(self, values: Mapping[str, str | None]) -> None:
        parent = values.get("opportunity_id")
        if parent:
            try:
                self.pipeline.find(parent, "opportunity")
            except UnknownRecordError as problem:
                raise RowRefused(f"opportunity_id: {problem}") from None

    def label(self, rtype: RecordType, values: Mapping[str, str | None]) -> str:
        if rtype.name == "opportunity":
            return f"{values.get('company') or ''}: {values.get('title') or ''}"
        return str(values.get(rtype.title_field or "", "") or rtype.name)


def import_rows(importer: Importer, plan: ColumnPlan, table: Table) -> Iterator[RowOutcome]:
    width = len(table.header)
    for row in table.rows:
        if not any(cell.strip() for cell in row.cells):
            continue  # spreadsheets leave blank rows at the end
        if len(row.cells) > width:
            yield RowOutcome(row, "refused",
                             problem=f"{len(row.cells)} values but {width} columns")
            continue
        try:
            yield importer.apply(row, plan)
        except (RowRefused, ValidationError, UnknownRecordError) as problem:
            yield RowOutcome(row, "refused", problem=str(problem))


def import_table(
    pipeline: Pipeline,
    table: Table,
    types: Mapping[str, RecordType],
    *,
    profile: ImportProfile | None = None,
    locale: str | None = None,
    update: bool = False,
) -> ImportResult:
    """Import ``table`` into ``pipeline`` in memory (see the module's docstring).  ``types``
    are the record types by name (``opportunity``, and ``activity`` for rows of activities).
    Raises ValidationError when the header itself cannot be used."""
    plan = plan_columns(table, profile, types)
    importer = Importer(pipeline, types, profile, locale, update)
    outcomes = list(import_rows(importer, plan, table))
    return ImportResult(outcomes, profile.name if profile else "salesmgr", plan.ignored)
