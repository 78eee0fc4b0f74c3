# PYTHON_IMAGE: any Debian-based image with python3 and its venv module (the default is the official one)
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home aibridge \
    && mkdir /data && chown 10001:10001 /data \
    && python3 -m venv /opt/aibridge
ENV PATH=/opt/aibridge/bin:$PATH
WORKDIR /opt/aibridge/src
COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
RUN pip install --no-cache-dir --disable-pip-version-check .
# records and client keys: a SQLite file in the data volume, unless AIBRIDGE_DATABASE_URL names another database
ENV AIBRIDGE_DATABASE_URL=sqlite+aiosqlite:////data/aibridge.db
VOLUME /data
WORKDIR /data
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s \
    CMD python3 -c "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('AIBRIDGE_PORT', '8080'), timeout=4)"
CMD ["aibridge", "api", "--host", "0.0.0.0"]
