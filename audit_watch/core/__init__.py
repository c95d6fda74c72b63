"""Shared vocabulary of every stage: durations, time stamps, cron, located YAML, errors."""
