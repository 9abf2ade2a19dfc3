# One image for every process of the service: migrate, run (daemon), ingress, sandbox.
# docker-compose.yml picks the command; see README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HTTP_HOST=0.0.0.0 \
    LOG_FORMAT=json

WORKDIR /app

# Metadata first, so editing code does not invalidate the dependency layer's inputs needlessly.
COPY pyproject.toml README.md schema.sql ./
COPY service ./service
COPY consumers ./consumers
COPY providers ./providers
COPY sandbox ./sandbox
RUN pip install -e .

# Run unprivileged. /keys holds the generated local master key (development stacks only;
# production sets KMS_ENABLED=true and needs no key file).
RUN useradd --create-home --uid 10001 app && mkdir -p /keys && chown app /keys
USER app

EXPOSE 8080 8081 8090
ENTRYPOINT ["integration-service"]
CMD ["run"]
