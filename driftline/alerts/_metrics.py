"""Prometheus metrics of the bridge. Labels are the channel kind and a reason: never ids,
addresses or URLs."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "DEADLETTERED",
    "DEDUP_UNAVAILABLE",
    "DELIVERED",
    "DUPLICATES",
    "LATENCY",
    "MESSAGES",
    "RECEIVED",
    "RETRIED",
    "SKIPPED",
    "UNAUTHORIZED",
]

RECEIVED = Counter(
    "driftline_bridge_notifications_received",
    "Notification targets consumed (one per notification and target).",
    ["channel"],
)
DELIVERED = Counter(
    "driftline_bridge_notifications_delivered",
    "Notification targets delivered.",
    ["channel"],
)
MESSAGES = Counter(
    "driftline_bridge_messages_sent",
    "Messages sent to receivers (a grouped burst is one message).",
    ["channel"],
)
RETRIED = Counter(
    "driftline_bridge_delivery_retries",
    "Failed delivery attempts that were retried.",
    ["channel", "reason"],
)
DEADLETTERED = Counter(
    "driftline_bridge_notifications_deadlettered",
    "Notification targets written to the dead-letter topic.",
    ["channel", "reason"],
)
DUPLICATES = Counter(
    "driftline_bridge_duplicates_suppressed",
    "Redelivered notification targets skipped because they were already delivered.",
    ["channel"],
)
DEDUP_UNAVAILABLE = Counter(
    "driftline_bridge_dedup_unavailable",
    "Notification targets whose de-duplication step failed because Redis was unavailable: "
    "operation=check (delivered without knowing whether it was sent before) or "
    "operation=mark (delivered, but a redelivery would send it again).",
    ["channel", "operation"],
)
SKIPPED = Counter(
    "driftline_bridge_targets_skipped",
    "Notification targets of channels this bridge does not serve.",
    ["channel"],
)
UNAUTHORIZED = Counter(
    "driftline_bridge_unauthorized",
    "Notification targets refused because no deployed spec declares them for that alert or "
    "assay and DRIFTLINE_BRIDGE_ALLOWED_TARGETS does not list them (dead-lettered as "
    "unauthorized_target).",
    ["channel"],
)
LATENCY = Histogram(
    "driftline_bridge_delivery_latency_seconds",
    "From consuming a notification to its successful delivery.",
    ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
