"""The morning views, specified with figures worked out by hand: what the pipeline is worth per
stage, month and owner in each currency, what is due, and finding a deal however it is spelled."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import salesmgr
from hypothesis import given, settings
from hypothesis import strategies as st

from salesmgr import storage
from salesmgr.errors import ValidationError
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.reports import STAGE_PROBABILITY, agenda, forecast, select

TODAY = date(2026, 12, 7)  # a Monday

# company, title, stage, value, currency, probability, close, next action, due, owner, contact
DEALS = [
    ("Müller GmbH", "Flotte", "Proposal", "12000.00", "EUR", "60", "2026-12-31",
     "Angebot nachfassen", "2026-12-03", "ana", "Jörg Müller"),
    ("Acme", "Fleet renewal", "Negotiation", "30000.50", "USD", "", "2027-01-15",
     "Send contract", "2026-12-07", "ben", "Jo Smith"),
    ("Café Noir", "Espresso machines", "Lead", "999.99", "EUR", "", "2026-12-20",
     "First call", "2026-12-14", "ana", ""),
    ("Zeta Corp", "Servers", "Won", "5000.00", "USD", "", "2026-11-30", "Invoice", "2026-12-15",
     "Ana", ""),
    ("Lost Ltd", "Printers", "Lost", "7000.00", "EUR", "10", "2026-12-01", "", "", "ben", ""),
    ("Omega", "Desks", "Qualified", "", "EUR", "", "", "Qualify budget", "2026-12-01", "", ""),
]


def make_pipeline() -> tuple[Pipeline, dict[str, str]]:
    pipeline = Pipeline.create("Winter", owner="", currency="EUR")
    rtype = get_registry().record_type("opportunity")
    ids = {}
    for (company, title, stage, value, currency, probability, close, action, due, owner,
         contact) in DEALS:
        record, _ = pipeline.add(rtype, {
            "company": company, "title": title, "stage": stage, "value": value,
            "currency": currency, "probability": probability, "close_date": close,
            "next_action": action, "next_action_date": due, "owner": owner, "contact": contact,
            "notes": "Lieferung: Hauptstraße 5" if company == "Müller GmbH" else "",
        })
        ids[company] = record.id
    gone, _ = pipeline.add(rtype, {"company": "Deleted", "title": "Gone", "value": "1.00",
                                   "next_action_date": "2026-12-01"})
    pipeline.delete(gone.id)
    return pipeline, ids


def test_stage_probabilities_used_when_a_deal_has_none_are_the_documented_ones() -> None:
    assert STAGE_PROBABILITY == {"Lead": 10, "Qualified": 25, "Proposal": 50,
                                 "Negotiation": 75, "Won": 100, "Lost": 0}


def test_forecast_by_stage_per_currency_worked_by_hand() -> None:
    pipeline, _ = make_pipeline()
    result = forecast(pipeline, by="stage")
    rows = [(r.group, r.currency, r.count, r.value, r.weighted) for r in result.rows]
    assert rows == [
        # Lead: 999.99 at the Lead default 10% = 99.999
        ("Lead", "EUR", 1, Decimal("999.99"), Decimal("99.999")),
        # Qualified, no value: counted, worth 0
        ("Qualified", "EUR", 1, Decimal("0"), Decimal("0")),
        # Proposal: its own 60% of 12000.00 = 7200
        ("Proposal", "EUR", 1, Decimal("12000.00"), Decimal("7200")),
        # Negotiation: 75% of 30000.50 = 22500.375
        ("Negotiation", "USD", 1, Decimal("30000.50"), Decimal("22500.375")),
        # Won: 100% of 5000
        ("Won", "USD", 1, Decimal("5000.00"), Decimal("5000")),
        # Lost is left out by default
    ]
    totals = [(t.currency, t.count, t.value, t.weighted) for t in result.totals]
    assert totals == [
        ("EUR", 3, Decimal("12999.99"), Decimal("7299.999")),
        ("USD", 2, Decimal("35000.50"), Decimal("27500.375")),
    ]


def test_forecast_never_adds_two_currencies_and_can_count_lost_deals() -> None:
    pipeline, _ = make_pipeline()
    with_lost = forecast(pipeline, by="stage", include_lost=True)
    lost = [r for r in with_lost.rows if r.group == "Lost"]
    # Lost Ltd has its own probability 10: 7000 * 10% = 700 (a lost deal's own figure is kept)
    assert [(r.currency, r.value, r.weighted) for r in lost] == [
        ("EUR", Decimal("7000.00"), Decimal("700"))
    ]
    eur = next(t for t in with_lost.totals if t.currency == "EUR")
    assert eur.value == Decimal("19999.99")
    assert {t.currency for t in with_lost.totals} == {"EUR", "USD"}


def test_forecast_by_month_and_by_owner() -> None:
    pipeline, _ = make_pipeline()
    by_month = [(r.group, r.currency, r.value, r.weighted)
                for r in forecast(pipeline, by="month").rows]
    assert by_month == [
        ("2026-11", "USD", Decimal("5000.00"), Decimal("5000")),
        ("2026-12", "EUR", Decimal("12999.99"), Decimal("7299.999")),
        ("2027-01", "USD", Decimal("30000.50"), Decimal("22500.375")),
        ("", "EUR", Decimal("0"), Decimal("0")),  # no close date: last
    ]
    by_owner = [(r.group, r.currency, r.count, r.weighted)
                for r in forecast(pipeline, by="owner").rows]
    # Owners are grouped as written ("ana" and "Ana" are two spellings a person can see).
    assert by_owner == [
        ("Ana", "USD", 1, Decimal("5000")),
        ("ana", "EUR", 2, Decimal("7299.999")),
        ("ben", "USD", 1, Decimal("22500.375")),
        ("", "EUR", 1, Decimal("0")),
    ]
    with pytest.raises(ValidationError, match="cannot group a forecast by 'colour'"):
        forecast(pipeline, by="colour")  # type: ignore[arg-type]


def test_agenda_lists_overdue_and_due_oldest_first() -> None:
    pipeline, ids = make_pipeline()
    items = agenda(pipeline, days=7, today=TODAY)
    assert [(i.company, i.due.isoformat(), i.overdue) for i in items] == [
        ("Omega", "2026-12-01", True),
        ("Müller GmbH", "2026-12-03", True),
        ("Acme", "2026-12-07", False),  # today is due, not overdue
        ("Café Noir", "2026-12-14", False),  # the 7th day after today is in
        # Zeta's 2026-12-15 is 8 days away; the deleted deal and Lost Ltd (no date) never show
    ]
    assert items[1].record_id == ids["Müller GmbH"]
    assert items[1].next_action == "Angebot nachfassen"
    assert [i.company for i in agenda(pipeline, days=0, today=TODAY)] == [
        "Omega", "Müller GmbH", "Acme"
    ]
    assert [i.company for i in agenda(pipeline, days=8, owner="ANA", today=TODAY)] == [
        "Müller GmbH", "Café Noir", "Zeta Corp"
    ]


def test_select_searches_without_accents_or_case() -> None:
    pipeline, _ = make_pipeline()

    def companies(**filters: object) -> list[str]:
        return [r.values["company"] for r in select(pipeline, **filters)]  # type: ignore[arg-type]

    assert companies(search="muller") == ["Müller GmbH"]
    assert companies(search="MÜLLER") == ["Müller GmbH"]
    assert companies(search="jorg") == ["Müller GmbH"]  # the contact
    assert companies(search="strasse") == ["Müller GmbH"]  # the notes, ß as ss
    assert companies(search="cafe espresso") == ["Café Noir"]  # every word, any field
    assert companies(search="fleet") == ["Acme"]  # the title
    assert companies(search="nobody") == []
    assert companies(stage="proposal") == ["Müller GmbH"]
    assert companies(owner="Ben") == ["Acme", "Lost Ltd"]
    assert companies(due_before=date(2026, 12, 7)) == ["Müller GmbH", "Omega"]


def test_select_sorts_by_any_column_empty_values_last() -> None:
    pipeline, _ = make_pipeline()

    def companies(sort: str) -> list[str]:
        return [r.values["company"] for r in select(pipeline, sort=sort)]

    assert companies("company") == [
        "Acme", "Café Noir", "Lost Ltd", "Müller GmbH", "Omega", "Zeta Corp"
    ]
    assert companies("-value") == [
        "Acme", "Müller GmbH", "Lost Ltd", "Zeta Corp", "Café Noir", "Omega"
    ]
    assert companies("value")[:2] == ["Café Noir", "Zeta Corp"]
    assert companies("next_action_date") == [
        "Omega", "Müller GmbH", "Acme", "Café Noir", "Zeta Corp", "Lost Ltd"
    ]
    assert companies("stage") == [
        "Café Noir", "Omega", "Müller GmbH", "Acme", "Zeta Corp", "Lost Ltd"
    ]
    with pytest.raises(ValidationError, match="cannot sort by 'colour'"):
        select(pipeline, sort="colour")


# -- the commands -----------------------------------------------------------------------------


@pytest.fixture
def winter(tmp_path: Path) -> Path:
    path = tmp_path / "winter.smp"
    storage.save(make_pipeline()[0], path)
    return path


def test_forecast_command_json_gives_the_same_figures_rounded_to_cents(winter: Path) -> None:
    result = salesmgr("forecast", winter, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["totals"] == [
        {"currency": "EUR", "count": 3, "value": "12999.99", "weighted": "7300.00"},
        {"currency": "USD", "count": 2, "value": "35000.50", "weighted": "27500.38"},
    ]
    assert data["rows"][0] == {"group": "Lead", "currency": "EUR", "count": 1,
                               "value": "999.99", "weighted": "100.00"}


def test_forecast_command_plain_has_a_total_line_per_currency(winter: Path) -> None:
    lines = salesmgr("forecast", winter, "--by", "owner").stdout.splitlines()
    assert lines[0] == "owner\tcurrency\tdeals\tvalue\tweighted"
    assert lines[-2:] == ["total\tEUR\t3\t12999.99\t7300.00", "total\tUSD\t2\t35000.50\t27500.38"]


def test_agenda_command(winter: Path) -> None:
    result = salesmgr("agenda", winter, "--today", "2026-12-07", "--days", "0", "--json")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    assert [(i["company"], i["due"], i["overdue"]) for i in items] == [
        ("Omega", "2026-12-01", True), ("Müller GmbH", "2026-12-03", True),
        ("Acme", "2026-12-07", False),
    ]
    plain = salesmgr("agenda", winter, "--today", "2026-12-07", "--owner", "ben").stdout
    assert plain.splitlines()[1].split("\t")[:2] == ["2026-12-07", "due"]


def test_list_searches_filters_and_sorts(winter: Path) -> None:
    def companies(*options: str) -> list[str]:
        result = salesmgr("list", winter, *options, "--json")
        assert result.exit_code == 0, result.output
        return [r["company"] for r in json.loads(result.stdout)]

    assert companies("--search", "muller") == ["Müller GmbH"]
    assert companies("--owner", "ben", "--sort", "-value") == ["Acme", "Lost Ltd"]
    assert companies("--due-before", "2026-12-07", "--sort", "next_action_date") == [
        "Omega", "Müller GmbH"
    ]
    bad = salesmgr("list", winter, "--sort", "colour")
    assert bad.exit_code == 2 and "cannot sort by 'colour'" in bad.stderr


@pytest.mark.parametrize("columns", [200, 80, 60])
def test_a_table_never_cuts_amounts_ids_or_dates_and_totals_each_currency(
    winter: Path, columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from salesmgr.cli import records as record_commands

    monkeypatch.setattr(record_commands, "output_mode", lambda as_json: "table")
    long_name = "Müller Fahrzeugbau und Flottenmanagement GmbH & Co. KG, Niederlassung Süd"
    big = salesmgr("add", winter, "--company", long_name, "--title", "Flotte " * 12,
                   "--value", "123456789.99", "--currency", "EUR",
                   "--next-action-date", "2026-12-24", "--next-action", "Anrufen " * 10)
    assert big.exit_code == 0, big.output
    shown = salesmgr("list", winter, env={"COLUMNS": str(columns)}).stdout
    assert max(len(line) for line in shown.splitlines()) <= columns
    assert "123,456,789.99" in shown and "30,000.50" in shown  # whole amounts
    assert big.stdout.strip()[:8] in shown and "2026-12-24" in shown  # whole ids and dates
    total_lines = [line for line in shown.splitlines() if "total" in line]
    # EUR: 12000 + 999.99 + 7000 + 0 + 123456789.99; USD: 30000.50 + 5000
    assert any("123,476,789.98" in line and "EUR" in line for line in total_lines)
    assert any("35,000.50" in line and "USD" in line for line in total_lines)
    # Text wraps; what cannot fit even then is left out and the caption says so.
    assert ("too narrow for close, %, stage" in shown) == (columns < 200)


def test_list_due_before_is_read_in_the_pipelines_locale(winter: Path) -> None:
    ambiguous = salesmgr("list", winter, "--due-before", "07/12/2026")
    assert ambiguous.exit_code == 2
    assert ambiguous.stderr.startswith("salesmgr: --due-before: '07/12/2026' is ambiguous")
    assert salesmgr("locale", winter, "de_DE").exit_code == 0
    german = salesmgr("list", winter, "--due-before", "07.12.2026", "--json")
    assert german.exit_code == 0, german.output
    assert sorted(r["company"] for r in json.loads(german.stdout)) == ["Müller GmbH", "Omega"]


# -- one index, many questions ----------------------------------------------------------------

WORDS = ["muller", "MÜLLER", "acme", "fleet", "strasse", "café", "zz", "jo", ""]
SORTS = [None, "company", "-value", "value", "stage", "-stage", "close_date", "-probability",
         "owner", "next_action_date"]


def plainly(pipeline: Pipeline, search: str, stage: str | None, owner: str | None,
            due_before: date | None, sort: str | None) -> list[str]:
    """The question answered the plain way, one filter and one sort for it alone."""
    from salesmgr.reports import due_date, fold, matches_search, sorted_records

    words = fold(search).split()
    found = [
        r for r in pipeline.live("opportunity")
        if (stage is None or r.values.get("stage", "").casefold() == stage.casefold())
        and (owner is None or r.values.get("owner", "").casefold() == owner.casefold())
        and (due_before is None or ((d := due_date(r)) is not None and d < due_before))
        and matches_search(r, words)
    ]
    return [r.id for r in sorted_records(found, sort)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(WORDS), st.sampled_from([None, "lead", "Proposal", "won"]),
    st.sampled_from([None, "ana", "BEN"]), st.sampled_from([None, date(2026, 12, 8)]),
    st.sampled_from(SORTS)), min_size=1, max_size=8))
def test_an_index_kept_for_many_questions_answers_each_as_select_alone_would(
    questions: list[tuple[str, str | None, str | None, date | None, str | None]],
) -> None:
    """Orders and search texts an `OpportunityIndex` keeps from one question never change the
    answer to the next: every answer is the one a fresh filter-and-sort gives."""
    from salesmgr.reports import OpportunityIndex

    pipeline, _ = make_pipeline()
    rtype = get_registry().record_type("opportunity")
    for i, stage in enumerate(["Lead", "Won", "Lead", "Proposal"]):  # ties, to test stability
        pipeline.add(rtype, {"company": "Acme", "title": "Fleet", "stage": stage,
                             "value": str(100 * (i % 2)), "owner": "ben" if i % 2 else "ana"})
    kept = OpportunityIndex(pipeline)  # asked one question after another
    warm = OpportunityIndex(pipeline)  # every order already made
    for sort in SORTS:
        warm.query(sort=sort)
    for search, stage, owner, due_before, sort in questions:
        expected = plainly(pipeline, search, stage, owner, due_before, sort)
        for index in (kept, warm):
            answer = index.query(search=search or None, stage=stage, owner=owner,
                                 due_before=due_before, sort=sort)
            assert [index.records[i].id for i in answer] == expected
