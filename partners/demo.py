"""Deterministic demo data that looks like a real B2B trading community.

`demo_partner_records()` returns the same partners every time (same BUIDs, names, contacts, issues), so the
database seeded by `seed_demo` and the Trading Grid emulator's community describe the same companies.
Records use the shape of the TG partner profile (CONTRACT.md) plus the partner's identity."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

DEMO_SEED = 20261128
DEMO_PARTNER_COUNT = 300
# A fixed "now" keeps the generated dates stable; seed_demo shifts them to the real present.
DEMO_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)

PRODUCT_LINES = [
    "Frozen Foods",
    "Dairy",
    "Beverages",
    "Fresh Produce",
    "Packaging",
    "Electronic Components",
    "Automotive Parts",
    "Pharmaceuticals",
    "Medical Devices",
    "Apparel",
    "Home & Garden",
    "Industrial Supplies",
    "Chemicals",
    "Paper Products",
]

_NAME_PARTS = {
    "supplier": (
        [
            "Nordic",
            "Alpine",
            "Pacific",
            "Summit",
            "Golden",
            "Riverside",
            "Evergreen",
            "Blue Harbor",
            "Keystone",
            "Silverline",
            "Meridian",
            "Cedar",
            "Highland",
            "Sunrise",
            "Ironwood",
            "Lakeshore",
            "Bright",
            "Prairie",
        ],
        [
            "Packaging",
            "Foods",
            "Components",
            "Plastics",
            "Dairy Co-op",
            "Textiles",
            "Beverages",
            "Pharma",
            "Electronics",
            "Paper Mills",
            "Chemicals",
            "Farms",
            "Metalworks",
            "Ceramics",
        ],
    ),
    "distributor": (
        ["Central", "United", "Continental", "Metro", "Coastal", "Tri-State", "National", "Heartland", "Atlas"],
        ["Distribution", "Wholesale", "Supply", "Trading", "Merchants", "Distributors"],
    ),
    "carrier": (
        ["Swift", "Blue Ridge", "Red Arrow", "Northern", "Interstate", "Eagle", "Trans-Euro", "Polar", "Rapid"],
        ["Freight", "Trucking", "Express", "Haulage", "Transport", "Cargo", "Lines"],
    ),
    "3pl": (
        ["Harbor", "Crossdock", "Gateway", "Apex", "Pinnacle", "Portside", "Inland", "Omni"],
        ["Logistics", "Fulfillment", "Warehousing", "Supply Chain Services"],
    ),
    "customer": (
        ["FreshMart", "ValueWay", "Urban", "HomeBase", "QuickStop", "GreenGrocer", "MegaStore", "Corner"],
        ["Stores", "Retail", "Markets", "Supermarkets", "Outlets"],
    ),
    "reseller": (
        ["Prime", "Select", "Direct", "Smart", "Channel", "Vista"],
        ["Resellers", "Partners", "Solutions", "Commerce"],
    ),
}
_TYPE_WEIGHTS = {"supplier": 45, "distributor": 15, "carrier": 15, "3pl": 8, "customer": 12, "reseller": 5}
_COUNTRIES = {
    "na": ["US", "US", "US", "CA", "MX"],
    "latam": ["BR", "AR", "CL", "CO", "MX"],
    "emea": ["DE", "GB", "FR", "NL", "IT", "ES", "SE", "PL", "ZA", "AE"],
    "apac": ["JP", "AU", "SG", "IN", "KR", "CN", "NZ"],
}
_SUFFIX = {
    "US": "Inc.",
    "CA": "Ltd.",
    "MX": "S.A. de C.V.",
    "BR": "Ltda.",
    "AR": "S.A.",
    "CL": "SpA",
    "CO": "S.A.S.",
    "DE": "GmbH",
    "GB": "Ltd",
    "FR": "SAS",
    "NL": "B.V.",
    "IT": "S.p.A.",
    "ES": "S.L.",
    "SE": "AB",
    "PL": "Sp. z o.o.",
    "ZA": "(Pty) Ltd",
    "AE": "LLC",
    "JP": "K.K.",
    "AU": "Pty Ltd",
    "SG": "Pte. Ltd.",
    "IN": "Pvt. Ltd.",
    "KR": "Co., Ltd.",
    "CN": "Co., Ltd.",
    "NZ": "Limited",
}
_LANGUAGE = {
    "DE": "de",
    "FR": "fr",
    "NL": "nl",
    "IT": "it",
    "ES": "es",
    "SE": "sv",
    "PL": "pl",
    "BR": "pt-BR",
    "AR": "es",
    "CL": "es",
    "CO": "es",
    "MX": "es",
    "JP": "ja",
    "KR": "ko",
    "CN": "zh",
}
_TIMEZONE = {
    "US": "America/Chicago",
    "CA": "America/Toronto",
    "MX": "America/Mexico_City",
    "BR": "America/Sao_Paulo",
    "AR": "America/Argentina/Buenos_Aires",
    "CL": "America/Santiago",
    "CO": "America/Bogota",
    "DE": "Europe/Berlin",
    "GB": "Europe/London",
    "FR": "Europe/Paris",
    "NL": "Europe/Amsterdam",
    "IT": "Europe/Rome",
    "ES": "Europe/Madrid",
    "SE": "Europe/Stockholm",
    "PL": "Europe/Warsaw",
    "ZA": "Africa/Johannesburg",
    "AE": "Asia/Dubai",
    "JP": "Asia/Tokyo",
    "AU": "Australia/Sydney",
    "SG": "Asia/Singapore",
    "IN": "Asia/Kolkata",
    "KR": "Asia/Seoul",
    "CN": "Asia/Shanghai",
    "NZ": "Pacific/Auckland",
}
_FIRST = [
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kavya",
    "Liam",
    "Mei",
    "Noah",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Umar",
    "Vera",
    "Wei",
    "Yusuf",
    "Zoe",
]
_LAST = [
    "Schmidt",
    "Johnson",
    "Garcia",
    "Müller",
    "Rossi",
    "Tanaka",
    "Kowalski",
    "Andersson",
    "Dubois",
    "Patel",
    "Kim",
    "Silva",
    "Novak",
    "O'Brien",
    "Haddad",
    "Chen",
    "Jansen",
    "López",
    "Nguyen",
    "Fischer",
]
_ROLES = ["primary", "technical", "compliance", "finance", "logistics", "sales"]
_ISSUES = {
    "shipment_exception": ("Shipment {ref} delayed at {place}", ["LATE", "DAMAGED", "SHORT", "REFUSED"]),
    "asn_mismatch": ("ASN {ref} quantities do not match receipt", ["QTY", "SKU", "PALLET"]),
    "invoice_po_mismatch": ("Invoice {ref} price differs from PO", ["PRICE", "QTY", "TAX"]),
    "chargeback_dispute": ("Chargeback {ref} disputed by partner", ["LABEL", "LATE-ASN", "ROUTING"]),
    "edi_transaction_failure": ("EDI {ref} rejected: syntax error", ["997-R", "856-V", "810-F"]),
    "quality_claim": ("Quality claim on lot {ref}", ["TEMP", "DEFECT", "EXPIRY"]),
    "other": ("Question about portal access for {ref}", ["ACCESS"]),
}
_PLACES = ["Rotterdam", "Memphis hub", "Laredo crossing", "Felixstowe", "Chicago DC", "Singapore port", "Hamburg"]


def _buid(rng: random.Random, used: set[str]) -> str:
    while True:
        buid = (
            "GC"
            + "".join(rng.choice("0123456789") for _ in range(8))
            + rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ")
            + (rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ"))
        )
        if buid not in used:
            used.add(buid)
            return buid


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def demo_partner_records(count: int = DEMO_PARTNER_COUNT, seed: int = DEMO_SEED) -> list[dict]:
    """`count` partners with contacts, addresses, certifications, dates and issue history; same every call."""
    rng = random.Random(seed)
    used_buids: set[str] = set()
    used_names: set[str] = set()
    records = []
    types = list(_TYPE_WEIGHTS)
    weights = list(_TYPE_WEIGHTS.values())
    issue_number = 100000
    for index in range(count):
        partner_type = rng.choices(types, weights)[0]
        region = rng.choices(["na", "latam", "emea", "apac"], [40, 10, 35, 15])[0]
        country = rng.choice(_COUNTRIES[region])
        first, second = _NAME_PARTS[partner_type]
        base = f"{rng.choice(first)} {rng.choice(second)}"
        name = base if base not in used_names else f"{base} {rng.choice(['East', 'West', 'International', 'Group'])}"
        if name in used_names:
            name = f"{base} {index}"
        used_names.add(name)
        buid = _buid(rng, used_buids)
        domain = _slug(name)[:18] + (".com" if country in ("US", "CA") else f".{country.lower()}")
        status = rng.choices(
            ["approved", "testing", "registered", "invited", "new", "suspended", "rejected"],
            [62, 10, 8, 8, 6, 4, 2],
        )[0]
        tier = rng.choices(["strategic", "preferred", "standard"], [10, 30, 60])[0]
        lines = sorted(rng.sample(PRODUCT_LINES, rng.choice([0, 1, 1, 2, 2, 3]))) if partner_type != "carrier" else []
        language = _LANGUAGE.get(country, "en")
        contacts = []
        used_emails = set()
        for contact_index in range(rng.choice([1, 2, 2, 3, 3, 4, 5])):
            first_name, last_name = rng.choice(_FIRST), rng.choice(_LAST)
            role = "primary" if contact_index == 0 else rng.choice(_ROLES[1:])
            local = f"{_slug(first_name)}.{_slug(last_name)}"
            email = f"{local}@{domain}"
            if email in used_emails:
                email = f"{local}{contact_index}@{domain}"
            used_emails.add(email)
            contacts.append(
                {
                    "email": email,
                    "first_name": first_name,
                    "last_name": last_name,
                    "role": role,
                    "phone": f"+{rng.randint(1, 89)} {rng.randint(100, 999)} {rng.randint(1000000, 9999999)}",
                    "language": language,
                    "timezone": _TIMEZONE.get(country, "UTC"),
                }
            )
        certifications = []
        if partner_type in ("supplier", "3pl"):
            for cert in rng.sample(["ISO 9001", "ISO 14001", "GFSI/BRCGS", "C-TPAT", "SOC 2"], rng.choice([0, 1, 2])):
                issued = DEMO_EPOCH - timedelta(days=rng.randint(200, 1000))
                certifications.append(
                    {
                        "type": cert,
                        "number": f"{_slug(cert)[:4].upper()}-{rng.randint(10000, 99999)}",
                        "issuer": rng.choice(["TÜV SÜD", "SGS", "Bureau Veritas", "DNV", "Intertek"]),
                        "issued_at": issued.date().isoformat(),
                        "expires_at": (DEMO_EPOCH + timedelta(days=rng.randint(-20, 400))).date().isoformat(),
                    }
                )
        issues = []
        for _ in range(rng.choices([0, 1, 2, 3, 5, 8], [35, 25, 15, 12, 8, 5])[0]):
            category = rng.choices(list(_ISSUES), [25, 15, 20, 12, 14, 8, 6])[0]
            template, reasons = _ISSUES[category]
            issue_number += 1
            raised = DEMO_EPOCH - timedelta(days=rng.randint(0, 365), hours=rng.randint(0, 23))
            issue_status = rng.choices(
                ["open", "acknowledged", "awaiting_partner", "under_review", "resolved", "closed"],
                [15, 10, 10, 5, 30, 30],
            )[0]
            po = f"PO-{rng.randint(4500000, 4599999)}"
            reference = {
                "shipment_exception": f"SH{rng.randint(100000, 999999)}",
                "asn_mismatch": f"ASN{rng.randint(100000, 999999)}",
                "invoice_po_mismatch": f"INV-{rng.randint(20000, 99999)}",
                "chargeback_dispute": f"CB-{rng.randint(1000, 9999)}",
                "edi_transaction_failure": f"{rng.choice(['810', '850', '856'])}/{rng.randint(1000, 9999)}",
                "quality_claim": f"L{rng.randint(10000, 99999)}",
                "other": name,
            }[category]
            amount = None
            if category in ("invoice_po_mismatch", "chargeback_dispute", "quality_claim"):
                amount = str(Decimal(rng.randint(5000, 2500000)) / 100)
            resolved = issue_status in ("resolved", "closed")
            issues.append(
                {
                    "id": f"ISS-{issue_number}",
                    "partner_company_id": buid,
                    "category": category,
                    "reason_code": rng.choice(reasons),
                    "severity": rng.choices(["low", "medium", "high", "critical"], [30, 40, 22, 8])[0],
                    "status": issue_status,
                    "title": template.format(ref=reference, place=rng.choice(_PLACES)),
                    "description": "",
                    "po_number": po if category != "other" else "",
                    "asn_id": reference if category == "asn_mismatch" else "",
                    "invoice_number": reference if category == "invoice_po_mismatch" else "",
                    "amount": amount,
                    "currency": ("EUR" if region == "emea" else "USD") if amount else "",
                    "raised_at": raised.isoformat(),
                    "due_at": (raised + timedelta(days=rng.choice([3, 7, 14]))).isoformat(),
                    "resolved_at": (raised + timedelta(days=rng.randint(1, 20))).isoformat() if resolved else None,
                }
            )
        addresses = [f"ZZ:{_slug(name).upper()[:15]}{index}"]
        if rng.random() < 0.5:
            addresses.append(f"01:{rng.randint(100000000, 999999999)}")
        records.append(
            {
                "tg_company_id": buid,
                "name": name,
                "legal_name": f"{name} {_SUFFIX.get(country, '')}".strip(),
                "partner_type": partner_type,
                "region": region,
                "country_code": country,
                "tier": tier,
                "onboarding_status": status,
                "compliance_status": rng.choices(
                    ["compliant", "review_due", "non_compliant", "unknown"], [70, 15, 5, 10]
                )[0],
                "product_lines": lines,
                "trading_addresses": addresses,
                "certifications": certifications,
                "contract_renewal_at": (DEMO_EPOCH + timedelta(days=rng.randint(-10, 540))).date().isoformat(),
                "compliance_review_at": (DEMO_EPOCH + timedelta(days=rng.randint(0, 365))).date().isoformat(),
                "contacts": contacts,
                "issues": issues,
                "custom": {},
            }
        )
    return records
