"""The ``salesmgr`` record commands, as a user and a script see them.

Every error is one line on stderr naming what is wrong, a non-zero exit, no traceback, and the
pipeline file left exactly as it was.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import msgspec
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from salesmgr import hookimpl, storage
from salesmgr.cli import records as record_commands
from salesmgr.cli import views
from salesmgr.cli.group import cli, main
from salesmgr.cli.views import (
    LIST_COLUMNS,
    TABLE_ROW_LIMIT,
    plain_table,
    record_json,
    rich_table,
)
from salesmgr.errors import PipelineFileError
from salesmgr.model.fields import Choice, Field
from salesmgr.model.pipeline import Dot, Pipeline, Record
from salesmgr.model.record_table import LiveColumns
from salesmgr.plugin.manager import Registry, get_registry, make_plugin_manager, use_registry

OPPORTUNITY_JSON_KEYS = [
    "id",
    "company",
    "title",
    "contact",
    "phone",
    "email",
    "stage",
    "value",
    "currency",
    "probability",
    "close_date",
    "next_action",
    "next_action_date",
    "owner",
    "notes",
    "created",
    "external_id",
    "modified",
]


# -- fixtures and helpers -------------------------------------------------------------------


def builtin_registry(*extra: object) -> Registry:
    return Registry(make_plugin_manager(entry_points=False, extra=extra))


@pytest.fixture(autouse=True)
def only_builtin_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No installed third-party plugin takes part in these tests."""
    monkeypatch.setenv("SALESMGR_DISABLE_PLUGINS", "1")
    previous = use_registry(builtin_registry())
    yield
    use_registry(previous)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: object, input: str | None = None) -> Result:
    return runner.invoke(cli, [str(a) for a in args], input=input)


def ok(runner: CliRunner, *args: object) -> str:
    result = run(runner, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def ok_bytes(runner: CliRunner, *args: object) -> str:
    """Standard output exactly as written (``Result.stdout`` turns CRLF into LF)."""
    result = run(runner, *args)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes.decode("utf-8")


def fails(result: Result, exit_code: int, *fragments: str) -> str:
    """Assert the one-line error contract; returns the line."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("salesmgr: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def folder_state(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def pipeline_file(tmp_path: Path, runner: CliRunner) -> Path:
    path = tmp_path / "pipe.smgr"
    ok(runner, "init", path, "--name", "Spring", "--owner", "Ann", "--currency", "eur")
    return path


def add(runner: CliRunner, path: Path, company: str, title: str, *options: str) -> str:
    out = ok(runner, "add", path, "--company", company, "--title", title, *options)
    return out.strip()


def show_json(runner: CliRunner, path: Path, record_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(runner, "show", path, record_id, "--json"))
    return data


def list_json(runner: CliRunner, path: Path, *options: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(ok(runner, "list", path, "--json", *options))
    return data


# -- init -----------------------------------------------------------------------------------


def test_version(runner: CliRunner) -> None:
    assert ok(runner, "--version").strip() == "salesmgr 0.1.0"


def test_init_creates_an_empty_pipeline_with_its_header(pipeline_file: Path) -> None:
    pipeline = storage.load(pipeline_file)
    assert (pipeline.name, pipeline.owner, pipeline.currency) == ("Spring", "Ann", "EUR")
    assert pipeline.records == {}


def test_init_names_the_pipeline_after_the_file_by_default(
    runner: CliRunner, tmp_path: Path
) -> None:
    ok(runner, "init", tmp_path / "north-east.smgr")
    assert storage.load(tmp_path / "north-east.smgr").name == "north-east"


def test_init_refuses_an_existing_file(runner: CliRunner, pipeline_file: Path) -> None:
    before = pipeline_file.read_bytes()
    fails(run(runner, "init", pipeline_file), 3, str(pipeline_file), "already exists")
    assert pipeline_file.read_bytes() == before


@pytest.mark.parametrize("code", ["EUX", "euro", ""])
def test_init_rejects_a_currency_that_is_not_iso_4217(
    runner: CliRunner, tmp_path: Path, code: str
) -> None:
    fails(run(runner, "init", tmp_path / "p.smgr", "--currency", code), 2, "ISO 4217")
    assert not (tmp_path / "p.smgr").exists()


# -- add, edit, delete ----------------------------------------------------------------------


def test_add_prints_only_the_new_id_and_fills_defaults(
    runner: CliRunner, pipeline_file: Path
) -> None:
    result = run(runner, "add", pipeline_file, "--company", "Acme", "--title", "Big deal",
                 "--value", "12000", "--probability", "40", "--close-date", "2026-11-28")
    assert result.exit_code == 0 and result.stderr == ""
    record_id = result.stdout.strip()
    assert result.stdout == record_id + "\n"
    assert str(uuid.UUID(record_id)) == record_id
    shown = show_json(runner, pipeline_file, record_id)
    assert shown["value"] == "12000.00"
    assert shown["probability"] == 40
    assert shown["close_date"] == "2026-11-28"
    assert (shown["stage"], shown["currency"], shown["owner"]) == ("Lead", "EUR", "Ann")


def test_add_warns_about_an_odd_email_but_keeps_it(
    runner: CliRunner, pipeline_file: Path
) -> None:
    result = run(runner, "add", pipeline_file, "--company", "Acme", "--title", "T",
                 "--email", "bob at acme")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "salesmgr: warning: email: 'bob at acme' does not look like an e-mail address"
    ]
    assert show_json(runner, pipeline_file, result.stdout.strip())["email"] == "bob at acme"


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (["--probability", "140"], ["probability", "140 is not between 0 and 100"]),
        (["--stage", "Maybe"], ["stage", "'Maybe' is not one of Lead"]),
        (["--close-date", "2026-02-30"], ["close_date", "not a date"]),
        (["--next-action-date", "tomorrow"], ["next_action_date", "not a date"]),
        (["--value", "12,000.505"], ["value", "more than two decimals"]),
        (["--value", "-5"], ["value", "negative"]),
        (["--currency", "EUX"], ["currency", "ISO 4217"]),
        (["--company", ""], ["company", "must not be empty"]),
        (["--field", "colour=red"], ["no field 'colour'"]),
    ],
)
def test_add_rejects_an_impossible_value_and_leaves_the_file_alone(
    runner: CliRunner, pipeline_file: Path, options: list[str], fragments: list[str]
) -> None:
    before = folder_state(pipeline_file.parent)
    args = ["add", pipeline_file, "--company", "Acme", "--title", "T", *options]
    if "--company" in options:
        args[2:4] = []
    fails(run(runner, *args), 2, *fragments)
    assert folder_state(pipeline_file.parent) == before


def test_add_requires_company_and_title(runner: CliRunner, pipeline_file: Path) -> None:
    fails(run(runner, "add", pipeline_file, "--title", "T"), 2, "'company' is required")
    fails(run(runner, "add", pipeline_file, "--company", "C"), 2, "'title' is required")


def test_edit_changes_only_the_given_fields(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal", "--value", "500", "--notes", "hi")
    other = add(runner, pipeline_file, "Beta", "Other")
    before = show_json(runner, pipeline_file, other)
    out = ok(runner, "edit", pipeline_file, record_id[:8], "--stage", "won", "--probability", "90")
    assert out.strip() == record_id  # a prefix is answered with the full id
    shown = show_json(runner, pipeline_file, record_id)
    assert (shown["stage"], shown["probability"], shown["value"]) == ("Won", 90, "500.00")
    assert shown["notes"] == "hi"
    assert show_json(runner, pipeline_file, other) == before


def test_edit_clears_a_field_with_an_empty_value(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal", "--value", "500", "--notes", "hi",
                    "--phone", "555")
    ok(runner, "edit", pipeline_file, record_id, "--value", "", "--field", "notes=")
    shown = show_json(runner, pipeline_file, record_id)
    assert (shown["value"], shown["notes"], shown["phone"]) == (None, None, "555")


def test_edit_refuses_to_empty_a_required_field(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal")
    before = pipeline_file.read_bytes()
    fails(run(runner, "edit", pipeline_file, record_id, "--company", ""), 2, "company")
    assert pipeline_file.read_bytes() == before


def test_edit_without_any_change_is_a_usage_error(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal")
    result = run(runner, "edit", pipeline_file, record_id)
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr


def test_edit_to_the_same_value_does_not_rewrite_the_file(
    runner: CliRunner, pipeline_file: Path
) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal", "--stage", "Proposal")
    before = folder_state(pipeline_file.parent)
    ok(runner, "edit", pipeline_file, record_id, "--stage", "proposal")
    assert folder_state(pipeline_file.parent) == before


def test_the_same_field_given_twice_is_a_usage_error(
    runner: CliRunner, pipeline_file: Path
) -> None:
    result = run(runner, "add", pipeline_file, "--company", "A", "--title", "T",
                 "--stage", "Won", "--field", "stage=Lost")
    assert result.exit_code == 2
    assert "given twice" in result.stderr


def test_field_option_needs_name_equals_value(runner: CliRunner, pipeline_file: Path) -> None:
    result = run(runner, "add", pipeline_file, "--company", "A", "--title", "T", "--field", "x")
    assert result.exit_code == 2
    assert "NAME=VALUE" in result.stderr


def test_delete_leaves_a_tombstone_and_hides_the_record(
    runner: CliRunner, pipeline_file: Path
) -> None:
    gone = add(runner, pipeline_file, "Acme", "Deal")
    kept = add(runner, pipeline_file, "Beta", "Deal")
    assert ok(runner, "delete", pipeline_file, gone).strip() == gone
    assert [o["id"] for o in list_json(runner, pipeline_file)] == [kept]
    assert storage.load(pipeline_file).records[gone].deleted
    fails(run(runner, "show", pipeline_file, gone), 4, gone)
    fails(run(runner, "delete", pipeline_file, gone), 4, gone)


# -- log and show ---------------------------------------------------------------------------


def test_log_adds_an_activity_that_show_lists(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal")
    later = ok(runner, "log", pipeline_file, record_id[:6], "--kind", "Meeting",
               "--summary", "demo", "--date", "2026-03-02").strip()
    first = ok(runner, "log", pipeline_file, record_id, "--kind", "call",
               "--summary", "said hello", "--date", "2026-03-01T09:30:00+01:00").strip()
    shown = show_json(runner, pipeline_file, record_id)
    assert [a["id"] for a in shown["activities"]] == [first, later]
    assert shown["activities"][0] == {
        "id": first,
        "opportunity_id": record_id,
        "kind": "call",
        "date": "2026-03-01T09:30:00+01:00",
        "summary": "said hello",
        "modified": shown["activities"][0]["modified"],
    }
    assert shown["activities"][1]["kind"] == "meeting"


def test_log_against_an_unknown_opportunity_is_an_error(
    runner: CliRunner, pipeline_file: Path
) -> None:
    add(runner, pipeline_file, "Acme", "Deal")
    before = folder_state(pipeline_file.parent)
    fails(run(runner, "log", pipeline_file, "feedbeef", "--kind", "call", "--summary", "x"),
          4, "no opportunity with id 'feedbeef'")
    assert folder_state(pipeline_file.parent) == before


def test_log_checks_the_activity_fields(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal")
    fails(run(runner, "log", pipeline_file, record_id, "--kind", "lunch"), 2, "'lunch'")
    fails(run(runner, "log", pipeline_file, record_id, "--summary", "x"), 2, "'kind'")
    fails(run(runner, "log", pipeline_file, record_id, "--kind", "call", "--date", "2026-2-30"),
          2, "date")


def test_show_json_shape(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal", "--value", "12000", "--probability",
                    "40", "--email", "ann@acme.example")
    shown = show_json(runner, pipeline_file, record_id)
    assert list(shown) == [*OPPORTUNITY_JSON_KEYS, "activities"]
    assert shown["value"] == "12000.00" and shown["probability"] == 40
    assert shown["contact"] is None
    assert shown["activities"] == []
    for moment in (shown["created"], shown["modified"]):
        assert "T" in moment and moment[:4].isdigit()  # ISO 8601


def test_modified_follows_the_newest_write(runner: CliRunner, pipeline_file: Path) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal")
    ok(runner, "edit", pipeline_file, record_id, "--stage", "Won")
    record = storage.load(pipeline_file).records[record_id]
    assert show_json(runner, pipeline_file, record_id)["modified"] == record.last_change.when()


def test_show_plain_is_field_tab_value_then_activities(
    runner: CliRunner, pipeline_file: Path
) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal", "--notes", "line 1\nline 2")
    activity = ok(runner, "log", pipeline_file, record_id, "--kind", "note", "--summary", "s",
                  "--date", "2026-01-05").strip()
    fields, activities = ok(runner, "show", pipeline_file, record_id).split("\n\n")
    rows = dict(line.split("\t") for line in fields.splitlines())
    assert rows["field"] == "value"
    assert rows["company"] == "Acme" and rows["notes"] == "line 1\\nline 2"
    assert activities.splitlines() == ["id\tdate\tkind\tsummary",
                                       f"{activity}\t2026-01-05\tnote\ts"]


# -- list -----------------------------------------------------------------------------------


def test_list_shows_live_opportunities_by_company_then_title(
    runner: CliRunner, pipeline_file: Path
) -> None:
    ids = {
        (c, t): add(runner, pipeline_file, c, t)
        for c, t in [("beta", "b"), ("Acme", "z"), ("acme", "a"), ("Zed", "a")]
    }
    order = [(o["company"], o["title"]) for o in list_json(runner, pipeline_file)]
    assert order == [("acme", "a"), ("Acme", "z"), ("beta", "b"), ("Zed", "a")]
    lines = ok(runner, "list", pipeline_file).splitlines()
    assert lines[0].split("\t") == list(LIST_COLUMNS)
    assert [line.split("\t")[0] for line in lines[1:]] == [ids[k] for k in order]


def test_list_filters_by_stage(runner: CliRunner, pipeline_file: Path) -> None:
    won = add(runner, pipeline_file, "A", "T", "--stage", "Won")
    add(runner, pipeline_file, "B", "T")
    assert [o["id"] for o in list_json(runner, pipeline_file, "--stage", "won")] == [won]
    fails(run(runner, "list", pipeline_file, "--stage", "Maybe"), 2, "'Maybe'")


def test_list_plain_keeps_every_record_on_one_line(
    runner: CliRunner, pipeline_file: Path
) -> None:
    add(runner, pipeline_file, "Tab\there", "New\nline", "--value", "1.5")
    lines = ok(runner, "list", pipeline_file).splitlines()
    assert len(lines) == 2
    cells = lines[1].split("\t")
    assert cells[1:5] == ["Tab\\there", "New\\nline", "Lead", "1.50"]


def test_list_of_an_empty_pipeline(runner: CliRunner, pipeline_file: Path) -> None:
    assert list_json(runner, pipeline_file) == []
    assert ok(runner, "list", pipeline_file).splitlines() == ["\t".join(LIST_COLUMNS)]


def test_list_json_has_one_object_per_opportunity(runner: CliRunner, pipeline_file: Path) -> None:
    add(runner, pipeline_file, "Acme", "Deal", "--value", "12000", "--probability", "0")
    out = ok(runner, "list", pipeline_file, "--json")
    [only] = json.loads(out)
    assert list(only) == OPPORTUNITY_JSON_KEYS
    assert only["value"] == "12000.00" and only["probability"] == 0
    assert out.splitlines()[1].startswith('{"id":')  # one object per line


def test_list_json_streams_in_chunks_and_keeps_one_object_per_line(
    runner: CliRunner, pipeline_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects are encoded a chunk at a time; a newline or "},{" inside a value never splits
    or joins an object, whatever the chunk boundaries."""
    notes = ["line one\nline two", '"},{"', "plain", "\\n not a newline", "last"]
    for n, note in enumerate(notes):
        add(runner, pipeline_file, f"Company {n}", "Deal", "--notes", note)
    monkeypatch.setattr(views, "JSON_CHUNK", 2)
    out = ok_bytes(runner, "list", pipeline_file, "--json")
    listed = json.loads(out)
    assert [o["notes"] for o in listed] == notes
    lines = out.splitlines()
    assert lines[0] == "[" and lines[-1] == "]" and len(lines) == len(notes) + 2
    assert [json.loads(line.rstrip(",")) for line in lines[1:-1]] == listed
    assert out.endswith("}\n]\n")
    monkeypatch.setattr(views, "JSON_CHUNK", 4096)
    assert ok_bytes(runner, "list", pipeline_file, "--json") == out
    assert ok_bytes(runner, "list", pipeline_file, "--json", "--stage", "won") == "[]\n"


def test_table_output_on_a_terminal(
    runner: CliRunner, pipeline_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_id = add(runner, pipeline_file, "[bold]Acme[/bold]", "Deal", "--value", "12000",
                    "--probability", "40")
    ok(runner, "log", pipeline_file, record_id, "--kind", "call", "--summary", "hello")
    monkeypatch.setattr(record_commands, "output_mode", lambda as_json: "table")
    monkeypatch.setenv("COLUMNS", "200")
    listed = ok(runner, "list", pipeline_file)
    assert "[bold]Acme[/bold]" in listed  # user text is never rich markup
    assert record_id[:8] in listed and record_id not in listed
    assert "12,000.00" in listed and "40%" in listed
    assert "Spring: 1 opportunity" in listed
    shown = ok(runner, "show", pipeline_file, record_id[:8])
    assert record_id in shown and "hello" in shown and "Activities" in shown
    assert "[bold]Acme[/bold]: Deal" in shown
    assert "salesmgr.plugins.records" in ok(runner, "plugins")


# -- ids, files -----------------------------------------------------------------------------


def test_unknown_and_ambiguous_ids(runner: CliRunner, pipeline_file: Path) -> None:
    pipeline = storage.load(pipeline_file)
    rtype = get_registry().record_type("opportunity")
    for suffix in ("1", "2"):
        pipeline.add(rtype, {"company": "A", "title": "T"},
                     record_id=f"abcd{suffix}000-0000-4000-8000-000000000000")
    storage.save(pipeline, pipeline_file)
    fails(run(runner, "show", pipeline_file, "abcd"), 4, "matches 2 records")
    assert show_json(runner, pipeline_file, "abcd1")["id"].startswith("abcd1")
    fails(run(runner, "show", pipeline_file, "nothing-like-it"), 4, "nothing-like-it")
    fails(run(runner, "edit", pipeline_file, "abc", "--stage", "Won"), 4, "'abc'")


ALL_COMMANDS: list[list[str]] = [
    ["list"],
    ["list", "--json"],
    ["show", "abcd"],
    ["add", "--company", "A", "--title", "T"],
    ["edit", "abcd", "--stage", "Won"],
    ["delete", "abcd"],
    ["log", "abcd", "--kind", "call", "--summary", "x"],
    ["export"],
    ["import", "CSV"],
]


def command_line(path: Path, words: list[str]) -> list[object]:
    csv_file = path.parent / "in.csv"
    csv_file.write_text("company,title\nA,T\n")
    return [words[0], path, *(csv_file if w == "CSV" else w for w in words[1:])]


@pytest.mark.parametrize("words", ALL_COMMANDS, ids=lambda w: " ".join(w))
def test_a_missing_file_is_one_line_naming_it(
    runner: CliRunner, tmp_path: Path, words: list[str]
) -> None:
    path = tmp_path / "missing.smgr"
    fails(run(runner, *command_line(path, words)), 3, str(path), "no such file")
    assert not path.exists()


def damaged(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flipped byte":
        data[len(data) // 2] ^= 0x40
    elif how == "truncated":
        del data[len(data) - 7 :]
    elif how == "newer major version":
        data[8] = 9
    elif how == "not a pipeline":
        data[:] = b"company,title\nA,T\n"
    elif how == "empty":
        data.clear()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("flipped byte", "checksum mismatch"),
        ("truncated", "truncated"),
        ("newer major version", "newer than this salesmgr reads"),
        ("not a pipeline", "not a salesmgr pipeline file"),
        ("empty", "empty"),
    ],
)
@pytest.mark.parametrize("words", ALL_COMMANDS, ids=lambda w: " ".join(w))
def test_a_bad_file_is_reported_and_left_byte_identical(
    runner: CliRunner, pipeline_file: Path, how: str, problem: str, words: list[str]
) -> None:
    add(runner, pipeline_file, "Acme", "Deal")
    damaged(pipeline_file, how)
    args = command_line(pipeline_file, words)
    before = folder_state(pipeline_file.parent)
    fails(run(runner, *args), 3, str(pipeline_file), problem)
    assert folder_state(pipeline_file.parent) == before


def test_a_directory_is_not_a_pipeline_file(runner: CliRunner, tmp_path: Path) -> None:
    fails(run(runner, "list", tmp_path), 3, str(tmp_path), "directory")


def test_a_copied_file_can_be_edited_where_it_now_lives(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    record_id = add(runner, pipeline_file, "Acme", "Deal")
    (tmp_path / "laptop").mkdir()
    copy = tmp_path / "laptop" / "pipe.smgr"
    shutil.copyfile(pipeline_file, copy)
    original = pipeline_file.read_bytes()
    ok(runner, "edit", copy, record_id, "--stage", "Won")
    ok(runner, "add", copy, "--company", "New", "--title", "Lead")
    assert show_json(runner, copy, record_id)["stage"] == "Won"
    assert len(list_json(runner, copy)) == 2
    assert pipeline_file.read_bytes() == original
    # The copy became a replica of its own, so its writes cannot collide with the original's.
    mine = storage.decode(copy.read_bytes(), "copy")
    theirs = storage.decode(original, "original")
    assert mine.replica_id != theirs.replica_id
    assert mine.records[record_id].field_dots["stage"].replica == mine.replica_id


# -- import and export ------------------------------------------------------------------------


def write_csv(path: Path, text: str, *, bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_import_adds_every_row_and_accepts_spreadsheet_headers(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    kept_id = "5b0c9ad2-95a2-4c55-9d53-3a4f6b1b8d5e"
    csv_file = write_csv(
        tmp_path / "in.csv",
        "Company,Title,Close Date,value,id,notes\r\n"
        f"Acme,Deal A,2026-05-01,\"12,000.00\",{kept_id},\"two\r\nlines\"\r\n"
        "Beta,Deal B,,,,\r\n"
        ",,,,,\r\n",
        bom=True,
    )
    out = ok(runner, "import", pipeline_file, csv_file)
    assert out.strip() == (
        f"imported {csv_file} into {pipeline_file}: 2 added, 0 updated, 0 unchanged")
    listed = list_json(runner, pipeline_file)
    assert [o["company"] for o in listed] == ["Acme", "Beta"]
    acme = listed[0]
    assert acme["id"] == kept_id
    assert (acme["close_date"], acme["value"], acme["notes"]) == (
        "2026-05-01", "12000.00", "two\r\nlines")
    assert (listed[1]["stage"], listed[1]["currency"]) == ("Lead", "EUR")


def test_import_reports_every_bad_row_by_line_and_imports_nothing(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    add(runner, pipeline_file, "Existing", "Deal")
    csv_file = write_csv(
        tmp_path / "in.csv",
        "company,title,probability,notes,stage,email\n"
        'Acme,Deal A,40,"a note\nover two lines",,\n'  # lines 2-3: good
        "Beta,,10,,,\n"  # line 4: no title
        "Gamma,Deal C,140,,,\n"  # line 5
        "Delta,Deal D,50,,Maybe,\n"  # line 6
        "Echo,Deal E,50,,,odd\n"  # line 7: only a warning
        "Foxtrot,Deal F,1,,,,surplus\n",  # line 8: too many cells
    )
    before = folder_state(pipeline_file.parent)
    result = run(runner, "import", pipeline_file, csv_file)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if "warning" not in line]
    assert errors == [
        f"salesmgr: {csv_file} row 3 (line 4): refused: opportunity field 'title' must not be "
        "empty",
        f"salesmgr: {csv_file} row 4 (line 5): refused: opportunity field 'probability': "
        "140 is not between 0 and 100",
        f"salesmgr: {csv_file} row 5 (line 6): refused: opportunity field 'stage': 'Maybe' is "
        "not one of Lead, Qualified, Proposal, Negotiation, Won, Lost",
        f"salesmgr: {csv_file} row 7 (line 8): refused: 7 values but 6 columns",
        f"salesmgr: {csv_file}: 4 bad rows; nothing imported",
    ]
    assert folder_state(pipeline_file.parent) == before


def test_import_reads_semicolon_separated_csv_from_a_european_excel(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    csv_file = write_csv(tmp_path / "in.csv", 'company;title;value\r\n"Acme; AG";Deal;1000\r\n',
                         bom=True)
    ok(runner, "import", pipeline_file, csv_file)
    [only] = list_json(runner, pipeline_file)
    assert (only["company"], only["title"], only["value"]) == ("Acme; AG", "Deal", "1000.00")


def test_import_keeps_a_very_long_note(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    note = "x" * 200_000 + "\n" + "y" * 1000
    add(runner, pipeline_file, "Acme", "Deal", "--notes", note)
    csv_file = tmp_path / "out.csv"
    ok(runner, "export", pipeline_file, "-o", csv_file)
    fresh = tmp_path / "fresh.smgr"
    ok(runner, "init", fresh)
    ok(runner, "import", fresh, csv_file)
    assert list_json(runner, fresh)[0]["notes"] == note


def test_import_names_unknown_columns(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    csv_file = write_csv(tmp_path / "in.csv", "company,title,colour,Size\nA,T,red,XL\n")
    before = folder_state(pipeline_file.parent)
    fails(run(runner, "import", pipeline_file, csv_file), 2, "unknown columns 'colour', 'Size'")
    assert folder_state(pipeline_file.parent) == before


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("title\nT\n", 2, "no column for 'company'"),
        ("company,title,Company\nA,T,B\n", 2, "more than one column gives 'company'"),
        ("", 1, "is empty"),
        ("company,title,id\nA,T,not-a-uuid\n", 2,
         "row 2: refused: id 'not-a-uuid' is not a record id"),
    ],
)
def test_import_refuses_a_csv_it_cannot_trust(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path, text: str, code: int, fragment: str
) -> None:
    csv_file = write_csv(tmp_path / "in.csv", text)
    before = folder_state(pipeline_file.parent)
    result = run(runner, "import", pipeline_file, csv_file)
    assert result.exit_code == code
    assert fragment in result.stderr
    assert folder_state(pipeline_file.parent) == before


def test_import_does_not_reuse_an_id_already_in_the_pipeline(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    existing = add(runner, pipeline_file, "Acme", "Deal")
    csv_file = write_csv(tmp_path / "in.csv", f"id,company,title\n{existing},X,Y\n")
    result = run(runner, "import", pipeline_file, csv_file)
    assert result.exit_code == 2
    assert f"row 2: refused: id {existing} is already in the pipeline" in result.stderr


def test_import_of_a_file_that_is_not_utf8_or_missing(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes("company,title\nCaf\u00e9,T\n".encode("latin-1"))
    fails(run(runner, "import", pipeline_file, latin), 1, f"{latin} line 2: not UTF-8")
    fails(run(runner, "import", pipeline_file, tmp_path / "nope.csv"), 1, "nope.csv", "no such")


def opportunity_values(path: Path) -> dict[str, dict[str, str]]:
    """Each live opportunity's user-visible values by id."""
    pipeline = storage.load(path)
    return {
        r.id: {k: v for k, v in r.values.items() if not k.startswith("~")}
        for r in pipeline.live("opportunity")
    }


def test_export_then_import_into_a_new_file_gives_equal_data(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    first = add(runner, pipeline_file, "Acme, Inc.", 'The "big" one', "--value", "12000.5",
                "--probability", "40", "--close-date", "2026-11-28", "--email", "a@b.example",
                "--notes", "line 1\nline 2, with comma\r\nand CRLF")
    add(runner, pipeline_file, "Zürich Versicherung", "Ölpreis ✓", "--stage", "Negotiation",
        "--currency", "CHF", "--next-action", "call\tback", "--next-action-date", "2026-01-02")
    gone = add(runner, pipeline_file, "Deleted", "Deal")
    ok(runner, "edit", pipeline_file, first, "--notes", "edited\n")
    ok(runner, "delete", pipeline_file, gone)
    exported = ok_bytes(runner, "export", pipeline_file)
    header = next(csv.reader(io.StringIO(exported)))
    assert header == ["id", *(k for k in OPPORTUNITY_JSON_KEYS if k not in ("id", "modified"))]
    csv_file = tmp_path / "out.csv"
    csv_file.write_text(exported, encoding="utf-8", newline="")
    fresh = tmp_path / "fresh.smgr"
    ok(runner, "init", fresh)
    ok(runner, "import", fresh, csv_file)
    assert opportunity_values(fresh) == opportunity_values(pipeline_file)
    assert gone not in opportunity_values(fresh)


def test_export_output_writes_the_same_csv_to_a_file(
    runner: CliRunner, pipeline_file: Path, tmp_path: Path
) -> None:
    add(runner, pipeline_file, "Acme", "Deal")
    target = tmp_path / "export.csv"
    target.write_text("old")
    assert ok(runner, "export", pipeline_file, "--output", target) == ""
    assert target.read_bytes().decode() == ok_bytes(runner, "export", pipeline_file)
    assert not (tmp_path / "export.csv.bak").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "export.csv", "pipe.smgr", "pipe.smgr.bak"]


def test_export_refuses_to_overwrite_the_pipeline_itself(
    runner: CliRunner, pipeline_file: Path
) -> None:
    before = pipeline_file.read_bytes()
    fails(run(runner, "export", pipeline_file, "-o", pipeline_file), 2, "pipeline file itself")
    assert pipeline_file.read_bytes() == before


printable = st.text(st.characters(codec="utf-8"), max_size=40)  # any text but surrogates


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"company": printable.filter(bool), "title": printable.filter(bool)},
            optional={"contact": printable, "notes": printable, "phone": st.text(max_size=50),
                      "value": st.decimals(0, 10**9, places=2).map(str),
                      "probability": st.integers(0, 100).map(str)},
        ),
        max_size=5,
    )
)
def test_csv_round_trip_keeps_any_text(rows: list[dict[str, str]]) -> None:
    runner = CliRunner()
    rtype = get_registry().record_type("opportunity")
    with tempfile.TemporaryDirectory() as folder:
        source, target, csv_file = (Path(folder) / n for n in ("a.smgr", "b.smgr", "a.csv"))
        pipeline = Pipeline.create(name="a", owner="Ann")
        for row in rows:
            pipeline.add(rtype, row)
        storage.save(pipeline, source)
        ok(runner, "export", source, "-o", csv_file)
        ok(runner, "init", target)
        ok(runner, "import", target, csv_file)
        assert opportunity_values(target) == opportunity_values(source)


# -- plugins ----------------------------------------------------------------------------------


class RegionPlugin:
    """A throwaway third-party plugin: one field and one command."""

    @hookimpl
    def salesmgr_register_fields(self, register: Callable[[str, Field], None]) -> None:
        register("opportunity", Field("region", Choice(["EMEA", "APAC", "Americas"]),
                                      help="sales region"))

    @hookimpl
    def salesmgr_register_commands(self, cli: click.Group) -> None:
        @cli.command("regions")
        def regions() -> None:
            """List the sales regions."""
            click.echo("EMEA APAC Americas")


@pytest.fixture
def region_plugin() -> Iterator[Registry]:
    registry = builtin_registry(RegionPlugin())
    previous = use_registry(registry)
    yield registry
    use_registry(previous)


def test_a_plugin_field_is_an_option_and_a_field_assignment(
    runner: CliRunner, pipeline_file: Path, region_plugin: Registry
) -> None:
    first = add(runner, pipeline_file, "Acme", "Deal", "--region", "emea")
    second = add(runner, pipeline_file, "Beta", "Deal", "--field", "region=APAC")
    assert show_json(runner, pipeline_file, first)["region"] == "EMEA"
    assert show_json(runner, pipeline_file, second)["region"] == "APAC"
    ok(runner, "edit", pipeline_file, second, "--region", "")
    assert show_json(runner, pipeline_file, second)["region"] is None
    fails(run(runner, "add", pipeline_file, "--company", "C", "--title", "T", "--region", "Mars"),
          2, "region")
    assert "--region" in ok(runner, "add", "--help")


def test_a_plugin_command_runs_and_plugins_lists_what_each_provides(
    runner: CliRunner, region_plugin: Registry
) -> None:
    assert ok(runner, "regions").strip() == "EMEA APAC Americas"
    infos = json.loads(ok(runner, "plugins", "--json"))
    by_name = {i["name"]: i for i in infos}
    assert by_name["salesmgr.plugins.records"]["provides"]["record_type"][:2] == [
        "opportunity", "activity"]
    assert by_name["salesmgr.plugins.pipeline_codec"]["provides"]["codec"] == ["pipeline-v1"]
    [region] = [i for i in infos if "field" in i["provides"]
                and "opportunity.region" in i["provides"]["field"]]
    assert region["provides"]["command"] == ["regions"]
    assert all(set(i) == {"name", "version", "provides"} for i in infos)
    plain = ok(runner, "plugins").splitlines()
    assert plain[0] == "name\tversion\tprovides"
    assert len(plain) == len(infos) + 1
    assert any("command: regions" in line for line in plain)


def test_plugin_commands_go_with_their_registry(runner: CliRunner, region_plugin: Registry) -> None:
    ok(runner, "regions")
    use_registry(builtin_registry())
    assert run(runner, "regions").exit_code == 2  # no such command any more


class BrokenCommandsPlugin:
    @hookimpl
    def salesmgr_register_commands(self, cli: click.Group) -> None:
        raise RuntimeError("boom\nsecond line")


class HijackPlugin:
    @hookimpl
    def salesmgr_register_commands(self, cli: click.Group) -> None:
        @cli.command("list")
        def hijacked() -> None:
            click.echo("not yours")


@pytest.mark.parametrize(
    ("plugin", "fragment"),
    [(BrokenCommandsPlugin(), "RuntimeError: boom; second line"),
     (HijackPlugin(), "replace the built-in command 'list'")],
)
def test_a_bad_plugin_command_gives_one_line_and_spares_built_ins(
    runner: CliRunner, pipeline_file: Path, plugin: object, fragment: str
) -> None:
    use_registry(builtin_registry(plugin))
    fails(run(runner, "--help"), 5, fragment)
    fails(run(runner, "no-such-command"), 5, fragment)  # every time, not only the first
    add(runner, pipeline_file, "Acme", "Deal")
    assert len(list_json(runner, pipeline_file)) == 1  # the built-in, not the hijacker


# -- the entry point --------------------------------------------------------------------------


def test_main_turns_an_error_into_one_line_and_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.smgr"
    with pytest.raises(SystemExit) as stopped:
        main(["list", str(missing)])
    assert stopped.value.code == 3
    assert capsys.readouterr().err == f"salesmgr: {missing}: no such file\n"


def test_without_standalone_mode_errors_reach_the_caller(tmp_path: Path) -> None:
    with pytest.raises(PipelineFileError):
        cli.main(["list", str(tmp_path / "missing.smgr")], standalone_mode=False)


def test_usage_errors_keep_clicks_behaviour(runner: CliRunner) -> None:
    result = run(runner, "list")
    assert result.exit_code == 2
    assert "Missing argument 'FILE'" in result.stderr
    assert run(runner, "no-such-command").exit_code == 2


# -- rendering --------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.text(max_size=8), min_size=3, max_size=3), max_size=6))
def test_plain_table_has_one_line_per_row_and_a_cell_per_column(rows: list[list[str]]) -> None:
    lines = plain_table(["a", "b", "c"], rows).split("\n")
    assert lines[-1] == ""
    assert len(lines) == len(rows) + 2
    for line, row in zip(lines[1:], rows, strict=False):
        cells = line.split("\t")
        assert len(cells) == 3
        assert [unescape(c) for c in cells] == row


def unescape(cell: str) -> str:
    table = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
    out, chars = [], iter(cell)
    for ch in chars:
        out.append(table[next(chars)] if ch == "\\" else ch)
    return "".join(out)


def test_a_terminal_table_is_capped_and_says_so() -> None:
    rows = [[f"id{i:05d}", f"Company {i}"] for i in range(TABLE_ROW_LIMIT + 10)]
    console = Console(file=io.StringIO(), width=100)
    console.print(rich_table(["id", "company"], rows))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert f"Company {TABLE_ROW_LIMIT - 1}" in text
    assert f"Company {TABLE_ROW_LIMIT}" not in text
    assert f"{TABLE_ROW_LIMIT} of {TABLE_ROW_LIMIT + 10:,} shown" in text


def test_a_table_of_the_first_rows_can_say_how_many_there_are() -> None:
    console = Console(file=io.StringIO(), width=100)
    console.print(rich_table(["id", "company"], [["a", "A"], ["b", "B"]], total=100_000))
    text = " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]
    assert "2 of 100,000 shown" in text


def test_json_keeps_fields_this_installation_does_not_know() -> None:
    rtype = get_registry().record_type("opportunity")
    pipeline = Pipeline.create()
    record, _ = pipeline.add(rtype, {"company": "A", "title": "T", "region": "EMEA",
                                     "probability": "50"}, strict_names=False)
    record.values["~notes"] = "merge base: hidden"
    shown = record_json(record, rtype)
    assert shown["region"] == "EMEA" and shown["probability"] == 50
    assert "~notes" not in shown
    assert list(shown)[-2:] == ["region", "modified"]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in get_registry().record_type(
           "opportunity").fields] + ["region", "~notes"]), st.text(max_size=8) | st.just("55")),
       st.booleans())
def test_a_listing_encodes_each_record_exactly_as_its_json_object(
    values: dict[str, str], edited: bool
) -> None:
    """`list --json` encodes a Struct made from a row where it can; the bytes are those of the
    record's JSON object, whatever the record holds (unknown fields, bad numbers, no created)."""
    rtype = get_registry().record_type("opportunity")
    record = Record("opportunity", str(uuid.uuid4()), dict(values), Dot(3, "r", 1_767_600_000_000))
    if edited:
        record.field_dots["stage"] = Dot(4, "r", 1_767_600_060_000)
    to_json = views.RecordJson(rtype)
    encode = msgspec.json.encode
    listed = to_json.objects(LiveColumns.of_records([record]))[0]
    assert encode(listed) == encode(to_json(record))
    assert json.loads(encode(listed)) == to_json(record)


def test_an_edit_waits_for_a_sync_of_the_same_file_then_says_why(tmp_path, monkeypatch):
    """Two processes never both read-modify-write one file: the second waits, then gives up
    with one line, and the file is as the first left it."""
    import subprocess
    import sys

    from salesmgr import storage

    path = tmp_path / "busy.smp"
    assert CliRunner().invoke(cli, ["init", str(path)]).exit_code == 0
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom salesmgr import storage\n"
         f"with storage.exclusive({str(path)!r}):\n"
         "    print('held', flush=True)\n    time.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(storage, "LOCK_WAIT", 0.3)
        before = path.read_bytes()
        result = CliRunner().invoke(cli, ["add", str(path), "--company", "A", "--title", "B"])
        assert result.exit_code != 0
        assert "in use by another salesmgr process" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert path.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    result = CliRunner().invoke(cli, ["add", str(path), "--company", "A", "--title", "B"])
    assert result.exit_code == 0


def test_two_threads_of_one_process_also_take_turns_on_a_file(tmp_path):
    """The emulator serves in a thread: an edit from another thread waits for its session."""
    import threading
    import time

    from salesmgr import storage

    path = tmp_path / "shared.smp"
    order: list[str] = []
    held = threading.Event()

    def session() -> None:
        with storage.exclusive(path):
            held.set()
            time.sleep(0.3)
            order.append("session done")

    worker = threading.Thread(target=session)
    worker.start()
    held.wait(5)
    with storage.exclusive(path), storage.exclusive(path):  # re-entrant in its own thread
        order.append("edit")
    worker.join()
    assert order == ["session done", "edit"]
