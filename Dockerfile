FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mes ./mes
COPY opcua_model ./opcua_model
RUN pip install --no-cache-dir .

ENV HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8000 \
    DATA_DIR=/var/lib/mes/data \
    UPLOAD_PATH=/var/lib/mes/gcode-files
RUN mkdir -p /var/lib/mes/data /var/lib/mes/gcode-files
VOLUME ["/var/lib/mes"]
# REST, Raft, embedded OPC UA
EXPOSE 8000 7000 4840
CMD ["server"]
