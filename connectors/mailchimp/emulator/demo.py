"""The demo account: an audience of trading-partner contacts with Partnerlink's merge fields, two
customer journeys, a classic automation and three sent campaigns with reports. Deterministic."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import MailchimpEmulator

DEMO_LIST_ID = "demo0aud1e"
DEMO_MERGE_FIELDS = (
    ("BUID", "Business unit ID", "text"),
    ("PTYPE", "Partner type", "text"),
    ("REGION", "Region", "text"),
    ("COUNTRY", "Country", "text"),
    ("PRODLINES", "Product lines", "text"),
    ("TIER", "Partner tier", "text"),
    ("OBSTATUS", "Onboarding status", "text"),
    ("OPENISSUES", "Open issues", "number"),
    ("PMGR", "Partner manager", "text"),
)
_PARTNERS = (
    ("Acme Freight", "carrier", "EMEA", "DE", "Logistics", "strategic"),
    ("Borealis Components", "supplier", "EMEA", "SE", "Electronics, Cables", "preferred"),
    ("Cascade Distribution", "distributor", "AMER", "US", "Consumer goods", "strategic"),
    ("Delta 3PL Services", "3pl", "AMER", "MX", "Warehousing", "standard"),
    ("Everest Retail", "customer", "APAC", "IN", "Consumer goods", "preferred"),
    ("Fjord Packaging", "supplier", "EMEA", "NO", "Packaging", "standard"),
    ("Granite Chemicals", "supplier", "AMER", "CA", "Chemicals", "preferred"),
    ("Harbor Line Shipping", "carrier", "APAC", "SG", "Ocean freight", "strategic"),
    ("Ibis Textiles", "supplier", "APAC", "VN", "Textiles", "standard"),
    ("Juniper Wholesale", "distributor", "EMEA", "FR", "Food, Beverages", "preferred"),
    ("Kestrel Electronics", "supplier", "APAC", "TW", "Electronics", "strategic"),
    ("Lumen Pharma Logistics", "3pl", "EMEA", "NL", "Cold chain", "preferred"),
)
_CONTACTS = (("Alex", "Morgan", "logistics"), ("Sam", "Rivera", "edi"), ("Kim", "Larsen", "accounts"))
JOURNEYS = (
    (
        4101,
        "Partner onboarding",
        {41011: "Welcome", 41012: "Setup instructions", 41013: "Compliance requirements", 41014: "Key contacts"},
    ),
    (4102, "Certification renewal", {41021: "First reminder", 41022: "Final reminder", 41023: "Escalation"}),
)
AUTOMATION = (
    "5a1e0b7c3d",
    "Webinar follow-up",
    {"9f8e7d6c5b": "Thanks for joining", "9f8e7d6c5c": "Sorry we missed you"},
)
_CAMPAIGNS = (
    (21, "Q3 partner newsletter", "Partner news: Q3 highlights", "posts/q3-newsletter"),
    (10, "Trading terms 2025", "Updated trading terms take effect next month", "documents/trading-terms-2025"),
    (3, "EDI onboarding webinar", "Invitation: EDI onboarding webinar", "events/edi-onboarding-webinar"),
)


def seed_demo(emulator: MailchimpEmulator, *, list_id: str = "") -> dict[str, Any]:
    """Create the demo data (idempotent for the audience and merge fields) and return the ids created."""
    state = emulator.state
    list_id = list_id or (state.default_list_ids[0] if state.default_list_ids else DEMO_LIST_ID)
    with state.lock:
        audience = state.create_audience(list_id=list_id, name="Partnerlink trading partners")
        for tag, name, kind in DEMO_MERGE_FIELDS:
            if tag not in audience.merge_fields:
                state.add_merge_field(list_id=list_id, body={"tag": tag, "name": name, "type": kind})
        for number, (company, ptype, region, country, lines, tier) in enumerate(_PARTNERS, start=1):
            domain = company.lower().replace(" ", "-") + ".example"
            for first, last, role in _CONTACTS[: 1 + number % 3]:
                emulator.add_member(
                    list_id=list_id,
                    email=f"{role}@{domain}",
                    merge_fields={
                        "FNAME": first,
                        "LNAME": last,
                        "BUID": f"BU{number:04d}",
                        "PTYPE": ptype,
                        "REGION": region,
                        "COUNTRY": country,
                        "PRODLINES": lines,
                        "TIER": tier,
                        "OBSTATUS": "active" if number % 4 else "onboarding",
                        "OPENISSUES": number % 5,
                        "PMGR": "pat.manager@partnerlink.example",
                    },
                )
        journeys = [
            emulator.add_journey(list_id=list_id, name=name, steps=steps, journey_id=journey_id)
            for journey_id, name, steps in JOURNEYS
        ]
        workflow_id, title, emails = AUTOMATION
        automation = emulator.add_automation(list_id=list_id, title=title, emails=emails, workflow_id=workflow_id)
        campaigns = []
        now = state.now()
        for days_ago, title, subject, link in _CAMPAIGNS:
            campaign = state.create_campaign(
                body={
                    "type": "regular",
                    "recipients": {"list_id": list_id},
                    "settings": {
                        "title": title,
                        "subject_line": subject,
                        "from_name": "Partnerlink",
                        "reply_to": "partners@partnerlink.example",
                    },
                }
            )
            url = f"https://community.partnerlink.example/{link}"
            campaign.html = (
                f'<h1>{subject}</h1><p>Read it in the partner community: <a href="{url}">{url}</a></p>'
                '<p><a href="https://community.partnerlink.example/help">Help centre</a></p>'
            )
            campaign.plain_text = f"{subject}\n{url}"
            emulator.send_campaign_now(campaign_id=campaign.id, send_time=now - dt.timedelta(days=days_ago))
            campaigns.append({"id": campaign.id, "title": title})
    return {"list_id": list_id, "journeys": journeys, "automation": automation, "campaigns": campaigns}
