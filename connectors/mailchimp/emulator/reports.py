"""Deterministic campaign activity: the same campaign id and recipients always give the same opens,
clicks, bounces and unsubscribes, so engagement work has realistic data and tests stay repeatable."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any

_HREF = re.compile(r"""href\s*=\s*["'](https?://[^"']+)["']""", re.IGNORECASE)
DEFAULT_LINKS = (
    "https://community.partnerlink.example/posts/latest",
    "https://community.partnerlink.example/documents/trading-terms",
    "https://community.partnerlink.example/events/partner-webinar",
)
OPEN_RATE, CLICK_RATE, BOUNCE_RATE, HARD_SHARE, UNSUBSCRIBE_RATE = 0.45, 0.35, 0.03, 0.67, 0.02


def links_in(html: str) -> list[str]:
    seen: list[str] = []
    for url in _HREF.findall(html or ""):
        if url not in seen and "*|" not in url:  # skip merge tags like *|UNSUB|*
            seen.append(url)
    return seen or list(DEFAULT_LINKS)


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def link_id(url: str) -> str:
    return hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()[:10]


@dataclass
class CampaignReport:
    campaign_id: str
    send_time: dt.datetime
    recipients: list[str]
    urls: list[str]
    activity: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    hard_bounces: list[str] = field(default_factory=list)
    soft_bounces: list[str] = field(default_factory=list)
    unsubscribes: list[tuple[str, dt.datetime]] = field(default_factory=list)

    @property
    def emails_sent(self) -> int:
        return len(self.recipients)

    def unsubscribed_emails(self) -> list[str]:
        return [email for email, _ in self.unsubscribes]

    def _events(self, action: str) -> list[tuple[str, dict[str, Any]]]:
        return [(email, e) for email, events in self.activity.items() for e in events if e["action"] == action]

    def summary(self, *, list_name: str, list_id: str, subject: str, title: str) -> dict[str, Any]:
        opens, clicks = self._events("open"), self._events("click")
        delivered = max(1, self.emails_sent - len(self.hard_bounces) - len(self.soft_bounces))
        unique_opens = len({email for email, _ in opens})
        unique_clickers = len({email for email, _ in clicks})
        return {
            "id": self.campaign_id,
            "campaign_title": title,
            "type": "regular",
            "list_id": list_id,
            "list_is_active": True,
            "list_name": list_name,
            "subject_line": subject,
            "preview_text": "",
            "emails_sent": self.emails_sent,
            "abuse_reports": 0,
            "unsubscribed": len(self.unsubscribes),
            "send_time": _iso(self.send_time),
            "bounces": {
                "hard_bounces": len(self.hard_bounces),
                "soft_bounces": len(self.soft_bounces),
                "syntax_errors": 0,
            },
            "forwards": {"forwards_count": 0, "forwards_opens": 0},
            "opens": {
                "opens_total": len(opens),
                "unique_opens": unique_opens,
                "open_rate": round(unique_opens / delivered, 4),
                "last_open": max((e["timestamp"] for _, e in opens), default=""),
            },
            "clicks": {
                "clicks_total": len(clicks),
                "unique_clicks": len({(email, e["url"]) for email, e in clicks}),
                "unique_subscriber_clicks": unique_clickers,
                "click_rate": round(unique_clickers / delivered, 4),
                "last_click": max((e["timestamp"] for _, e in clicks), default=""),
            },
            "list_stats": {"sub_rate": 0, "unsub_rate": 0, "open_rate": 0, "click_rate": 0},
        }

    def email_activity(self, *, list_id: str, since: dt.datetime | None) -> list[dict[str, Any]]:
        """One entry per recipient, sorted by address; with `since`, only recipients with later activity."""
        rows = []
        for email in self.recipients:
            events = self.activity.get(email, [])
            if since is not None:
                events = [e for e in events if dt.datetime.fromisoformat(e["timestamp"]) > since]
                if not events:
                    continue
            rows.append(
                {
                    "campaign_id": self.campaign_id,
                    "list_id": list_id,
                    "list_is_active": True,
                    "email_id": hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest(),
                    "email_address": email,
                    "activity": events,
                }
            )
        return rows

    def click_details(self) -> list[dict[str, Any]]:
        clicks = self._events("click")
        total_clicks = max(1, len(clicks))
        rows = []
        for url in self.urls:
            on_url = [(email, e) for email, e in clicks if e["url"] == url]
            unique = len({email for email, _ in on_url})
            rows.append(
                {
                    "id": link_id(url),
                    "url": url,
                    "total_clicks": len(on_url),
                    "click_percentage": round(len(on_url) / total_clicks, 4),
                    "unique_clicks": unique,
                    "unique_click_percentage": round(unique / max(1, self.emails_sent), 4),
                    "last_click": max((e["timestamp"] for _, e in on_url), default=""),
                    "campaign_id": self.campaign_id,
                }
            )
        return rows


def generate(*, campaign_id: str, send_time: dt.datetime, recipients: list[str], urls: list[str]) -> CampaignReport:
    report = CampaignReport(campaign_id=campaign_id, send_time=send_time, recipients=list(recipients), urls=list(urls))
    for email in recipients:
        rng = random.Random(f"{campaign_id}:{email.lower()}")  # str seeds are stable across runs
        events: list[dict[str, Any]] = []
        ip = f"198.51.100.{rng.randint(1, 254)}"

        def at(minutes: float) -> str:
            return _iso(send_time + dt.timedelta(minutes=minutes))

        if rng.random() < BOUNCE_RATE:
            hard = rng.random() < HARD_SHARE
            events.append(
                {"action": "bounce", "type": "hard" if hard else "soft", "timestamp": at(rng.uniform(0.5, 5))}
            )
            (report.hard_bounces if hard else report.soft_bounces).append(email)
        elif rng.random() < OPEN_RATE:
            first_open = rng.uniform(3, 360)
            for extra in range(rng.choice((1, 1, 1, 2, 3))):
                events.append({"action": "open", "timestamp": at(first_open + extra * rng.uniform(10, 600)), "ip": ip})
            if rng.random() < CLICK_RATE:
                for url in rng.sample(urls, k=min(len(urls), rng.choice((1, 1, 2)))):
                    events.append(
                        {"action": "click", "timestamp": at(first_open + rng.uniform(0.2, 15)), "url": url, "ip": ip}
                    )
            if rng.random() < UNSUBSCRIBE_RATE:
                report.unsubscribes.append((email, send_time + dt.timedelta(minutes=first_open + 20)))
        events.sort(key=lambda e: e["timestamp"])
        report.activity[email] = events
    return report
