# The joblog processes (scheduler, workers, projector, notifier); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY engine ./engine
COPY projections ./projections
RUN pip install . \
    && useradd --create-home --uid 1000 joblog \
    && mkdir /data \
    && chown joblog /data

USER joblog
VOLUME ["/data"]
ENTRYPOINT ["joblog"]
CMD ["--help"]
