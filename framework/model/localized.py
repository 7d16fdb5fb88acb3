"""Numbers, amounts, dates and percentages as people write them, read without ever guessing.

A pipeline has a locale (``de_DE``, ``en_US``...; `Pipeline.locale`), or none.  Text is read
with Babel's data for that locale, strictly: ``12.000,00`` is twelve thousand in ``de_DE`` and
refused in ``en_US``; ``12/31/2026`` is a date in ``en_US`` and refused in ``de_DE``.

Every reader collects the *readings* a text can have and accepts it only when there is exactly
one:

- under a locale, the locale's reading and the canonical form salesmgr itself writes
  (``12000.50``, ``2026-12-31``, ``60``), which never conflict in practice;
- without a locale, the readings of the common conventions (``1,234.56``, ``1.234,56``,
  ``1 234,56``, ``1'234.56``; day-month-year and month-day-year).  ``1.234,56`` has one reading
  and is accepted; ``12,000`` (twelve thousand, or twelve) and ``03/04/2026`` are refused, with
  a message naming both readings and how to say which one is meant.

Each reader raises ``ValueError`` with a message meant to follow the field's name.
"""

from __future__ import annotations

import os
import re
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from babel import Locale

# Babel is imported by the functions that read or write in a locale, when first called: most
# commands never do, and importing Babel (its locale data, pytz) costs every command 20 ms.

# Conventions an amount or date may follow when the pipeline has no locale.
REFERENCE_LOCALES = ("en_US", "de_DE", "fr_FR", "de_CH")
NO_LOCALE = frozenset({"C", "POSIX", "en_US_POSIX"})
SPACES = " \u00a0\u202f\u2009"  # space, no-break, narrow no-break, thin
APOSTROPHES = "'\u2019\u02bc"
CANONICAL_AMOUNT = re.compile(r"\d+(?:\.\d{1,2})?")
ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# A time after a date ("2026-12-31 10:00", "...T10:00:00Z", "12/31/2026 9:30 AM") is dropped.
TIME_TAIL = re.compile(r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[AaPp]\.?[Mm]\.?)?"
                       r"\s*(?:Z|[+-]\d{2}:?\d{2}|UTC|GMT)?)$")
EXAMPLE_AMOUNT = Decimal("1234.56")
EXAMPLE_DAY = date(2026, 12, 31)


# -- locales ----------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def locale_named(name: str) -> Locale:
    """The Babel locale called ``name`` (``de_DE``, ``de-DE``, ``de``)."""
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(name.strip().replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(f"{name!r} is not a locale (such as en_US, de_DE, fr_FR)") from None


def canonical_locale(name: str) -> str:
    """``de-de`` -> ``de_DE``; raises ValueError for a name Babel does not know."""
    return str(locale_named(name))


def environment_locale() -> str | None:
    """The locale of this environment (LC_ALL, LC_NUMERIC, LANG), None for C/POSIX or unset."""
    import babel

    found = babel.default_locale(("LC_ALL", "LC_NUMERIC", "LANG"))
    if not found or found in NO_LOCALE or os.environ.get("LC_ALL") in ("C", "POSIX"):
        return None
    try:
        return canonical_locale(found)
    except ValueError:
        return None


def example_amount(locale: str | None) -> str:
    """How ``1234.56`` is written in ``locale`` (the canonical form without one)."""
    import babel.numbers

    if locale is None:
        return "1234.56"
    return babel.numbers.format_decimal(EXAMPLE_AMOUNT, format="#,##0.00", locale=locale)


def example_date(locale: str | None) -> str:
    if locale is None:
        return "2026-12-31"
    order, separator = date_order(locale)
    parts = {"d": f"{EXAMPLE_DAY.day:02d}", "m": f"{EXAMPLE_DAY.month:02d}",
             "y": str(EXAMPLE_DAY.year)}
    return separator.join(parts[p] for p in order)


def in_locale(locale: str | None) -> str:
    return f"in {locale}" if locale else "without a locale"


# -- numbers ----------------------------------------------------------------------------------


def locale_number(text: str, locale: str) -> Decimal | None:
    """Babel's strict reading of ``text`` in ``locale``, None when it is not a number there."""
    import babel.numbers

    symbols = locale_named(locale).number_symbols.get("latn", {})
    group = symbols.get("group", ",")
    if group in SPACES:
        text = re.sub(f"[{SPACES}]", group, text)
    elif group in APOSTROPHES:
        text = re.sub(f"[{APOSTROPHES}]", group, text)
    try:
        return babel.numbers.parse_decimal(text, locale=locale, strict=True)
    except (babel.numbers.NumberFormatError, InvalidOperation, ValueError):
        return None


def number_readings(text: str, locale: str | None) -> dict[Decimal, str]:
    """Each distinct value ``text`` can be read as, with the convention that reads it so."""
    readings: dict[Decimal, str] = {}
    if CANONICAL_AMOUNT.fullmatch(text):
        readings[Decimal(text)] = "as written"
    for convention in (locale,) if locale else REFERENCE_LOCALES:
        value = locale_number(text, convention)
        if value is not None and value.is_finite():
            readings.setdefault(value, convention)
    return readings


def parse_number(text: str, locale: str | None) -> Decimal:
    """The one value ``text`` stands for in ``locale`` (or in any convention, without one)."""
    written = text.strip()
    if CANONICAL_AMOUNT.fullmatch(written):
        # salesmgr's own form: no convention reads it otherwise (a "." that groups digits is
        # followed by three of them, a "," is not there), so Babel need not be asked.
        return Decimal(written)
    readings = number_readings(written, locale)
    if len(readings) > 1:
        values = " or ".join(f"{v:f} ({how})" for v, how in readings.items())
        raise ValueError(f"{text!r} is ambiguous {in_locale(locale)}: {values}; "
                         "give a locale with --locale (such as en_US or de_DE)")
    if not readings:
        raise ValueError(f"{text!r} is not a number {in_locale(locale)} "
                         f"(expected a form like {example_amount(locale)})")
    [value] = readings
    return value


def decimals_written(text: str, value: Decimal) -> int:
    """How many decimals the text shows (``12.000`` in en_US: 3, although the value is 12)."""
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


# -- amounts ----------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def currency_signs(locale: str | None) -> dict[str, str | None]:
    """Sign -> ISO code in ``locale`` (None where a sign stands for several currencies there);
    without a locale, the signs of Babel's root locale (``€``, ``£``, ``US$``...)."""
    symbols = locale_named(locale or "root").currency_symbols
    found: dict[str, str | None] = {}
    for code, sign in symbols.items():
        if len(code) != 3 or sign == code:
            continue
        found[sign] = None if sign in found and found[sign] != code else code
    return found


# A sign or ISO code before or after the number: "$12,000.00", "12.000,00 €", "EUR 1,200".
AMOUNT_SPLIT = re.compile(
    r"^\s*(?P<before>[^\d\s.,-]*)\s*(?P<number>-?[\d.,\s\u00a0\u202f'\u2019]*\d)"
    r"\s*(?P<after>[^\d\s.,]*)\s*$"
)


def split_currency(text: str, locale: str | None) -> tuple[str, str | None]:
    """``$12,000.00`` -> ("12,000.00", "USD") in en_US; ``12.000,00 €`` -> ("12.000,00", "EUR");
    ``EUR 1,200`` -> ("1,200", "EUR"); a bare number -> (text, None).  Raises ValueError for a
    sign this locale does not know or that stands for several currencies."""
    from salesmgr.model.fields import ISO_4217

    match = AMOUNT_SPLIT.match(text)
    if match is None:
        return text, None
    signs = [s for s in (match["before"], match["after"]) if s]
    if not signs:
        return text, None
    if len(signs) > 1:
        raise ValueError(f"{text!r} has two currency signs")
    [sign] = signs
    if sign.upper() in ISO_4217:
        return match["number"], sign.upper()
    known = currency_signs(locale)
    if sign not in known:
        raise ValueError(f"{text!r}: {sign!r} is not a currency sign {in_locale(locale)}; "
                         "write the ISO code (USD, EUR...) or give --locale")
    code = known[sign]
    if code is None:
        raise ValueError(f"{text!r}: {sign!r} stands for several currencies {in_locale(locale)};"
                         " write the ISO code instead")
    return match["number"], code


def parse_amount(text: str, locale: str | None) -> Decimal:
    """A money amount (no currency sign) with at most two decimals written."""
    value = parse_number(text, locale)
    if decimals_written(text, value) > 2:
        raise ValueError(f"{text!r} has more than two decimals {in_locale(locale)} "
                         f"(expected a form like {example_amount(locale)})")
    return value


def parse_percent(text: str, locale: str | None, *, fraction: bool = False) -> Decimal:
    """``60``, ``60%``, ``60 %`` -> 60; with ``fraction`` a bare number is a fraction of one
    (``0.6`` -> 60), as some CRMs export probabilities; with a % sign it is always a percent."""
    written = text.strip()
    signs = {"%"}
    if locale:
        signs.add(locale_named(locale).number_symbols.get("latn", {}).get("percentSign", "%"))
    percent = False
    for sign in signs:
        if written.endswith(sign) or written.startswith(sign):
            written = written.removesuffix(sign).removeprefix(sign).strip()
            percent = True
    value = parse_number(written, locale)
    if fraction and not percent:
        value *= 100
    return value


# -- dates ------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def date_order(locale: str) -> tuple[str, str]:
    """The order of day, month and year in ``locale``'s short date (``"mdy"``, ``"dmy"``,
    ``"ymd"``) and its separator."""
    import babel.dates

    pattern = babel.dates.get_date_format("short", locale=locale).pattern
    order = ""
    for letter in re.findall(r"[dMy]", pattern):
        key = letter.lower()
        if key not in order:
            order += key
    separator = next((c for c in pattern if c in "/.-"), "/")
    return (order if len(order) == 3 else "ymd"), separator


@lru_cache(maxsize=64)
def month_names(locale: str | None) -> dict[str, int]:
    """Every spelling of a month name in ``locale`` (English without one), case-folded and
    without a trailing dot."""
    import babel.dates

    names: dict[str, int] = {}
    for context in ("format", "stand-alone"):
        for width in ("wide", "abbreviated"):
            for number, name in babel.dates.get_month_names(width, context, locale or "en").items():
                names[name.casefold().rstrip(".")] = number
    return names


def day_from(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def date_readings(text: str, locale: str | None) -> dict[date, str]:
    readings: dict[date, str] = {}
    iso = ISO_DATE.fullmatch(text)
    if iso:
        found = day_from(int(iso[1]), int(iso[2]), int(iso[3]))
        if found:
            readings[found] = "ISO 8601"
        return readings
    words = [w for w in re.split(r"[\s,./-]+", text) if w]
    if len(words) != 3:
        return readings
    named = [w for w in words if not w.isdigit()]
    if named:  # "Dec 31, 2026", "31. Dezember 2026": the month is named, the rest is clear
        if len(named) != 1 or (month := month_names(locale).get(named[0].casefold())) is None:
            return readings
        numbers = [int(w) for w in words if w.isdigit()]
        years = [w for w in words if w.isdigit() and len(w) == 4]
        days = [int(w) for w in words if w.isdigit() and len(w) <= 2]
        if len(numbers) == 2 and len(years) == 1 and len(days) == 1:
            found = day_from(int(years[0]), month, days[0])
            if found:
                readings[found] = "month named"
        return readings
    orders = [date_order(locale)[0]] if locale else ["dmy", "mdy", "ymd"]
    for order in orders:
        parts = dict(zip(order, words, strict=True))
        if len(parts["y"]) != 4 or len(parts["d"]) > 2 or len(parts["m"]) > 2:
            continue
        found = day_from(int(parts["y"]), int(parts["m"]), int(parts["d"]))
        if found:
            readings.setdefault(found, {"dmy": "day first", "mdy": "month first",
                                        "ymd": "year first"}[order])
    return readings


def parse_day(text: str, locale: str | None) -> date:
    """A calendar day: ISO 8601 (``2026-12-31``) anywhere, the locale's numeric form
    (``12/31/2026`` in en_US, ``31.12.2026`` in de_DE), or with the month named; a time of day
    after it is ignored.  Years are written in full: ``31.12.26`` is refused."""
    written = TIME_TAIL.sub("", text.strip()).strip()
    readings = date_readings(written, locale)
    if len(readings) > 1:
        days = " or ".join(f"{d.isoformat()} ({how})" for d, how in readings.items())
        raise ValueError(f"{text!r} is ambiguous {in_locale(locale)}: {days}; "
                         "write it as YYYY-MM-DD or give a locale")
    if not readings:
        forms = "2026-12-31" if locale is None else f"{example_date(locale)} or 2026-12-31"
        raise ValueError(f"{text!r} is not a date {in_locale(locale)} (expected {forms}, "
                         "the year in full)")
    [day] = readings
    return day
