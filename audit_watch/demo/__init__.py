"""The embedded demo and the generator of audit data."""
