# The Hodei worker image: `hodei agent` on Python 3.11, started by the Docker provider
# (`hodei server --provider docker --worker-image hodei-worker:latest`), one container per
# worker. Build it from the repository root:
#
#   docker build -f images/worker.Dockerfile -t hodei-worker:latest .
#
# Without a registry to pull python:3.11-slim from, scripts/build_worker_image.sh builds the
# same image offline (Debian's python3 from debootstrap instead of this base).

FROM python:3.11-slim AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# The agent as a self-contained executable directory, for jobs in images of their own.
FROM python:3.11-slim AS agent
RUN apt-get update && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY scripts/build_agent_binary.sh ./scripts/
RUN cp -a "$(HODEI_IMAGE_CACHE=/build PYTHON=python3 bash scripts/build_agent_binary.sh)" /agent

FROM python:3.11-slim
# The agent and its jobs run as an unprivileged user; each job gets a private dir in /tmp.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/hodei hodei \
    && chmod 0750 /home/hodei
COPY --from=wheels /wheels /tmp/wheels
RUN python -m venv /opt/hodei \
    && /opt/hodei/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels hodei \
    && /opt/hodei/bin/pip uninstall --yes pip setuptools \
    && rm -rf /tmp/wheels
COPY --from=agent /agent /opt/hodei/agent
ENV PATH=/opt/hodei/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/hodei
LABEL org.opencontainers.image.title=hodei-worker
USER 10001:10001
WORKDIR /home/hodei
# The provider passes HODEI_SERVER_URL and the single-use HODEI_TOKEN in the environment.
ENTRYPOINT ["/opt/hodei/bin/hodei", "agent"]
CMD []
