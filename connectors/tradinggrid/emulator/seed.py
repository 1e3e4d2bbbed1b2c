"""A believable community around a list of partners: contacts, certifications that expire, contract renewals and
compliance reviews, a history of issues, and Lens traffic with a few failures.

`seed(state, partners)` takes partner profiles in CONTRACT.md's shape (plus `company_id`/`tg_company_id`,
`name`, optional `legal_name`, `trading_addresses`): the project's demo-data generator passes the same partners it
puts in the database. Whatever a profile already has is kept; only what is missing is generated. Everything is
drawn from a seeded random generator, so the same input gives the same community (dates are relative to the
state's clock)."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from .state import EmulatorState, iso

PRODUCT_LINES = (
    "Apparel", "Footwear", "Home goods", "Electronics", "Grocery", "Frozen foods", "Health & beauty", "Toys",
    "Automotive parts", "Office supplies", "Garden", "Pet supplies",
)
COUNTRIES = {
    "na": ("US", "US", "US", "CA", "MX"),
    "latam": ("BR", "AR", "CL", "CO"),
    "emea": ("DE", "GB", "FR", "NL", "IT", "ES", "PL"),
    "apac": ("JP", "CN", "IN", "AU", "SG", "KR"),
}
LOCALE = {
    "US": ("en", "America/Chicago", ".com"), "CA": ("en", "America/Toronto", ".ca"),
    "MX": ("es", "America/Mexico_City", ".mx"), "BR": ("pt-BR", "America/Sao_Paulo", ".com.br"),
    "AR": ("es", "America/Argentina/Buenos_Aires", ".com.ar"), "CL": ("es", "America/Santiago", ".cl"),
    "CO": ("es", "America/Bogota", ".co"), "DE": ("de", "Europe/Berlin", ".de"),
    "GB": ("en", "Europe/London", ".co.uk"), "FR": ("fr", "Europe/Paris", ".fr"),
    "NL": ("nl", "Europe/Amsterdam", ".nl"), "IT": ("it", "Europe/Rome", ".it"),
    "ES": ("es", "Europe/Madrid", ".es"), "PL": ("pl", "Europe/Warsaw", ".pl"),
    "JP": ("ja", "Asia/Tokyo", ".co.jp"), "CN": ("zh", "Asia/Shanghai", ".cn"),
    "IN": ("en", "Asia/Kolkata", ".in"), "AU": ("en", "Australia/Sydney", ".com.au"),
    "SG": ("en", "Asia/Singapore", ".sg"), "KR": ("ko", "Asia/Seoul", ".co.kr"),
}
CALLING_CODES = {"US": 1, "CA": 1, "MX": 52, "BR": 55, "AR": 54, "CL": 56, "CO": 57, "DE": 49, "GB": 44, "FR": 33,
                 "NL": 31, "IT": 39, "ES": 34, "PL": 48, "JP": 81, "CN": 86, "IN": 91, "AU": 61, "SG": 65, "KR": 82}
LEGAL_SUFFIX = {"US": "Inc.", "CA": "Ltd.", "GB": "Ltd", "DE": "GmbH", "FR": "SAS", "NL": "B.V.", "IT": "S.r.l.",
                "ES": "S.L.", "PL": "Sp. z o.o.", "BR": "Ltda.", "MX": "S.A. de C.V.", "JP": "K.K.",
                "AU": "Pty Ltd", "IN": "Pvt. Ltd.", "SG": "Pte. Ltd.", "KR": "Co., Ltd.", "CN": "Co., Ltd."}
CURRENCY = {"na": "USD", "latam": "USD", "emea": "EUR", "apac": "USD"}
FIRST_NAMES = ("Ana", "Ben", "Chloé", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kavya", "Liam",
               "Mei", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Victor", "Wen", "Yara")
LAST_NAMES = ("Abara", "Becker", "Castillo", "Dubois", "Eriksen", "Fischer", "García", "Hughes", "Ito", "Jansen",
              "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Rossi", "Schmidt", "Tanaka", "Walsh")
CERTIFICATIONS = (
    ("ISO 9001", "BSI"), ("ISO 14001", "TÜV SÜD"), ("C-TPAT", "U.S. Customs and Border Protection"),
    ("GS1 US Certified", "GS1 US"), ("SOC 2 Type II", "Deloitte"), ("FSC Chain of Custody", "FSC"),
    ("SQF", "SQFI"), ("AEO", "EU Customs"), ("SmartWay", "U.S. EPA"), ("EDI Certification", "OpenText"),
)
NAME_STEMS = ("Northwind", "Verona", "Contoso", "Fabrikam", "Tailspin", "Blue Yonder", "Litware", "Adventure",
              "Alpine", "Coho", "Wide World", "Proseware", "Lucerne", "Trey", "Woodgrove", "Humongous",
              "Fourth Coffee", "Wingtip", "Datum", "Relecloud", "Southridge", "Bellows", "Margie", "Lamna")
NAME_SUFFIX = {
    "supplier": ("Foods", "Apparel", "Components", "Packaging", "Textiles"),
    "distributor": ("Distribution", "Wholesale", "Supply"),
    "carrier": ("Freight", "Transport", "Lines"),
    "3pl": ("Fulfillment", "Warehousing", "Logistics"),
    "customer": ("Retail", "Stores", "Markets"),
    "reseller": ("Trading", "Resellers"),
}
ISSUE_MIX = {
    "supplier": ("asn_mismatch", "invoice_po_mismatch", "quality_claim", "edi_transaction_failure"),
    "distributor": ("asn_mismatch", "invoice_po_mismatch", "chargeback_dispute", "shipment_exception"),
    "carrier": ("shipment_exception", "shipment_exception", "edi_transaction_failure", "other"),
    "3pl": ("shipment_exception", "asn_mismatch", "edi_transaction_failure"),
    "customer": ("chargeback_dispute", "invoice_po_mismatch", "other"),
    "reseller": ("invoice_po_mismatch", "chargeback_dispute", "other"),
}
REASONS = {
    "shipment_exception": ("LATE_DELIVERY", "DAMAGED", "SHORT_SHIP", "MISSED_PICKUP"),
    "asn_mismatch": ("QTY_MISMATCH", "SSCC_MISSING", "ASN_LATE"),
    "invoice_po_mismatch": ("PRICE_VARIANCE", "QTY_VARIANCE", "PO_NOT_FOUND"),
    "chargeback_dispute": ("LABEL_NONCOMPLIANCE", "ROUTING_GUIDE", "ASN_NOT_RECEIVED"),
    "edi_transaction_failure": ("997_REJECTED", "MAPPING_ERROR", "ENVELOPE_ERROR"),
    "quality_claim": ("DEFECTIVE", "WRONG_ITEM"),
    "other": ("GENERAL",),
}
TITLES = {
    "shipment_exception": "Shipment {asn} delivered with exception {reason}",
    "asn_mismatch": "ASN {asn} does not match PO {po}",
    "invoice_po_mismatch": "Invoice {invoice} does not match PO {po}",
    "chargeback_dispute": "Chargeback on invoice {invoice} disputed",
    "edi_transaction_failure": "EDI document for PO {po} failed ({reason})",
    "quality_claim": "Quality claim on PO {po}",
    "other": "Question about PO {po}",
}
LENS_FAILURES = (
    {"status": "V", "errorcode": "X12-ISA-13", "errortype": "Validation",
     "externalerrormessage": "ISA13 interchange control number is not numeric"},
    {"status": "F", "errorcode": "AS2-DELIVERY", "errortype": "Delivery",
     "externalerrormessage": "Partner AS2 endpoint refused the connection"},
    {"status": "H", "errorcode": "HOLD-MAP", "errortype": "Processing",
     "externalerrormessage": "No active map for this document type; held for review"},
    {"fastatus": "R", "errorcode": "997-AK5-R", "errortype": "Acknowledgement",
     "externalerrormessage": "Functional acknowledgement rejected the transaction set"},
    {"fastatus": "E", "errorcode": "997-AK5-E", "errortype": "Acknowledgement",
     "externalerrormessage": "Accepted with errors: segment N1 has an invalid qualifier"},
    {"fastatus": "T", "errorcode": "FA-OVERDUE", "errortype": "Acknowledgement",
     "externalerrormessage": "No functional acknowledgement within 24 hours"},
)
EDI_TYPES = ("850", "856", "810", "855", "940", "945", "214")


def seed(
    state: EmulatorState,
    partners: Sequence[Mapping[str, Any]],
    *,
    random_seed: int = 0,
    issues_per_partner: tuple[int, int] = (0, 4),
    failed_transaction_share: float = 0.3,
    ok_transactions_per_partner: int = 3,
    with_users: bool = True,
) -> list[str]:
    """Add `partners` and a community around them; returns the BUIDs added (partners already there are skipped).
    Seeding adds data silently (no webhooks)."""
    rng = random.Random(random_seed)
    today = state.now().date()
    created = []
    for data in partners:
        profile = _complete_profile(dict(data), rng, today)
        if profile["company_id"] in state.partners:
            continue  # seeding twice adds nothing twice
        profile["trading_addresses"] = _free_addresses(state, profile["trading_addresses"])
        partner_created_at = state.now() - timedelta(days=rng.randint(30, 900))
        state.create_partner(profile, created_at=partner_created_at)
        company_id = profile["company_id"]
        created.append(company_id)
        for _ in range(rng.randint(*issues_per_partner)):
            _seed_issue(state, rng, profile)
        state.add_transactions(_ok_transactions(state, rng, profile, ok_transactions_per_partner))
        if rng.random() < failed_transaction_share:
            state.add_transactions(
                failed_transactions_for(state, partner_company_id=company_id, count=rng.randint(1, 2), rng=rng)
            )
    if with_users and not state.users:
        for first, last in (("Paula", "Manager"), ("Ravi", "Onboarding"), ("Sam", "Compliance")):
            state.create_user({
                "loginId": f"{first.lower()}.{last.lower()}@partnerlink.example",
                "firstName": first,
                "lastName": last,
                "contactInformation": {"email": f"{first.lower()}.{last.lower()}@partnerlink.example",
                                       "phoneNumber": "+1 519 555 0100"},
                "preferredLanguage": "en",
                "preferredTimezone": "America/Toronto",
            })
    return created


def demo_partners(*, count: int = 12, random_seed: int = 42) -> list[dict[str, Any]]:
    """A small deterministic set of partner profiles, for `--seed-demo` without the project's generator."""
    rng = random.Random(random_seed)
    partners = []
    used_names: set[str] = set()
    for index in range(count):
        partner_type = rng.choice(("supplier", "supplier", "distributor", "carrier", "3pl", "customer", "reseller"))
        name = ""
        while not name or name in used_names:
            name = f"{rng.choice(NAME_STEMS)} {rng.choice(NAME_SUFFIX[partner_type])}"
            if name in used_names and _names_used_up(partner_type, used_names):
                # Only len(NAME_STEMS) x suffixes names per type: number the rest instead of looping forever.
                name = f"{name} {index}"
        used_names.add(name)
        digits = 10_000_000 + index * 7_919 + rng.randint(0, 999)
        partners.append({
            "company_id": f"GC{digits:08d}{rng.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rng.randint(0, 9)}",
            "name": name,
            "partner_type": partner_type,
            "onboarding_status": rng.choice(("approved", "approved", "approved", "testing", "registered", "invited",
                                             "new")),
        })
    return partners


def _names_used_up(partner_type: str, used_names: set[str]) -> bool:
    return all(f"{stem} {suffix}" in used_names for stem in NAME_STEMS for suffix in NAME_SUFFIX[partner_type])


def seed_demo(state: EmulatorState, *, count: int = 12, random_seed: int = 42) -> list[str]:
    """`demo_partners` seeded with their community."""
    return seed(state, demo_partners(count=count, random_seed=random_seed), random_seed=random_seed)


def failed_transactions_for(
    state: EmulatorState,
    *,
    partner_company_id: str | None = None,
    count: int = 1,
    status: str | None = None,
    fastatus: str | None = None,
    editype: str | None = None,
    rng: random.Random | None = None,
) -> list[dict[str, Any]]:
    """Failed Lens transactions between us and a partner (a random one when not named). Not stored: pass the
    result to `state.add_transactions`."""
    rng = rng or random.Random(state.rng.random())
    with state.lock:
        if partner_company_id:
            partner = state._partner(partner_company_id)
        elif state.partners:
            partner = state.partners[rng.choice(sorted(state.partners))]
        else:
            partner = None
    transactions = []
    for _ in range(max(1, int(count))):
        failure = dict(rng.choice(LENS_FAILURES))
        if status or fastatus:
            failure = {"status": status or "C", "fastatus": fastatus or "", "errorcode": "INJECTED",
                       "errortype": "Injected", "externalerrormessage": "Failure injected through the control API"}
        transactions.append(_transaction(state, rng, partner, failure=failure, editype=editype,
                                         hours_ago=rng.uniform(0.1, 72)))
    return transactions


# --- Generators ------------------------------------------------------------------------------------


def _complete_profile(data: dict[str, Any], rng: random.Random, today: date) -> dict[str, Any]:
    company_id = str(data.pop("tg_company_id", None) or data.get("company_id") or "").strip().upper()
    data["company_id"] = company_id
    partner_type = data.setdefault("partner_type", rng.choice(tuple(NAME_SUFFIX)))
    name = data.setdefault("name", f"{rng.choice(NAME_STEMS)} {rng.choice(NAME_SUFFIX[partner_type])}")
    region = data.get("region") or _region_of(data.get("country_code")) or rng.choice(tuple(COUNTRIES))
    data["region"] = region
    country = (data.get("country_code") or rng.choice(COUNTRIES[region])).upper()
    data["country_code"] = country
    data.setdefault("legal_name", f"{name} {LEGAL_SUFFIX.get(country, 'Ltd.')}")
    slug = re.sub(r"[^A-Z0-9]", "", name.upper())[:12] or company_id
    if not data.get("trading_addresses"):
        digest = int(hashlib.sha256(company_id.encode()).hexdigest(), 16)
        data["trading_addresses"] = [f"ZZ:{slug}{digest % 10_000:04d}", f"01:{digest % 10**9:09d}"]
    data.setdefault("tier", rng.choices(("strategic", "preferred", "standard"), (1, 3, 6))[0])
    data.setdefault("onboarding_status", rng.choices(
        ("approved", "testing", "registered", "invited", "new", "suspended"), (12, 3, 2, 2, 1, 1))[0])
    if not data.get("product_lines"):
        data["product_lines"] = sorted(rng.sample(PRODUCT_LINES, rng.randint(1, 3)))
    if not data.get("contacts"):
        data["contacts"] = _contacts(rng, name, country)
    if not data.get("certifications"):
        data["certifications"] = _certifications(rng, today, company_id)
    if not data.get("contract_renewal_at"):
        data["contract_renewal_at"] = (today + timedelta(days=rng.randint(-10, 400))).isoformat()
    if not data.get("compliance_review_at"):
        data["compliance_review_at"] = (today + timedelta(days=rng.randint(5, 365))).isoformat()
    if not data.get("compliance_status"):
        expired = any(c.get("expires_at") and date.fromisoformat(str(c["expires_at"])[:10]) < today
                      for c in data["certifications"])
        data["compliance_status"] = "non_compliant" if expired else rng.choice(("compliant", "compliant",
                                                                                "review_due"))
    data.setdefault("custom", {})
    return data


def _free_addresses(state: EmulatorState, addresses: Sequence[str]) -> list[str]:
    """Generated addresses that collide with another partner's get a numeric suffix (addresses are unique)."""
    with state.lock:
        taken = {a for p in state.partners.values() for a in p["trading_addresses"]}
    free = []
    for address in addresses:
        candidate, n = str(address).strip().upper(), 1
        while candidate in taken or candidate in free:
            n += 1
            candidate = f"{str(address).strip().upper()[:33]}{n}"
        free.append(candidate)
    return free


def _region_of(country: Any) -> str | None:
    if not isinstance(country, str):
        return None
    return next((region for region, codes in COUNTRIES.items() if country.upper() in codes), None)


def _contacts(rng: random.Random, company_name: str, country: str) -> list[dict[str, Any]]:
    language, timezone, tld = LOCALE.get(country, ("en", "UTC", ".com"))
    domain = re.sub(r"[^a-z0-9]", "", company_name.lower())[:20] + tld
    roles = ["primary"] + rng.sample(("technical", "compliance", "finance", "logistics", "sales"), rng.randint(0, 3))
    contacts, used = [], set()
    for role in roles:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        local = _ascii(f"{first}.{last}".lower())
        if local in used:
            local = f"{local}.{role}"
        used.add(local)
        contacts.append({
            "email": f"{local}@{domain}",
            "first_name": first,
            "last_name": last,
            "role": role,
            "phone": f"+{CALLING_CODES.get(country, 1)} {rng.randint(100, 999)} {rng.randint(100, 999)} "
                     f"{rng.randint(1000, 9999)}",
            "language": language,
            "timezone": timezone,
        })
    return contacts


def _certifications(rng: random.Random, today: date, company_id: str) -> list[dict[str, Any]]:
    chosen = rng.sample(CERTIFICATIONS, rng.randint(1, 3))
    certifications = []
    for kind, issuer in chosen:
        # Some expired, some due within the reminder ladder's reach, most comfortably later.
        expires = today + timedelta(days=rng.choice((-20, 7, 14, 30, 45, 60, 90, 120, 200, 365, 540)))
        issued = expires - timedelta(days=rng.choice((365, 730, 1095)))
        certifications.append({
            "type": kind,
            "number": f"{re.sub(r'[^A-Z0-9]', '', kind.upper())[:6]}-{company_id[-4:]}-{rng.randint(1000, 9999)}",
            "issuer": issuer,
            "issued_at": issued.isoformat(),
            "expires_at": expires.isoformat(),
        })
    return certifications


def _seed_issue(state: EmulatorState, rng: random.Random, profile: Mapping[str, Any]) -> None:
    category = rng.choice(ISSUE_MIX.get(profile["partner_type"], ("other",)))
    reason = rng.choice(REASONS[category])
    now = state.now()
    raised_at = now - timedelta(days=rng.uniform(0.5, 180))
    age_days = (now - raised_at).days
    status = (rng.choice(("resolved", "closed", "closed")) if age_days > 30 else
              rng.choice(("open", "acknowledged", "awaiting_partner", "under_review", "resolved")))
    po = f"PO{rng.randint(4500000000, 4599999999)}"
    asn = f"ASN{rng.randint(10_000_000, 99_999_999)}"
    invoice = f"INV-{rng.randint(100000, 999999)}"
    money = category in ("invoice_po_mismatch", "chargeback_dispute")
    contact = profile["contacts"][0]["email"] if profile.get("contacts") else "partner"
    # Resolved some days after it was raised, but never later than now.
    resolved_at = min(raised_at + timedelta(days=rng.uniform(1, 20)), now) if status in ("resolved", "closed") else None
    issue = state.create_issue({
        "partner_company_id": profile["company_id"],
        "category": category,
        "reason_code": reason,
        "severity": rng.choices(("low", "medium", "high", "critical"), (3, 5, 2, 1))[0],
        "status": status,
        "title": TITLES[category].format(po=po, asn=asn, invoice=invoice, reason=reason.replace("_", " ").lower()),
        "description": f"Raised in the community by {contact}. Reason: {reason}.",
        "po_number": po,
        "asn_id": asn if category in ("shipment_exception", "asn_mismatch") else "",
        "invoice_number": invoice if money else "",
        "amount": round(rng.uniform(120, 25_000), 2) if money else None,
        "currency": CURRENCY.get(profile.get("region") or "na", "USD") if money else "",
        "raised_by": contact,
        "raised_at": iso(raised_at),
        "due_at": iso(raised_at + timedelta(days=7)),
        "resolved_at": iso(resolved_at),
    })
    with state.lock:  # history: its last change happened back then, not now
        state.issues[issue["id"]]["updated_at"] = iso(resolved_at or raised_at)


def _ok_transactions(state: EmulatorState, rng: random.Random, profile: Mapping[str, Any],
                     count: int) -> list[dict[str, Any]]:
    partner = {"name": profile["name"], "trading_addresses": profile["trading_addresses"]}
    return [
        _transaction(state, rng, partner, failure={"status": "C", "fastatus": "A"}, hours_ago=rng.uniform(1, 240))
        for _ in range(count)
    ]


def _transaction(state: EmulatorState, rng: random.Random, partner: Mapping[str, Any] | None, *,
                 failure: Mapping[str, Any], hours_ago: float, editype: str | None = None) -> dict[str, Any]:
    ours = state.our_trading_addresses[0]
    theirs = partner["trading_addresses"][0] if partner and partner["trading_addresses"] else "ZZ:UNKNOWNPARTNER"
    their_name = partner["name"] if partner else "Unknown partner"
    editype = editype or rng.choice(EDI_TYPES)
    inbound = editype in ("810", "855", "856", "945", "214")  # documents partners send us
    arrival: datetime = state.now() - timedelta(hours=hours_ago)
    status_at = arrival + timedelta(minutes=rng.randint(1, 30))
    transaction = {
        "transactionid": _uuid(rng),
        "correlationid": _uuid(rng),
        "arrivaltime": iso(arrival),
        "statusdate": iso(status_at),
        "editype": editype,
        "transactionlevel": "Document",
        "sendername": their_name if inbound else state.company_name,
        "senderaddress": theirs if inbound else ours,
        "receivername": state.company_name if inbound else their_name,
        "receiveraddress": ours if inbound else theirs,
        "status": "C",
        "fastatus": "A",
        "fastatusdate": iso(status_at + timedelta(hours=1)),
        "contentkeys": {
            "purchase order number": f"PO{rng.randint(4500000000, 4599999999)}",
            **({"invoice number": f"INV-{rng.randint(100000, 999999)}"} if editype == "810" else {}),
            **({"shipment identification": f"ASN{rng.randint(10_000_000, 99_999_999)}"} if editype == "856" else {}),
        },
    }
    transaction.update(failure)
    if transaction.get("fastatus") in ("", None):
        transaction["fastatusdate"] = None
    return transaction


def _uuid(rng: random.Random) -> str:
    value = rng.getrandbits(128)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-a{text[17:20]}-{text[20:32]}"


def _ascii(text: str) -> str:
    table = str.maketrans("éèêëáàâäíìîïóòôöúùûüçñ", "eeeeaaaaiiiioooouuuucn")
    return re.sub(r"[^a-z0-9.]", "", text.translate(table))
