"""The audit store audit-watch reads (read only): its schema, columns, the `where` compiler, queries."""
