# The registrar as a container, run the way registrator is: on every Docker host, beside its Consul agent,
# with the host's network and Docker socket (README, "The registrar as a container"):
#
#   docker run -d --name registrar --net=host --restart=always \
#       --group-add "$(stat -c %g /var/run/docker.sock)" \
#       -v /var/run/docker.sock:/var/run/docker.sock:ro \
#       consul-nginx-sync/registrar run --ip 10.0.0.5 --cleanup
#
# Build it on the usual Python base, with PyPI at hand:
#   docker build -f registrar.Dockerfile -t consul-nginx-sync/registrar .
# or offline with `make image`: a Debian base made from the archive (mmdebstrap) when no Python base is
# there, and the project's wheels built on the host (BASE and PIP_OPTIONS below).
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG PIP_OPTIONS=
COPY . /src
RUN python3 -m venv /opt/registrar \
    && /opt/registrar/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_OPTIONS} /src \
    && rm -rf /src

# Not root: the Docker socket is reached through its group, given at run time (--group-add).
USER 10001:10001
ENV PATH=/opt/registrar/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REGISTRAR_STATUS_ADDRESS=127.0.0.1:9466
# /health answers 200 while the loop turns (docs/observability.md); with --net=host, give each registrar
# on one machine its own REGISTRAR_STATUS_ADDRESS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://%s/health' % os.environ['REGISTRAR_STATUS_ADDRESS'], timeout=4)"]
ENTRYPOINT ["registrar"]
CMD ["run", "--retry-attempts", "-1"]
