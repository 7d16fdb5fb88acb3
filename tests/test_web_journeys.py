"""The web pages in a real browser: headless Chromium (Debian's ``chromium``) driven by
Playwright through the journeys a salesperson makes, each checked against the pipeline as its
store holds it: creating a deal, moving it on the board, logging a call and importing a CSV run
on a pipeline file, a SQLite database and a PostgreSQL server (`conftest.address`).

In CI (CI=true) these fail when Chromium cannot start; elsewhere they are skipped.  Every
journey saves screenshots; ``SALESMGR_SCREENSHOTS=docs/web`` puts them where docs/web.md
shows them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Addresses
from helpers import one_error_line, salesmgr
from webserver import launch_chromium, screenshot_folder, serving

from salesmgr import storage
from salesmgr.model.pipeline import Pipeline
from salesmgr.plugin.manager import get_registry
from salesmgr.reports import forecast, money_2dp

if os.environ.get("CI"):  # CI installs the test extra: a missing playwright fails, never skips
    import playwright.sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api")

TODAY = date.today()
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_folder(tmp_path_factory)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda message: message.type == "error"
           and not message.text.startswith("Failed to load resource")  # a 400 page, say
           and errors.append(message.text))
    tab.on("response", lambda response: "/static/" in response.url and not response.ok
           and errors.append(f"{response.status} {response.url}"))
    tab.on("dialog", lambda dialog: (errors.append(f"dialog: {dialog.message}"),
                                     dialog.accept()))
    yield tab
    context.close()
    assert errors == [], "a page failed to load an asset, raised a script error or opened a dialog"


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


DEALS = [
    ("Acme Logistics", "Fleet renewal", "Proposal", "48000", "EUR", "60", "Send revised quote", -2),
    ("Müller GmbH", "Warehouse scanners", "Negotiation", "23500", "EUR", "75", "Call Jo", 1),
    ("Nordwind AS", "Cold-chain sensors", "Lead", "9000", "EUR", "10", "Intro call", 3),
    ("Bright & Co", "Office chairs", "Qualified", "6400", "USD", "30", "Demo on site", 5),
    ("Kestrel Air", "Hangar lighting", "Won", "31000", "EUR", "100", "", 0),
    ("Harbor Foods", "Label printers", "Lead", "4200", "USD", "15", "Find the buyer", -5),
    ("Orbital Labs", "Clean-room carts", "Proposal", "15750", "EUR", "50", "Follow up", 2),
    ("Pine & Oak", "Showroom fit-out", "Lost", "12000", "EUR", "0", "", 0),
]


def sample(address: str) -> dict[str, str]:
    """A small pipeline with deals in every stage, stored at ``address`` (a file, or a slot of a
    SQLite or PostgreSQL database); returns company -> id."""
    pipeline = Pipeline.create("EMEA Q4", "ana", "EUR")
    rtype = get_registry().record_type("opportunity")
    ids = {}
    for company, title, stage, value, currency, probability, action, due in DEALS:
        fields = {"company": company, "title": title, "stage": stage, "value": value,
                  "currency": currency, "probability": probability, "close_date": day(30)}
        if action:
            fields |= {"next_action": action, "next_action_date": day(due)}
        record, _ = pipeline.add(rtype, fields)
        ids[company] = record.id
    storage.create_pipeline(pipeline, address)
    return ids


def sample_pipeline(folder: Path) -> tuple[Path, dict[str, str]]:
    """`sample` in a pipeline file; returns its path and company -> id."""
    path = folder / "emea.smp"
    return path, sample(str(path))


def record(address: str | Path, record_id: str) -> dict[str, str]:
    return storage.open_pipeline(address).records[record_id].values


# -- the journeys -----------------------------------------------------------------------------


def test_create_an_opportunity_checked_as_the_command_line_checks_it(
    page: Any, address: Addresses, shots: Path
) -> None:
    path = address("emea")  # a file, or a pipeline in a SQLite or PostgreSQL database
    sample(path)
    before = storage.version_of(path)
    cli = salesmgr("add", path, "--company", "Zephyr", "--title", "Kiosks", "--probability", "140")
    cli_error = one_error_line(cli).removeprefix("salesmgr: ")
    with serving(path) as base:
        page.goto(base + "/")
        page.get_by_role("link", name="+ New deal").click()
        page.get_by_label("Company").fill("Zephyr Retail")
        page.get_by_label("Title").fill("Self-service kiosks")
        page.get_by_label("Stage").select_option("Qualified")
        page.get_by_label("Value").fill("18,250.50")
        page.get_by_label("Probability").fill("140")
        page.get_by_label("Next action", exact=True).fill("Book the demo")
        page.get_by_label("Next action date").fill(day(4))
        page.get_by_role("button", name="Add deal").click()
        assert page.get_by_role("alert").inner_text() == cli_error
        assert storage.version_of(path) == before  # refused: nothing written, as on the CLI
        page.get_by_label("Probability").fill("40")
        page.get_by_role("button", name="Add deal").click()
        page.get_by_text("Added Zephyr Retail: Self-service kiosks").wait_for()
        page.screenshot(path=shots / "opportunity.png", full_page=True)
        record_id = page.url.rsplit("/", 1)[1]
    values = record(path, record_id)
    assert (values["company"], values["stage"], values["value"], values["probability"]) == (
        "Zephyr Retail", "Qualified", "18250.50", "40")
    assert (values["currency"], values["owner"]) == ("EUR", "ana")  # the pipeline's defaults


def test_move_a_deal_on_the_board_in_one_action(
    page: Any, address: Addresses, shots: Path
) -> None:
    path = address("emea")
    ids = sample(path)
    acme = ids["Acme Logistics"]
    card = f"[data-card='{acme}']"
    with serving(path) as base:
        page.goto(base + "/")
        # A busy machine runs htmx's timers late; here, always late.  The board put in place
        # after a move must take the next move at once all the same.
        page.evaluate("htmx.config.defaultSettleDelay = 2000")
        page.locator(f".column[data-stage='Proposal'] {card}").wait_for()
        assert "Overdue" in page.locator(card).inner_text()  # its next action was 2 days ago
        page.screenshot(path=shots / "board.png", full_page=True)
        page.drag_and_drop(card, ".column[data-stage='Negotiation']")
        page.locator(f".column[data-stage='Negotiation'] {card}").wait_for()
        assert record(path, acme)["stage"] == "Negotiation"
        # The keyboard's way: the card's stage list, one choice.
        page.locator(f"{card} select").select_option("Won")
        page.locator(f".column[data-stage='Won'] {card}").wait_for()
        assert record(path, acme)["stage"] == "Won"
        won = page.locator(".column[data-stage='Won'] header").inner_text()
        assert "2" in won and "79,000.00" in won  # Kestrel's 31,000 and Acme's 48,000


def test_log_a_call_on_a_deal(page: Any, address: Addresses, shots: Path) -> None:
    path = address("emea")
    ids = sample(path)
    deal = ids["Müller GmbH"]
    with serving(path) as base:
        page.goto(f"{base}/opportunities/{deal}")
        page.get_by_label("call").check()
        page.get_by_label("Summary").fill("Jo wants the scanners before Christmas.\nSend specs.")
        page.get_by_role("button", name="Log it").click()
        page.get_by_text("Logged a call").wait_for()
        assert "Jo wants the scanners" in page.locator(".timeline").inner_text()
        page.screenshot(path=shots / "activity.png", full_page=True)
    [activity] = storage.open_pipeline(path).activities_of(deal)
    assert activity.values["kind"] == "call"
    assert activity.values["summary"] == "Jo wants the scanners before Christmas.\nSend specs."


def conflicted_pipeline(folder: Path) -> tuple[Path, str]:
    """A desktop file whose merge with a device copy logged conflicts on one deal's phone and
    stage; returns the desktop file and the deal's id."""
    desk, _ = sample_pipeline(folder)
    device = folder / "device.smp"
    shutil.copyfile(desk, device)  # a copy becomes a replica of its own
    deal = next(r.id for r in storage.load(desk).live("opportunity")
                if r.values["company"] == "Orbital Labs")
    assert salesmgr("edit", desk, deal, "--phone", "+44 20 7946 0001",
                    "--stage", "Negotiation").exit_code == 0
    assert salesmgr("edit", device, deal, "--phone", "+44 20 7946 0999",
                    "--stage", "Won").exit_code == 0
    assert salesmgr("merge", desk, device).exit_code == 0
    return desk, deal


def test_resolve_conflicts_side_by_side(page: Any, tmp_path: Path, shots: Path) -> None:
    desk, deal = conflicted_pipeline(tmp_path)
    with serving(desk) as base:
        page.goto(base + "/")
        page.get_by_role("link", name="Conflicts").click()
        phone = page.locator("article.conflict", has=page.locator(".field-name", has_text="phone"))
        stage = page.locator("article.conflict", has=page.locator(".field-name", has_text="stage"))
        assert "+44 20 7946 0001" in phone.locator(".side").nth(0).inner_text()
        assert "+44 20 7946 0999" in phone.locator(".side").nth(1).inner_text()
        page.screenshot(path=shots / "conflicts.png", full_page=True)
        loser = "device" if "won" in stage.locator(".side").nth(0).inner_text() else "desktop"
        stage.get_by_role("button", name=f"Take the {loser}'s value").click()
        page.get_by_text("resolved").first.wait_for()
        phone.get_by_label("Or type the value to use").fill("+44 20 7946 0555")
        phone.get_by_role("button", name="Use this value").click()
        page.get_by_text("No conflicts to review.").wait_for()
    values = record(desk, deal)
    assert values["stage"] == {"device": "Won", "desktop": "Negotiation"}[loser]
    assert values["phone"] == "+44 20 7946 0555"
    listed = salesmgr("conflicts", desk, "--all", "--json")
    settled = {c["field"]: c for c in __import__("json").loads(listed.stdout)}
    assert settled["phone"]["status"] == settled["stage"]["status"] == "resolved"
    assert settled["phone"]["resolution"] == "+44 20 7946 0555"
    assert settled["stage"]["resolution"] == loser


CSV = (
    "company,title,stage,value,currency,probability,close_date\n"
    f"Ærø Færger,Ferry tablets,Lead,7300,DKK,20,{day(40)}\n"
    f"\"Smith, Jones & Co\",Archive scanners,Qualified,12000.50,GBP,35,{day(60)}\n"
    f"Loire Vins,Cellar sensors,Proposal,5100,EUR,50,{day(20)}\n"
)


def test_import_a_csv_after_a_preview(
    page: Any, address: Addresses, tmp_path: Path, shots: Path
) -> None:
    path = address("emea")
    sample(path)
    good, bad = tmp_path / "leads.csv", tmp_path / "broken.csv"
    good.write_text(CSV, encoding="utf-8")
    bad.write_text(CSV.replace(",35,", ",135,"), encoding="utf-8")
    before = storage.version_of(path)
    with serving(path) as base:
        page.goto(base + "/import")
        page.get_by_label("CSV file").set_input_files(str(bad))
        page.get_by_role("button", name="Preview").click()
        assert "1 refused" in page.locator(".lead").inner_text()
        assert "135 is not between 0 and 100" in page.locator("tr.bad").inner_text()
        assert page.get_by_role("button", name="Import").count() == 0
        page.goto(base + "/import")
        page.get_by_label("CSV file").set_input_files(str(good))
        page.get_by_role("button", name="Preview").click()
        assert "3 added, 0 updated, 0 unchanged" in page.locator(".lead").inner_text()
        page.screenshot(path=shots / "import-preview.png", full_page=True)
        assert storage.version_of(path) == before  # a preview writes nothing
        page.get_by_role("button", name="Import: 3 added").click()
        page.get_by_text("Imported leads.csv: 3 added").wait_for()
        page.get_by_label("Search").fill("smith jones")
        page.locator(".summary", has_text="1–1 of 1").wait_for()
        assert page.get_by_role("link", name="Smith, Jones & Co").count() == 1
        page.screenshot(path=shots / "list.png", full_page=True)
    companies = {r.values["company"]: r.values
                 for r in storage.open_pipeline(path).live("opportunity")}
    assert companies["Smith, Jones & Co"]["value"] == "12000.50"
    assert companies["Ærø Færger"]["currency"] == "DKK"
    assert len(companies) == len(DEALS) + 3


def test_a_search_typed_before_the_scripts_ran_is_still_searched(
    page: Any, tmp_path: Path
) -> None:
    path, _ = sample_pipeline(tmp_path)
    held: list[Any] = []
    # htmx arrives only when the test says so
    page.route("**/static/htmx.min.js", lambda route: held.append(route))
    with serving(path) as base:
        page.goto(base + "/list", wait_until="commit")
        page.get_by_label("Search").fill("müller")  # typed while htmx is still on its way
        for _ in range(750):  # until the request for htmx reaches the route (15 s at most)
            if held:
                break
            page.wait_for_timeout(20)
        assert held, "the page never asked for htmx"
        held[0].continue_()
        page.locator(".summary", has_text="1–1 of 1").wait_for()
        assert page.get_by_role("link", name="Müller GmbH").count() == 1
        assert "q=m%C3%BCller" in page.url


def test_sync_with_the_emulated_device_and_read_the_report(
    page: Any, tmp_path: Path, shots: Path, emulated_device: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, _ = sample_pipeline(tmp_path)
    device = emulated_device("tcp")
    (tmp_path / "salesmgr.toml").write_text(f'[sync]\nurl = "{device.url}"\n')
    monkeypatch.setenv("SALESMGR_SECRET", device.secret)
    with serving(path) as base:
        page.goto(base + "/sync")
        assert device.url in page.locator(".facts").inner_text()
        assert device.secret not in page.content()  # the secret is never shown
        page.screenshot(path=shots / "sync.png", full_page=True)
        page.get_by_role("button", name="Load the device").click()
        page.get_by_role("heading", name="The device is loaded").wait_for()
        on_device = device.pipeline()
        assert on_device is not None and len(list(on_device.live("opportunity"))) == len(DEALS)

        # A day on the road: the salesperson adds a deal on the device.
        added = salesmgr("add", device.device_file, "--company", "Fjord Fisk",
                         "--title", "Ice machines", "--value", "8800")
        assert added.exit_code == 0, added.output
        page.goto(base + "/sync")
        page.get_by_role("button", name="Preview (dry run)").click()
        page.get_by_role("heading", name="Preview: what a sync would do").wait_for()
        assert "Fjord Fisk" not in {r.values["company"] for r in storage.load(path).live()}
        page.goto(base + "/sync")
        page.get_by_role("button", name="Sync", exact=True).click()
        report = page.locator("[data-report]")
        report.wait_for()
        assert "Merge report" in report.inner_text()
        desktop_row = report.locator("tr", has=page.locator("th", has_text="Desktop"))
        assert desktop_row.locator("td").nth(0).inner_text() == "1"  # one deal added here
        page.screenshot(path=shots / "sync-report.png", full_page=True)
    assert "Fjord Fisk" in {r.values.get("company") for r in storage.load(path).live()}


def test_forecast_and_agenda_from_the_same_figures_as_the_commands(
    page: Any, tmp_path: Path, shots: Path
) -> None:
    path, _ = sample_pipeline(tmp_path)
    expected = forecast(storage.load(path), "stage")
    with serving(path) as base:
        page.goto(base + "/")
        page.get_by_role("link", name="Forecast").click()
        charts = page.locator(".chart-box")
        assert charts.count() == 2  # EUR and USD: never added together
        for total in expected.totals:
            box = page.locator(".chart-box", has=page.get_by_role("heading", name=total.currency))
            assert box.locator("svg.chart rect").count() == 2 * len(
                [r for r in expected.rows if r.currency == total.currency])
            footer = box.locator("tfoot").inner_text()
            assert f"{money_2dp(total.value):,.2f}" in footer
            assert f"{money_2dp(total.weighted):,.2f}" in footer
        page.screenshot(path=shots / "forecast.png", full_page=True)
        page.get_by_role("link", name="By month of close date").click()
        page.get_by_role("heading", name="Forecast by month of close date").wait_for()
        page.get_by_role("link", name="Agenda").click()
        overdue = page.locator(".agenda-group", has=page.get_by_role("heading", name="Overdue"))
        assert overdue.locator("li").all_inner_texts() == [
            f"{day(-5)} Harbor Foods Label printers — Find the buyer · ana",
            f"{day(-2)} Acme Logistics Fleet renewal — Send revised quote · ana",
        ]
        page.screenshot(path=shots / "agenda.png", full_page=True)


def test_a_sync_shows_its_progress_live_and_then_why_it_failed(
    page: Any, tmp_path: Path, emulated_device: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, _ = sample_pipeline(tmp_path)
    # The device stops answering after its first words; the desktop gives up after 3 s.
    device = emulated_device("tcp", faults=["stall-after=120"])
    (tmp_path / "salesmgr.toml").write_text(f'[sync]\nurl = "{device.url}"\ntimeout = 3\n')
    monkeypatch.setenv("SALESMGR_SECRET", device.secret)
    with serving(path) as base:
        page.goto(base + "/sync")
        page.get_by_role("button", name="Load the device").click()
        running = page.locator("#progress .running")
        running.wait_for()
        assert "records received" in running.inner_text()
        first = running.inner_text()
        page.wait_for_function(
            "text => { const r = document.querySelector('#progress .running');"
            " return r && r.innerText !== text; }", arg=first)  # it moves on its own
        page.get_by_role("alert").wait_for(timeout=20_000)
        assert page.locator("#progress[aria-busy]").count() == 0  # polling has stopped


def test_the_board_fits_a_phone_and_every_field_has_a_label(
    browser: Any, tmp_path: Path, shots: Path
) -> None:
    path, ids = sample_pipeline(tmp_path)
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    tab = context.new_page()
    try:
        with serving(path) as base:
            for address in ("/", "/list", f"/opportunities/{ids['Acme Logistics']}", "/forecast",
                            "/agenda", "/conflicts", "/sync", "/import", "/opportunities/new"):
                tab.goto(base + address)
                width = tab.evaluate("document.documentElement.scrollWidth")
                assert width <= PHONE["width"], f"{address} is {width}px wide on a phone"
                unlabelled = tab.evaluate(
                    "[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]"
                    ".filter(e => !e.labels || e.labels.length === 0).map(e => e.name)")
                assert unlabelled == [], f"{address}: fields without a label"
            tab.goto(base + "/")
            tab.screenshot(path=shots / "phone-board.png")
            # The keyboard: the first Tab reaches "Skip to content", which lands on the page.
            tab.keyboard.press("Tab")
            assert tab.evaluate("document.activeElement.textContent") == "Skip to content"
    finally:
        context.close()
