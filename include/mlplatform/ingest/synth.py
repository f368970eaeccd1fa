"""Reproducible synthetic support-ticket and outcome events with a learnable escalation signal.

Each customer has a hidden frustration level. Frustrated customers open more tickets, at higher priority,
with more urgent wording, and their tickets escalate more often. So both the text and the per-customer
aggregates Spark computes carry signal, as in the real use case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

PLANS = ("free", "pro", "enterprise")
CHANNELS = ("email", "chat", "phone", "web")
CALM_SUBJECTS = (
    "Question about invoice",
    "How do I export my data",
    "Password reset",
    "Feature request: dark mode",
    "Change billing address",
    "Add a team member",
    "API rate limits",
    "Integration setup help",
)
URGENT_SUBJECTS = (
    "Production outage",
    "URGENT: data loss after update",
    "Service down for all users",
    "Cancel my subscription now",
    "Legal complaint about breach",
    "Charged twice, refund immediately",
)
CALM_BODIES = (
    "Hi team, could you point me to the docs for this? Thanks.",
    "When you have a moment, I would like to understand how this works.",
    "Not urgent, just curious whether this is supported on our plan.",
    "Thanks for the quick help last time. One more small question.",
)
URGENT_BODIES = (
    "Our production system is down and customers are affected. This is the third time this month.",
    "We lost data after your update. I need a manager and a refund today or we escalate to legal.",
    "Nothing works since this morning. This outage is unacceptable, escalate this immediately.",
    "I have asked three times already. If this is not fixed today we cancel the contract.",
)


LANGUAGES = ("en", "de", "fr", "es")


@dataclass(frozen=True)
class SynthConfig:
    events: int = 5000
    seed: int = 42
    days: int = 30
    anchor: datetime | None = None  # end of the event window; default: 00:00 UTC three days ago
    schema_version: int = 1  # 2 adds the ticket's `language` (the compatible evolution of the contract)
    late_rate: float = 0.0  # share of tickets that arrive late: their event time lies 2-10 days back
    drift: float = 0.0  # 0..1: shifts the world (more frustrated customers: more, more urgent, higher-priority tickets)


def generate(cfg: SynthConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (tickets, outcomes) in stream order (by time, but for late tickets). Same config -> same events."""
    rng = np.random.default_rng(cfg.seed)
    # default: the window ends three days before today, so every outcome (resolved up to 72 h after its
    # ticket) lies in the past, as real outcomes do (the outcomes suite refuses resolutions from the future)
    anchor = cfg.anchor or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    start = anchor - timedelta(days=cfg.days)
    n_customers = max(10, cfg.events // 20)
    frustration = rng.beta(1.2, 3.0, size=n_customers)
    # drift moves every customer part of the way towards frustration (drawn as before: drift 0 is the same stream)
    frustration = frustration + cfg.drift * (1.0 - frustration) * 0.8
    plans = rng.choice(len(PLANS), size=n_customers, p=[0.5, 0.35, 0.15])
    weights = 1.0 + 4.0 * frustration
    who = rng.choice(n_customers, size=cfg.events, p=weights / weights.sum())
    offsets = np.sort(rng.uniform(0, cfg.days * 86400, size=cfg.events))
    # Late events keep their place in the stream but carry an event time days earlier (drawn from their
    # own generator, so the on-time events are the same with or without lateness).
    late_rng = np.random.default_rng([cfg.seed, 1])
    late = late_rng.random(cfg.events) < cfg.late_rate
    offsets = np.where(late, offsets - late_rng.uniform(2, 10, size=cfg.events) * 86400, offsets)
    langs = np.random.default_rng([cfg.seed, 2]).choice(len(LANGUAGES), size=cfg.events, p=[0.7, 0.1, 0.1, 0.1])

    tickets: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    for i in range(cfg.events):
        c = int(who[i])
        f = float(frustration[c])
        urgent = rng.random() < 0.1 + 0.6 * f
        priority = int(np.clip(rng.normal(1.5 + 2.0 * f + (0.8 if urgent else 0.0), 0.7), 1, 4).round())
        created = start + timedelta(seconds=float(offsets[i]))
        subject = str(rng.choice(URGENT_SUBJECTS if urgent else CALM_SUBJECTS))
        body = str(rng.choice(URGENT_BODIES if urgent else CALM_BODIES))
        plan = PLANS[int(plans[c])]
        logit = -2.6 + 2.2 * urgent + 2.5 * f + 0.5 * (priority >= 3) + 0.4 * (plan == "enterprise")
        escalated = bool(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
        ticket_id = f"T{cfg.seed:04d}-{i:08d}"
        customer_id = f"C{c:06d}"
        ticket = {
            "ticket_id": ticket_id,
            "customer_id": customer_id,
            "plan": plan,
            "channel": CHANNELS[int(rng.integers(len(CHANNELS)))],
            "priority": priority,
            "subject": subject,
            "body": body,
            "created_at": created,
        }
        if cfg.schema_version >= 2:
            ticket["language"] = LANGUAGES[int(langs[i])]
        tickets.append(ticket)
        outcomes.append(
            {
                "ticket_id": ticket_id,
                "customer_id": customer_id,
                "escalated": escalated,
                "resolved_at": created + timedelta(hours=float(rng.uniform(0.5, 72))),
            }
        )
    outcomes.sort(key=lambda r: r["resolved_at"])
    return tickets, outcomes
