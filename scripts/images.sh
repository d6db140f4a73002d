#!/usr/bin/env bash
# Build the weir image with podman, offline (no registry is needed):
#   1. a base image: a Debian 12 root file system made by mmdebstrap from Debian's packages,
#      with the runtime packages (python3, bcc, binutils) already in it; kept and reused
#      while the package list is the same;
#   2. wheels of weir and its dependencies, built on the host into .weir/wheels;
#   3. images/weir.Containerfile on that base, installing the wheels with --no-index.
# Tags: localhost/weir:VERSION and ghcr.io/weir-dev/weir:VERSION (the chart's default).
# WEIR_IMAGE_HEADERS=linux-headers-RELEASE bakes a kernel headers package into the base.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'weir images: %s\n' "$*"; }
if [ "$(id -u)" -ne 0 ]; then
    echo "weir images: must run as root (podman builds as root here); try: sudo make images" >&2
    exit 1
fi
for tool in podman mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "weir images: $tool is missing; run make setup" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
# linux-headers-ARCH: the image's generic headers, for any kernel with BTF (images/weir.Containerfile)
packages="python3,python3-venv,python3-bpfcc,binutils,ca-certificates,linux-headers-$(dpkg --print-architecture)"
if [ -n "${WEIR_IMAGE_HEADERS:-}" ]; then
    packages="$packages,$WEIR_IMAGE_HEADERS"
fi
base="localhost/weir-base:bookworm-$(printf '%s' "$packages" | sha256sum | cut -c1-12)"

if ! podman image exists "$base"; then
    say "making the base root file system ($packages)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$tmp/base.tar"
    podman import --quiet \
        --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        "$tmp/base.tar" "$base" >/dev/null
    rm -rf "$tmp"
    trap - EXIT
    say "base ready in ${SECONDS}s"
fi

say "building wheels into .weir/wheels"
rm -rf .weir/wheels
mkdir -p .weir/wheels
.venv/bin/python -m pip wheel --quiet --disable-pip-version-check --wheel-dir .weir/wheels . \
    2> >(grep -v "^WARNING: Location" >&2)

say "building localhost/weir:$version on $base"
podman build --quiet --file images/weir.Containerfile --build-arg "BASE=$base" \
    --tag "localhost/weir:$version" --tag "ghcr.io/weir-dev/weir:$version" . >/dev/null
size=$(podman image inspect --format '{{.Size}}' "localhost/weir:$version")
say "built localhost/weir:$version ($((size / 1000000)) MB) in ${SECONDS}s"
