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
EXPOSE 9464
# /healthz answers 200 only while the scheduler runs and every rule's last tick is recent
# (set daemon.listen to 0.0.0.0:9464 in the config to scrape /metrics from outside).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"
CMD ["audit-watch", "--config", "/etc/audit-watch/audit-watch.yaml", "run", "--log-format", "json"]
