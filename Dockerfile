# syntax=docker/dockerfile:1
# magorder serving image: only the serving dependencies, run as a non-root user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY model_training ./model_training
# The serving extras only: no test or lint tools end up in the image.
RUN /opt/venv/bin/pip install --constraint constraints.txt .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MAGORDER_MODEL_DIR=/srv/magorder/model
RUN groupadd --system --gid 10001 magorder \
    && useradd --system --uid 10001 --gid magorder --no-create-home --shell /usr/sbin/nologin magorder
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root --chmod=0555 artifacts/model /srv/magorder/model
USER 10001:10001
WORKDIR /srv/magorder
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
# Exec form: uvicorn is PID 1 and receives SIGTERM itself, finishing in-flight requests.
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--timeout-graceful-shutdown", "20"]
