# audit-watch: the daemon image. Mount the config at /etc/audit-watch/audit-watch.yaml
# (and rules/templates next to it), pass secrets as environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/audit-watch

COPY pyproject.toml README.md ./
COPY audit_watch ./audit_watch
COPY rules ./rules
COPY templates ./templates
RUN pip install --no-cache-dir -e . \
    && useradd --system --uid 10001 --home-dir /var/lib/audit-watch --create-home audit-watch

USER audit-watch
WORKDIR /var/lib/audit-watch
VOLUME ["/etc/audit-watch", "/var/lib/audit-watch"]
CMD ["audit-watch", "--config", "/etc/audit-watch/audit-watch.yaml", "run"]
