"""Import profiles for the exports of the CRMs people leave: Salesforce, HubSpot, Pipedrive,
Zoho.  Registered through the same hook a third party's profile would use.

Column names are those of each CRM's standard opportunity/deal export in English; stage names
are each CRM's default sales pipeline.  A customised pipeline or a translated export is
described with a mapping file (``salesmgr import --mapping FILE``).
"""

from __future__ import annotations

from collections.abc import Callable

from salesmgr.exchange.profiles import EXTERNAL_ID, ImportProfile
from salesmgr.plugin.hookspecs import hookimpl

SALESFORCE = ImportProfile(
    name="salesforce",
    title="Salesforce opportunities report or Data Export",
    columns={
        "Opportunity ID": EXTERNAL_ID,
        "Opportunity Name": "title",
        "Account Name": "company",
        "Contact Name": "contact",
        "Amount": "value",
        "Opportunity Currency": "currency",
        "Stage": "stage",
        "Probability (%)": "probability",
        "Close Date": "close_date",
        "Next Step": "next_action",
        "Opportunity Owner": "owner",
        "Description": "notes",
    },
    stages={
        "Prospecting": "Lead",
        "Qualification": "Qualified",
        "Needs Analysis": "Qualified",
        "Value Proposition": "Qualified",
        "Id. Decision Makers": "Qualified",
        "Perception Analysis": "Qualified",
        "Proposal/Price Quote": "Proposal",
        "Negotiation/Review": "Negotiation",
        "Closed Won": "Won",
        "Closed Lost": "Lost",
    },
    probability="percent",
    signature=frozenset({"Opportunity Name", "Account Name", "Stage"}),
)

HUBSPOT = ImportProfile(
    name="hubspot",
    title="HubSpot deals export",
    columns={
        "Record ID": EXTERNAL_ID,
        "Deal Name": "title",
        "Associated Company": "company",
        "Associated Contact": "contact",
        "Amount": "value",
        "Currency": "currency",
        "Deal Stage": "stage",
        "Deal probability": "probability",
        "Close Date": "close_date",
        "Next step": "next_action",
        "Deal owner": "owner",
        "Deal Description": "notes",
    },
    stages={
        "Appointment Scheduled": "Lead",
        "Qualified To Buy": "Qualified",
        "Presentation Scheduled": "Qualified",
        "Decision Maker Bought-In": "Proposal",
        "Contract Sent": "Negotiation",
        "Closed Won": "Won",
        "Closed Lost": "Lost",
    },
    probability="fraction",
    signature=frozenset({"Record ID", "Deal Name", "Deal Stage"}),
)

PIPEDRIVE = ImportProfile(
    name="pipedrive",
    title="Pipedrive deals export",
    columns={
        "Deal - ID": EXTERNAL_ID,
        "Deal - Title": "title",
        "Deal - Organization": "company",
        "Deal - Contact person": "contact",
        "Deal - Value": "value",
        "Deal - Currency": "currency",
        "Deal - Stage": "stage",
        "Deal - Probability": "probability",
        "Deal - Expected close date": "close_date",
        "Deal - Next activity date": "next_action_date",
        "Deal - Owner": "owner",
    },
    stages={
        "Lead In": "Lead",
        "Contact Made": "Qualified",
        "Needs Defined": "Qualified",
        "Demo Scheduled": "Qualified",
        "Proposal Made": "Proposal",
        "Negotiations Started": "Negotiation",
    },
    probability="percent",
    # A won or lost deal keeps the stage it was in; its status says how it ended.
    status_column="Deal - Status",
    statuses={"won": "Won", "lost": "Lost"},
    signature=frozenset({"Deal - Title", "Deal - Stage"}),
)

ZOHO = ImportProfile(
    name="zoho",
    title="Zoho CRM deals export",
    columns={
        "Record Id": EXTERNAL_ID,
        "Deal Name": "title",
        "Account Name": "company",
        "Contact Name": "contact",
        "Amount": "value",
        "Currency": "currency",
        "Stage": "stage",
        "Probability (%)": "probability",
        "Closing Date": "close_date",
        "Next Step": "next_action",
        "Deal Owner": "owner",
        "Description": "notes",
    },
    stages={
        "Qualification": "Qualified",
        "Needs Analysis": "Qualified",
        "Value Proposition": "Qualified",
        "Identify Decision Makers": "Qualified",
        "Proposal/Price Quote": "Proposal",
        "Negotiation/Review": "Negotiation",
        "Closed Won": "Won",
        "Closed Lost": "Lost",
        "Closed-Lost to Competition": "Lost",
    },
    probability="percent",
    signature=frozenset({"Deal Name", "Closing Date", "Stage"}),
)


@hookimpl
def salesmgr_register_import_profiles(register: Callable[[ImportProfile], None]) -> None:
    for profile in (SALESFORCE, HUBSPOT, PIPEDRIVE, ZOHO):
        register(profile)
