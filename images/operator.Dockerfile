# The weir operator: pure Python (kopf, the kubernetes client, the API models); no bcc.
# Non-root, read-only root filesystem friendly.
# Build from the repository root: docker build -f images/operator.Dockerfile -t weir-operator .
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY node-agent node-agent
COPY operator operator
COPY cli cli
RUN python -m venv /opt/weir && /opt/weir/bin/pip install --no-cache-dir .

FROM python:3.11.11-slim-bookworm
COPY --from=build /opt/weir /opt/weir
ENV PATH=/opt/weir/bin:$PATH PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["weir"]
CMD ["operator"]
