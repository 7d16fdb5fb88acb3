"""Importing the exports of the CRMs people leave.  Each CSV is made here the way the CRM (or a
spreadsheet the user opened it in) writes it: its real column names, quoting, byte-order mark,
delimiter, encoding, locale-formatted amounts and dates, and non-ASCII names; every imported
value is checked."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from helpers import one_error_line, salesmgr

from salesmgr import storage


def write_csv(path: Path, rows: list[list[str]], *, delimiter: str = ",", bom: bool = False,
              encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quoting=csv.QUOTE_ALL).writerows(rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode(encoding))
    return path


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "desk.smp"
    assert salesmgr("init", path, "--currency", "EUR", "--owner", "me", "--locale", "en_US"
                    ).exit_code == 0
    return path


def imported(path: Path) -> dict[str, dict[str, str]]:
    """The live opportunities by external id, their values without the automatic ones."""
    found = {}
    for record in storage.load(path).live("opportunity"):
        values = {k: v for k, v in record.values.items() if k != "created"}
        found[values["external_id"]] = values
    return found


def run_import(pipeline: Path, csv_file: Path, *options: str) -> Any:
    result = salesmgr("import", pipeline, csv_file, *options)
    assert result.exit_code == 0, result.output
    return result


def test_salesforce_us_report_with_bom_dollars_and_us_dates(
    pipeline_file: Path, tmp_path: Path
) -> None:
    export = write_csv(tmp_path / "report1701.csv", bom=True, rows=[
        ["Opportunity Owner", "Account Name", "Opportunity Name", "Stage", "Fiscal Period",
         "Amount", "Probability (%)", "Close Date", "Created Date", "Next Step", "Lead Source",
         "Type", "Opportunity ID", "Description"],
        ["Ana Souza", "Müller GmbH", "Flotte, Erneuerung 2027", "Proposal/Price Quote",
         "Q4-2026", "$12,000.00", "60%", "12/31/2026", "11/2/2026", 'Call Jörg "the boss"',
         "Web", "New Business", "0065g00000AbCdEAAZ", "Budget approved\nDecision in Q1"],
        ["Ben Okafor", "Acme, Inc.", "Servers", "Closed Won", "Q4-2026", "$1,250.50", "100%",
         "11/30/2026", "10/1/2026", "", "", "", "0065g00000AbCdFAAZ", ""],
    ])
    result = run_import(pipeline_file, export)
    assert "2 added" in result.stdout
    assert "'Fiscal Period', 'Created Date', 'Lead Source', 'Type'" in result.stderr
    assert imported(pipeline_file) == {
        "salesforce:0065g00000AbCdEAAZ": {
            "external_id": "salesforce:0065g00000AbCdEAAZ", "company": "Müller GmbH",
            "title": "Flotte, Erneuerung 2027", "stage": "Proposal", "value": "12000.00",
            "currency": "USD", "probability": "60", "close_date": "2026-12-31",
            "next_action": 'Call Jörg "the boss"', "owner": "Ana Souza",
            "notes": "Budget approved\nDecision in Q1",
        },
        "salesforce:0065g00000AbCdFAAZ": {
            "external_id": "salesforce:0065g00000AbCdFAAZ", "company": "Acme, Inc.",
            "title": "Servers", "stage": "Won", "value": "1250.50", "currency": "USD",
            "probability": "100", "close_date": "2026-11-30", "owner": "Ben Okafor",
        },
    }


def test_salesforce_amounts_in_dollars_need_a_locale_to_be_read(tmp_path: Path) -> None:
    plain = tmp_path / "plain.smp"
    salesmgr("init", plain, env={"LC_ALL": "C"})
    export = write_csv(tmp_path / "sf.csv", rows=[
        ["Opportunity Name", "Account Name", "Stage", "Amount"],
        ["Servers", "Acme", "Prospecting", "$1,250.50"],
    ])
    before = plain.read_bytes()
    refused = salesmgr("import", plain, export)
    assert refused.exit_code == 2
    assert refused.stderr.splitlines()[0] == (
        f"salesmgr: {export} row 2: refused: value '$1,250.50': '$' is not a currency sign "
        "without a locale; write the ISO code (USD, EUR...) or give --locale")
    assert plain.read_bytes() == before
    run_import(plain, export, "--locale", "en_US")
    [deal] = storage.load(plain).live("opportunity")
    assert (deal.values["value"], deal.values["currency"], deal.values["stage"]) == (
        "1250.50", "USD", "Lead")


def test_hubspot_deals_with_iso_times_and_fraction_probabilities(
    pipeline_file: Path, tmp_path: Path
) -> None:
    export = write_csv(tmp_path / "hubspot-crm-exports-all-deals-2026-12-07.csv", rows=[
        ["Record ID", "Deal Name", "Deal Stage", "Close Date", "Deal owner", "Amount",
         "Currency", "Deal probability", "Associated Company", "Associated Contact",
         "Create Date", "Pipeline"],
        ["9876543210", "Licence renewal – Ørsted", "Contract Sent", "2027-01-15 00:00",
         "Ana Souza", "25000.5", "DKK", "0.9", "Ørsted A/S", "Søren Kierkegaard",
         "2026-10-01 09:12", "Sales Pipeline"],
        ["9876543211", "Pilot", "Appointment Scheduled", "", "", "", "", "", "Café Noir", "",
         "2026-10-02 09:12", "Sales Pipeline"],
    ])
    run_import(pipeline_file, export)
    assert imported(pipeline_file) == {
        "hubspot:9876543210": {
            "external_id": "hubspot:9876543210", "title": "Licence renewal – Ørsted",
            "stage": "Negotiation", "close_date": "2027-01-15", "owner": "Ana Souza",
            "value": "25000.50", "currency": "DKK", "probability": "90",
            "company": "Ørsted A/S", "contact": "Søren Kierkegaard",
        },
        "hubspot:9876543211": {
            "external_id": "hubspot:9876543211", "title": "Pilot", "stage": "Lead",
            "company": "Café Noir", "currency": "EUR", "owner": "me",  # the pipeline's defaults
        },
    }


def test_pipedrive_deals_resaved_by_a_german_excel(pipeline_file: Path, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "deals-export.csv", delimiter=";", bom=True, rows=[
        ["Deal - ID", "Deal - Title", "Deal - Organization", "Deal - Contact person",
         "Deal - Value", "Deal - Currency", "Deal - Stage", "Deal - Status",
         "Deal - Probability", "Deal - Expected close date", "Deal - Next activity date",
         "Deal - Owner", "Deal - Weighted value"],
        ["101", "Flotte", "Müller GmbH", "Jörg Müller", "12.000,00", "EUR", "Proposal Made",
         "open", "", "31.12.2026", "05.12.2026", "Ana", "6.000,00"],
        ["102", "Wartung; Service", "Bäckerei Groß", "", "1.250,00", "EUR",
         "Negotiations Started", "won", "80", "30.11.2026", "", "Ana", "1.000,00"],
    ])
    run_import(pipeline_file, export, "--locale", "de_DE", "--profile", "pipedrive")
    assert imported(pipeline_file) == {
        "pipedrive:101": {
            "external_id": "pipedrive:101", "title": "Flotte", "company": "Müller GmbH",
            "contact": "Jörg Müller", "value": "12000.00", "currency": "EUR",
            "stage": "Proposal", "close_date": "2026-12-31", "next_action_date": "2026-12-05",
            "owner": "Ana",
        },
        "pipedrive:102": {
            "external_id": "pipedrive:102", "title": "Wartung; Service",
            "company": "Bäckerei Groß", "value": "1250.00", "currency": "EUR",
            "stage": "Won",  # the status says how it ended, whatever stage it was in
            "probability": "80", "close_date": "2026-11-30", "owner": "Ana",
        },
    }


def test_zoho_deals_in_windows_1252_with_pounds_and_british_dates(
    pipeline_file: Path, tmp_path: Path
) -> None:
    export = write_csv(tmp_path / "Deals_2026_12_07.csv", encoding="cp1252", rows=[
        ["Record Id", "Deal Owner", "Deal Name", "Amount", "Closing Date", "Account Name",
         "Stage", "Probability (%)", "Contact Name", "Next Step", "Description", "Currency"],
        ["zcrm_4876000000123001", "Ana", "Café fit-out", "£8,500.00", "31/12/2026",
         "Café Noir Ltd", "Closed-Lost to Competition", "0", "Zoë Brontë", "", "", ""],
        ["zcrm_4876000000123002", "Ben", "Office chairs", "£950", "03/04/2027", "Chairs & Co",
         "Qualification", "10", "", "Send samples", "", "GBP"],
    ])
    refused = salesmgr("import", pipeline_file, export)
    assert refused.exit_code == 1
    assert one_error_line(refused) == (
        f"salesmgr: {export} line 2: not UTF-8 text; save it as CSV UTF-8, or name its "
        "encoding with --encoding (such as cp1252)")
    run_import(pipeline_file, export, "--encoding", "cp1252", "--locale", "en_GB")
    assert imported(pipeline_file) == {
        "zoho:zcrm_4876000000123001": {
            "external_id": "zoho:zcrm_4876000000123001", "owner": "Ana",
            "title": "Café fit-out", "value": "8500.00", "currency": "GBP",
            "close_date": "2026-12-31", "company": "Café Noir Ltd", "stage": "Lost",
            "probability": "0", "contact": "Zoë Brontë",
        },
        "zoho:zcrm_4876000000123002": {
            "external_id": "zoho:zcrm_4876000000123002", "owner": "Ben",
            "title": "Office chairs", "value": "950.00", "currency": "GBP",
            "close_date": "2027-04-03", "company": "Chairs & Co", "stage": "Qualified",
            "probability": "10", "next_action": "Send samples",
        },
    }


def test_a_mapping_file_describes_any_other_source(pipeline_file: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "altcrm.toml"
    mapping.write_text(
        'name = "altcrm"\nlocale = "de_DE"\nprobability = "fraction"\n'
        '[columns]\n"Firma" = "company"\n"Vorhaben" = "title"\n"Betrag" = "value"\n'
        '"Chance" = "probability"\n"Phase" = "stage"\n"Nr." = "external_id"\n'
        '[stages]\n"Angebot" = "Proposal"\n', encoding="utf-8")
    export = write_csv(tmp_path / "alt.csv", delimiter=";", rows=[
        ["Nr.", "Firma", "Vorhaben", "Betrag", "Chance", "Phase"],
        ["7", "Müller GmbH", "Flotte", "12.000,00", "0,6", "Angebot"],
    ])
    run_import(pipeline_file, export, "--mapping", mapping)
    values = imported(pipeline_file)["altcrm:7"]
    assert (values["value"], values["probability"], values["stage"]) == (
        "12000.00", "60", "Proposal")
    mapping.write_text('[columns]\n"Firma" = "firm"\n', encoding="utf-8")
    bad = salesmgr("import", pipeline_file, export, "--mapping", mapping)
    assert bad.exit_code == 2
    assert "column 'Firma' maps to 'firm', which is not a field" in one_error_line(bad)


def test_an_unknown_stage_is_refused_not_guessed(pipeline_file: Path, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "sf.csv", rows=[
        ["Opportunity Name", "Account Name", "Stage"],
        ["Servers", "Acme", "Waiting for Godot"],
    ])
    refused = salesmgr("import", pipeline_file, export)
    assert refused.exit_code == 2
    assert ("row 2: refused: stage 'Waiting for Godot' is not a salesforce stage salesmgr "
            "knows (map it in a --mapping file)") in refused.stderr


def test_dry_run_says_row_by_row_and_changes_nothing(pipeline_file: Path, tmp_path: Path) -> None:
    export = write_csv(tmp_path / "sf.csv", rows=[
        ["Opportunity Name", "Account Name", "Stage", "Amount", "Opportunity ID"],
        ["Servers", "Acme", "Prospecting", "$1,250.50", "006A"],
        ["Desks", "Acme", "Prospecting", "1.250,50", "006B"],
    ])
    before = pipeline_file.read_bytes()
    result = salesmgr("import", pipeline_file, export, "--dry-run")
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert lines[0].startswith("row 2: add opportunity ") and lines[0].endswith("(Acme: Servers)")
    assert lines[-1] == "dry run: 1 added, 0 updated, 0 unchanged, 1 refused; nothing changed"
    assert ("row 3: refused: opportunity field 'value': '1.250,50' is not a number in "
            "en_US") in result.stderr
    assert pipeline_file.read_bytes() == before
