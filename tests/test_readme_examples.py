"""README.md's example of real data in and out runs, line by line, as a user would type it, and
leaves what the README says it does."""

from __future__ import annotations

import csv
import io
import re
import shlex
from pathlib import Path

import icalendar
import pytest
import vobject
from helpers import salesmgr

from salesmgr import storage

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
MARKER = "<!-- README example: runs in tests/test_readme_examples.py -->"


def example_lines() -> list[list[str]]:
    block = re.search(re.escape(MARKER) + r"\n```sh\n(.*?)```", README, re.DOTALL)
    assert block is not None, "the README example block is missing"
    lines = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [words for words in lines if words]


def salesforce_report(path: Path) -> None:
    """A Salesforce opportunities report as Excel saves it: BOM, quoted, US amounts and dates."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerows([
        ["Opportunity Owner", "Account Name", "Opportunity Name", "Stage", "Amount",
         "Probability (%)", "Close Date", "Next Step", "Opportunity ID"],
        ["ana", "Acme, Inc.", "Servers", "Negotiation/Review", "$30,000.50", "", "1/15/2027",
         "Send contract", "0065g00000AbCdEAAZ"],
        ["ben", "Zürich Versicherung", "Desks", "Closed Won", "$5,000.00", "100%", "11/30/2026",
         "", "0065g00000AbCdFAAZ"],
    ])
    path.write_bytes(b"\xef\xbb\xbf" + buffer.getvalue().encode("utf-8"))


def test_every_line_of_the_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    salesforce_report(tmp_path / "salesforce-report.csv")
    outputs = []
    for words in example_lines():
        assert words[0] == "salesmgr"
        result = salesmgr(*words[1:])
        assert result.exit_code == 0, f"{shlex.join(words)}:\n{result.output}"
        outputs.append(result.stdout)
    assert len(outputs) == 11

    pipeline = storage.load(tmp_path / "desk.smp")
    assert pipeline.locale == "de_DE"
    deals = {r.values["company"]: r.values for r in pipeline.live("opportunity")}
    assert set(deals) == {"Müller GmbH", "Acme, Inc.", "Zürich Versicherung"}
    assert (deals["Müller GmbH"]["value"], deals["Müller GmbH"]["probability"],
            deals["Müller GmbH"]["close_date"]) == ("12000.00", "60", "2026-12-31")
    assert (deals["Acme, Inc."]["value"], deals["Acme, Inc."]["currency"],
            deals["Acme, Inc."]["stage"]) == ("30000.50", "USD", "Negotiation")
    # The dry run said what the import then did; the untouched export re-imports as no change.
    assert outputs[2].splitlines()[-1] == (
        "dry run: 2 added, 0 updated, 0 unchanged, 0 refused; nothing changed")
    assert outputs[5].strip().endswith("0 added, 0 updated, 3 unchanged")
    # The forecast never adds euros to dollars: one total line per currency.
    totals = [line for line in outputs[6].splitlines() if line.startswith("total\t")]
    assert totals == ["total\tEUR\t1\t12000.00\t7200.00", "total\tUSD\t2\t35000.50\t27500.38"]
    assert outputs[8].splitlines()[1].split("\t")[1] == "Müller GmbH"
    assert len(icalendar.Calendar.from_ical((tmp_path / "next-actions.ics").read_bytes())
               .walk("VEVENT")) == 1
    [card] = vobject.readComponents((tmp_path / "contacts.vcf").read_text())
    assert (card.fn.value, card.org.value) == ("Jörg Müller", ["Müller GmbH"])
