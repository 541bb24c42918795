# One image for every driftline role (worker, monitor, bridge); the command picks the role.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY driftline ./driftline
RUN pip install --no-cache-dir .
COPY examples ./examples
RUN useradd --create-home driftline && mkdir -p /models && chown driftline /models
USER driftline
ENTRYPOINT ["driftline"]
CMD ["--help"]
