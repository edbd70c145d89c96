# mes: one node. Build: docker build -t mes .   Run: docker run -p 8000:8000 mes
FROM python:3.11-slim

WORKDIR /app
# Dependencies first, in a layer of their own: a change to the code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md ./
COPY mes ./mes
RUN pip install --no-cache-dir --no-deps .

# Run as an unprivileged user that owns only the node's data.
RUN useradd --system --uid 10001 --home-dir /var/lib/mes --shell /usr/sbin/nologin mes \
    && mkdir -p /var/lib/mes/data /var/lib/mes/gcode-files \
    && chown -R mes:mes /var/lib/mes
USER mes
WORKDIR /var/lib/mes

ENV HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8000 \
    DATA_DIR=/var/lib/mes/data \
    UPLOAD_PATH=/var/lib/mes/gcode-files
# Secrets come at run time, never in the image: MES_ADMIN_TOKEN (the first admin's token;
# without it one is printed once to the log) and, for a cluster, CLUSTER_SECRET.
VOLUME ["/var/lib/mes"]
# REST, Raft, embedded OPC UA
EXPOSE 8000 7000 4840
# Healthy only while the node answers /health with 200 (it has a leader and has caught up).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/health' % os.environ.get('HTTP_PORT', '8000'), timeout=2)"
CMD ["server"]
