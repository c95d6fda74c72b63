"""audit-watch: alerting and scheduled reports over Auxot's audit records."""

__version__ = "0.1.0"
