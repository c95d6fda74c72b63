"""Rule evaluation: rule models and loading, one module per kind, evaluate, alerts, links."""
