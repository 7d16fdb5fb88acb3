"""Amounts, dates and percentages are read as the pipeline's locale writes them, and never
guessed: a text with two possible readings is refused, naming both."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import babel.numbers
import pytest
from helpers import one_error_line, salesmgr
from hypothesis import given, settings
from hypothesis import strategies as st

from salesmgr import storage
from salesmgr.model.localized import (
    REFERENCE_LOCALES,
    environment_locale,
    locale_number,
    parse_amount,
    parse_day,
    parse_percent,
    split_currency,
)

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "de_CH", "it_IT", "nl_NL", "sv_SE", "pl_PL",
           "es_ES", "ja_JP", "en_IN")


@pytest.mark.parametrize(
    ("european", "american"),
    [("12.000,00", "12,000.00"), ("1.250,00", "1,250.00"), ("1,5", "1.5"), ("0,99", "0.99"),
     ("1.234.567,89", "1,234,567.89"), ("12000", "12000")],
)
def test_the_european_and_us_forms_of_an_amount_are_equal_under_their_locales(
    european: str, american: str
) -> None:
    assert parse_amount(european, "de_DE") == parse_amount(american, "en_US")


@pytest.mark.parametrize("text", ["12,000", "12.000", "1,250", "3.500"])
def test_an_ambiguous_amount_without_a_locale_is_refused_naming_both_readings(text: str) -> None:
    with pytest.raises(ValueError, match="ambiguous without a locale") as refused:
        parse_amount(text, None)
    assert "en_US" in str(refused.value) and "de_DE" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("12.000,00", "12000.00"), ("12,000.00", "12000.00"), ("1,5", "1.5"), ("12000.50", "12000.50"),
     ("1 234,56", "1234.56"), ("1\u202f234,56", "1234.56"), ("1'234.56", "1234.56")],
)
def test_an_amount_with_one_reading_needs_no_locale(text: str, value: str) -> None:
    assert parse_amount(text, None) == Decimal(value)


def test_a_form_the_locale_does_not_use_is_refused_with_the_expected_form() -> None:
    with pytest.raises(ValueError, match=r"'1,5' is not a number in en_US \(expected a form "
                                         r"like 1,234.56\)"):
        parse_amount("1,5", "en_US")
    with pytest.raises(ValueError, match="'12,000.00' is not a number in de_DE"):
        parse_amount("12,000.00", "de_DE")
    with pytest.raises(ValueError, match="more than two decimals in en_US"):
        parse_amount("12.000", "en_US")  # a European twelve thousand typed in a US pipeline


@settings(max_examples=150, deadline=None)
@given(
    cents=st.integers(min_value=0, max_value=10**14 - 1),
    locale=st.sampled_from(LOCALES),
    grouped=st.booleans(),
)
def test_any_amount_written_in_a_locale_reads_back_exactly(
    cents: int, locale: str, grouped: bool
) -> None:
    amount = Decimal(cents).scaleb(-2)
    text = babel.numbers.format_decimal(amount, locale=locale, group_separator=grouped)
    assert parse_amount(text, locale) == amount


@settings(max_examples=150, deadline=None)
@given(
    cents=st.integers(min_value=0, max_value=10**10),
    writer=st.sampled_from(REFERENCE_LOCALES),
    pattern=st.sampled_from(["#,##0.00", "#,##0.##", "#,##0", "0.##"]),
)
def test_without_a_locale_an_amount_is_accepted_only_when_no_convention_reads_it_otherwise(
    cents: int, writer: str, pattern: str
) -> None:
    text = babel.numbers.format_decimal(Decimal(cents).scaleb(-2), format=pattern, locale=writer)
    readings = {locale_number(text, other) for other in REFERENCE_LOCALES} - {None}
    try:
        value = parse_amount(text, None)
    except ValueError as refused:
        assert len(readings) > 1 or "two decimals" in str(refused), (text, readings)
    else:
        assert readings <= {value}, (text, value, readings)


@pytest.mark.parametrize(
    ("text", "locale"),
    [("12/31/2026", "en_US"), ("31.12.2026", "de_DE"), ("31/12/2026", "en_GB"),
     ("31/12/2026", "fr_FR"), ("2026-12-31", "de_DE"), ("Dec 31, 2026", "en_US"),
     ("31. Dezember 2026", "de_DE"), ("12/31/2026 10:30 AM", "en_US"),
     ("2026-12-31 00:00", None), ("12/31/2026", None), ("31.12.2026", None)],
)
def test_dates_in_each_locale(text: str, locale: str | None) -> None:
    assert parse_day(text, locale) == date(2026, 12, 31)


def test_dates_are_never_guessed() -> None:
    with pytest.raises(ValueError, match=r"ambiguous without a locale: 2026-04-03 \(day first\)"
                                         r" or 2026-03-04 \(month first\)"):
        parse_day("03/04/2026", None)
    assert parse_day("03/04/2026", "en_US") == date(2026, 3, 4)
    assert parse_day("03/04/2026", "de_DE") == date(2026, 4, 3)
    with pytest.raises(ValueError, match="not a date in en_US"):
        parse_day("31/12/2026", "en_US")  # no silent swap of day and month
    with pytest.raises(ValueError, match="the year in full"):
        parse_day("31.12.26", "de_DE")


def test_percentages_and_currency_signs() -> None:
    assert parse_percent("60%", None) == 60
    assert parse_percent("60 %", "fr_FR") == 60
    assert parse_percent("0.6", None, fraction=True) == 60
    assert parse_percent("0,6", "de_DE", fraction=True) == 60
    assert split_currency("$12,000.00", "en_US") == ("12,000.00", "USD")
    assert split_currency("$12,000.00", "en_CA") == ("12,000.00", "CAD")
    assert split_currency("12.000,00 €", "de_DE") == ("12.000,00", "EUR")
    assert split_currency("EUR 1.200,00", None) == ("1.200,00", "EUR")
    with pytest.raises(ValueError, match="'\\$' is not a currency sign without a locale"):
        split_currency("$5", None)


def test_the_environment_gives_the_default_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LC_ALL", "LC_NUMERIC", "LANG", "LANGUAGE", "LC_CTYPE", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "de_DE.UTF-8")
    assert environment_locale() == "de_DE"
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    assert environment_locale() is None


# -- on the command line ----------------------------------------------------------------------


def test_init_takes_the_locale_from_the_environment_or_locale(tmp_path: Path) -> None:
    german = tmp_path / "de.smp"
    env = {"LC_ALL": "", "LC_NUMERIC": "", "LANGUAGE": "", "LANG": "de_DE.UTF-8"}
    assert salesmgr("init", german, env=env).exit_code == 0
    assert storage.load(german).locale == "de_DE"
    us = tmp_path / "us.smp"
    assert salesmgr("init", us, "--locale", "en-us", env=env).exit_code == 0
    assert salesmgr("locale", us).stdout == "en_US\n"
    assert salesmgr("locale", us, "fr_FR").exit_code == 0
    assert storage.load(us).locale == "fr_FR"
    assert salesmgr("locale", us, "--none").exit_code == 0
    assert storage.load(us).locale is None
    bad = salesmgr("locale", us, "xx_YY")
    assert bad.exit_code == 2 and "'xx_YY' is not a locale" in bad.stderr


def test_add_reads_the_amount_in_the_pipelines_locale(tmp_path: Path) -> None:
    german, us = tmp_path / "de.smp", tmp_path / "us.smp"
    salesmgr("init", german, "--locale", "de_DE")
    salesmgr("init", us, "--locale", "en_US")
    de_id = salesmgr("add", german, "--company", "Müller GmbH", "--title", "Flotte",
                     "--value", "12.000,00", "--close-date", "31.12.2026",
                     "--probability", "60 %").stdout.strip()
    us_id = salesmgr("add", us, "--company", "Acme", "--title", "Fleet",
                     "--value", "12,000.00", "--close-date", "12/31/2026").stdout.strip()
    de_values = storage.load(german).records[de_id].values
    assert (de_values["value"], de_values["close_date"], de_values["probability"]) == (
        "12000.00", "2026-12-31", "60")
    assert storage.load(us).records[us_id].values["value"] == "12000.00"
    # --locale overrides the pipeline's for one command
    other = salesmgr("edit", german, de_id, "--value", "1,250.00", "--locale", "en_US")
    assert other.exit_code == 0, other.output
    assert storage.load(german).records[de_id].values["value"] == "1250.00"


def test_add_refuses_what_it_would_have_misread(tmp_path: Path) -> None:
    us, plain = tmp_path / "us.smp", tmp_path / "plain.smp"
    salesmgr("init", us, "--locale", "en_US")
    salesmgr("init", plain, env={"LC_ALL": "C"})
    before = us.read_bytes()
    refused = salesmgr("add", us, "--company", "A", "--title", "B", "--value", "1,5")
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        "salesmgr: opportunity field 'value': '1,5' is not a number in en_US "
        "(expected a form like 1,234.56)")
    assert us.read_bytes() == before
    ambiguous = salesmgr("add", plain, "--company", "A", "--title", "B", "--value", "12,000")
    assert ambiguous.exit_code == 2
    assert "'12,000' is ambiguous without a locale" in one_error_line(ambiguous)
    assert list(storage.load(plain).live("opportunity")) == []
