"""Field kinds and record types: what a record may hold and how input is checked.

Every value is kept in memory and on disk as its canonical text (``"1234.50"``, ``"2026-11-28"``,
``"40"``), so a merge compares strings, a money amount is never a float, and a field this version
does not know is carried along untouched.

What a person types is read with `FieldKind.parse` in the pipeline's locale (or one given with
``--locale``): ``12.000,00`` in ``de_DE`` and ``12,000.00`` in ``en_US`` are both ``12000.00``, and
text that could be read two ways is refused (`salesmgr.model.localized`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from salesmgr.errors import ValidationError
from salesmgr.model.localized import parse_amount, parse_day, parse_percent

# Current ISO 4217 codes (active list), so "EUR" passes and "EUX" does not.
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
    BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
    GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW
    KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
    NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
    SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS
    VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG""".split()
)

EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class FieldKind:
    """How one kind of value is checked on input and shown in JSON."""

    name = "text"

    def normalize(self, raw: str) -> str:
        """Return the canonical text of ``raw`` or raise ``ValueError`` saying what is wrong."""
        return raw

    def parse(self, raw: str, locale: str | None) -> str:
        """`normalize`, reading numbers and dates as written in ``locale`` (None: only forms
        that cannot be misread).  Kinds that hold no numbers or dates need not override it."""
        return self.normalize(raw)

    def warning(self, value: str) -> str | None:
        """A problem worth telling the user about that does not stop the value being kept."""
        return None

    def to_json(self, value: str) -> Any:
        return value


class Text(FieldKind):
    name = "text"

    def __init__(self, max_length: int = 1_000_000) -> None:
        self.max_length = max_length

    def normalize(self, raw: str) -> str:
        if len(raw) > self.max_length:
            raise ValueError(f"is longer than {self.max_length} characters")
        return raw


class Choice(FieldKind):
    """One of a fixed list, matched case-insensitively and stored as declared."""

    name = "choice"

    def __init__(self, choices: Iterable[str]) -> None:
        self.choices = tuple(choices)
        self._by_fold = {c.casefold(): c for c in self.choices}

    def normalize(self, raw: str) -> str:
        try:
            return self._by_fold[raw.strip().casefold()]
        except KeyError:
            raise ValueError(f"{raw!r} is not one of {', '.join(self.choices)}") from None


class Money(FieldKind):
    """A non-negative amount with at most two decimals, kept as exact text with two decimals."""

    name = "money"
    LIMIT = Decimal("1e15")

    def normalize(self, raw: str) -> str:
        return self.parse(raw, None)

    def parse(self, raw: str, locale: str | None) -> str:
        amount = parse_amount(raw, locale)
        if amount < 0:
            raise ValueError(f"{raw!r} is negative")
        if amount >= self.LIMIT:
            raise ValueError(f"{raw!r} is too large")
        return f"{amount.quantize(Decimal('0.01')):f}"


class Currency(FieldKind):
    name = "currency"

    def normalize(self, raw: str) -> str:
        code = raw.strip().upper()
        if code not in ISO_4217:
            raise ValueError(f"{raw!r} is not an ISO 4217 currency code")
        return code


class Integer(FieldKind):
    name = "integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def normalize(self, raw: str) -> str:
        try:
            number = int(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not self.low <= number <= self.high:
            raise ValueError(f"{number} is not between {self.low} and {self.high}")
        return str(number)

    def to_json(self, value: str) -> Any:
        return int(value)


class Percent(Integer):
    """A whole percentage: ``60``, ``60%``, ``60 %`` (the locale's percent sign)."""

    name = "percent"

    def normalize(self, raw: str) -> str:
        return self.parse(raw, None)

    def parse(self, raw: str, locale: str | None) -> str:
        value = parse_percent(raw, locale)
        if value != value.to_integral_value():
            raise ValueError(f"{raw!r} is not a whole percentage (write 60 or 60%)")
        return super().normalize(str(int(value)))


class Date(FieldKind):
    name = "date"

    def normalize(self, raw: str) -> str:
        return self.parse(raw, None)

    def parse(self, raw: str, locale: str | None) -> str:
        return parse_day(raw, locale).isoformat()


class Timestamp(FieldKind):
    name = "timestamp"

    def normalize(self, raw: str) -> str:
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a date and time (ISO 8601)") from None
        return moment.isoformat(timespec="seconds")


class DateOrTimestamp(FieldKind):
    """A day, or a moment in that day: an activity may be logged with or without its time."""

    name = "date-or-timestamp"

    def normalize(self, raw: str) -> str:
        text = raw.strip()
        try:
            if len(text) <= 10:
                return date.fromisoformat(text).isoformat()
            return datetime.fromisoformat(text).isoformat(timespec="seconds")
        except ValueError:
            raise ValueError(f"{raw!r} is not a date (YYYY-MM-DD or ISO 8601)") from None


class Email(FieldKind):
    """Any text is kept; an odd shape is only a warning (people type what they have)."""

    name = "email"

    def normalize(self, raw: str) -> str:
        return raw.strip()

    def warning(self, value: str) -> str | None:
        if value and not EMAIL_SHAPE.match(value):
            return f"{value!r} does not look like an e-mail address"
        return None


class RecordId(FieldKind):
    """The id of another record (a UUID)."""

    name = "record-id"

    def normalize(self, raw: str) -> str:
        try:
            return str(uuid.UUID(raw.strip()))
        except ValueError:
            raise ValueError(f"{raw!r} is not a record id") from None


@dataclass(frozen=True)
class Field:
    """One field of a record type."""

    name: str
    kind: FieldKind = field(default_factory=Text)
    required: bool = False
    help: str = ""
    # Filled in when a new record leaves it empty; gets the pipeline's header values.
    default: Callable[[Mapping[str, str]], str | None] | None = None
    # Stamped by salesmgr, not typed by the user (when the record was made): two sides that made
    # the same record at different moments do not disagree about it; a merge keeps the earlier.
    automatic: bool = False


@dataclass
class RecordType:
    """A kind of record (``opportunity``, ``activity``...) and its fields, in display order."""

    name: str
    fields: list[Field]
    help: str = ""
    # Field shown when a record of this type is named in a report.
    title_field: str | None = None
    # Fields whose text is merged line by line (three-way) instead of as a whole.
    text_merge_fields: frozenset[str] = frozenset()
    # Fields that together name the real-world thing (an opportunity: company and title): two
    # records of unrelated pipelines alike in all of them are flagged as likely duplicates.
    identity_fields: tuple[str, ...] = ()
    # True for the type the merge writes its conflict log in: its records are bookkeeping, not
    # the user's data (never counted as changes, never themselves in conflict).
    conflict_log: bool = False

    def __post_init__(self) -> None:
        self.by_name = {f.name: f for f in self.fields}

    def add_field(self, new: Field) -> None:
        if new.name in self.by_name:
            raise ValueError(f"record type {self.name!r} already has a field {new.name!r}")
        self.fields.append(new)
        self.by_name[new.name] = new

    def normalize(
        self,
        changes: Mapping[str, str | None],
        *,
        strict_names: bool = True,
        locale: str | None = None,
    ) -> tuple[dict[str, str | None], list[str]]:
        """Check ``changes`` (field -> raw text, None or "" to clear) and return them canonical,
        with warnings; numbers and dates are read as written in ``locale``.  Raises
        ValidationError naming the first bad field."""
        clean: dict[str, str | None] = {}
        warnings: list[str] = []
        for name, raw in changes.items():
            spec = self.by_name.get(name)
            if spec is None:
                if strict_names:
                    raise ValidationError(f"{self.name} has no field {name!r}")
                clean[name] = raw
                continue
            if raw is None or raw == "":
                if spec.required:
                    raise ValidationError(f"{self.name} field {name!r} must not be empty")
                clean[name] = None
                continue
            try:
                value = spec.kind.parse(raw, locale)
            except ValueError as problem:
                raise ValidationError(f"{self.name} field {name!r}: {problem}") from None
            note = spec.kind.warning(value)
            if note:
                warnings.append(f"{name}: {note}")
            clean[name] = value
        return clean, warnings

    def check_required(self, values: Mapping[str, str]) -> None:
        for spec in self.fields:
            if spec.required and not values.get(spec.name):
                raise ValidationError(f"{self.name} field {spec.name!r} is required")
