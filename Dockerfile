# magorder serving image: only the serving dependencies, run as a non-root user.
# Pinned by digest (the multi-platform index of 3.11.14-slim-bookworm); bump tag and digest together.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY model_training ./model_training
COPY magorder ./magorder
# The serving dependencies only: no test or lint tools end up in the image. TensorFlow is the
# CPU-only build of the pinned version (tensorflow-cpu: the same package less its CUDA kernels,
# about 1.1 GB smaller): the image serves on the CPU. So the dependencies are installed from
# pyproject.toml with tensorflow swapped, and the project itself without resolving them again.
RUN /opt/venv/bin/python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(d for d in deps if not d.startswith('tensorflow')))" > requirements-serve.txt \
    && /opt/venv/bin/pip install --constraint constraints.txt --requirement requirements-serve.txt \
       "tensorflow-cpu==$(sed -n 's/^tensorflow==//p' constraints.txt)" \
    && /opt/venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MPLCONFIGDIR=/tmp/matplotlib \
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
# magorder's HTTP protocol bounds how long and how large a request's headers and body may be,
# and how many connections and requests are open at once (MAGORDER_* settings, see README).
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "app.server.http_protocol:GuardedHttpToolsProtocol", \
     "--timeout-graceful-shutdown", "20", "--timeout-keep-alive", "5"]
