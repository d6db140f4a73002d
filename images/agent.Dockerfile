# The weir node agent: Debian's bcc (python3-bpfcc) and its runtime, the weir package, no
# compilers beyond the clang that bcc embeds. Kernel headers come from the node (the chart
# mounts /lib/modules and /usr/src) or, with --build-arg HEADERS=linux-headers-<version>,
# are baked in. Runs as root with the capabilities the DaemonSet grants (BPF, PERFMON, ...).
# Build from the repository root: docker build -f images/agent.Dockerfile -t weir-agent .
FROM debian:12.8-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY node-agent node-agent
COPY operator operator
COPY cli cli
RUN python3 -m venv --system-site-packages /opt/weir && /opt/weir/bin/pip install --no-cache-dir .

FROM debian:12.8-slim
ARG HEADERS=""
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-bpfcc \
        binutils ca-certificates ${HEADERS} \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/weir /opt/weir
COPY bpf /opt/weir/share/bpf
ENV PATH=/opt/weir/bin:$PATH WEIR_BPF_DIR=/opt/weir/share/bpf
ENTRYPOINT ["weir"]
CMD ["agent", "--kubernetes"]
