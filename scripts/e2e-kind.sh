#!/usr/bin/env bash
# End to end on a real cluster: kind, the images built here, the Helm chart, the examples.
# Needs docker, kind, kubectl and helm on PATH; skips (exit 0, saying why) when they are not.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker kind kubectl helm; do
    if ! command -v "$tool" >/dev/null 2>&1 && ! [ -x ".tools/$tool" ]; then
        echo "e2e-kind: SKIPPED: $tool is not installed (needs a machine with a container engine)"
        exit 0
    fi
done
if ! docker info >/dev/null 2>&1; then
    echo "e2e-kind: SKIPPED: no running container engine (docker info failed)"
    exit 0
fi
helm_bin=$(command -v helm || echo .tools/helm)
cluster=weir-e2e
tag=e2e

cleanup() { kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; }
trap cleanup EXIT

kind create cluster --name "$cluster" --wait 120s
make wheels
docker build -f images/weir.Containerfile -t "weir:$tag" .
kind load docker-image "weir:$tag" --name "$cluster"
"$helm_bin" install weir charts/weir --namespace weir-system --create-namespace \
    --set image.repository=weir --set image.tag="$tag" --set image.pullPolicy=Never --wait
kubectl apply -f examples/policies/
kubectl wait --for=condition=Ready tracingpolicy/file-opens-etc --timeout=180s
kubectl get tracingpolicies
kubectl get nodereports
