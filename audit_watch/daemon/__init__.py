"""The daemon: scheduling, the run ledger, ticks, reports on schedule, self-alerts, health and metrics."""
