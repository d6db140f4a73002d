# weir: the two commands a newcomer needs are `make run` and `make test`.
# Both call `make setup` first (idempotent; needs root on Debian 12).
PY := .venv/bin/python
SRC := api operator node-agent cli

.PHONY: setup run test lint typecheck contracts crds docs bench bench-control-plane hidden-switches kubesim e2e-kind images wheels help

help:
	@echo "make run    - start the node agent on examples/policies (standalone, no Kubernetes)"
	@echo "make test   - the whole suite: lint, types, layer contracts, generated-file drift, tests"
	@echo "make images - build the weir image with podman, offline (run by make test)"
	@echo "make crds   - regenerate crds/, the chart's CRDs and the generated sections from the API models"
	@echo "make docs   - regenerate the generated sections of README, docs/ and bpf/weir.h (root: runs the agent)"
	@echo "make bench  - the cost and data-volume benchmark, into the README (root; installs bpftrace, matplotlib)"
	@echo "make bench-control-plane - the operator against 5,000 simulated nodes (NODES=N)"
	@echo "make hidden-switches - does this kernel show every context switch to BPF? (root)"
	@echo "make setup  - install packages, mount tracefs/bpffs, create .venv (run by the others)"

setup:
	@bash scripts/setup.sh

run: setup
	$(PY) -m weir_cli.main agent --policies examples/policies --report-file .weir/nodereport.json --events-file .weir/events.jsonl

lint: setup
	$(PY) -m ruff check $(SRC) tests scripts
	$(PY) -m ruff format --check $(SRC) tests scripts

typecheck: setup
	$(PY) -m mypy $(SRC)

contracts: setup
	.venv/bin/lint-imports

crds: setup
	$(PY) -m weir_cli.main crds --out crds
	cp crds/*.yaml charts/weir/crds/
	$(PY) scripts/generated.py
	$(PY) scripts/syscalls_table.py api/weir_api/syscalls.py

test: lint typecheck contracts images
	$(PY) -m pytest

docs: setup
	$(PY) scripts/generated.py --capture

# The one image (agent and operator): podman, a base made by mmdebstrap, host-built wheels.
images: setup
	@bash scripts/images.sh

# Wheels of weir and its dependencies in .weir/wheels (what the Containerfile installs).
wheels: setup
	rm -rf .weir/wheels && $(PY) -m pip wheel -q --wheel-dir .weir/wheels .

# The benchmark (a script, never a test): prints and writes bench/out/results.md + added_ns.png.
bench: setup
	@command -v bpftrace >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bpftrace >/dev/null)
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q matplotlib
	$(PY) bench/bench.py
	$(PY) bench/edit_latency.py
	$(PY) bench/kube_edits.py
	$(PY) bench/startup.py
	$(PY) scripts/generated.py --bench

# The control plane at scale (a script, never a test): the operator as the chart runs it,
# kubesim with NODES simulated nodes and agents, 20 policies; writes bench/out/control-plane.md.
NODES ?= 5000
bench-control-plane: setup
	$(PY) bench/control_plane.py --nodes $(NODES)

# Per thread: the context switches the kernel counted against those sched_switch showed BPF.
SWITCH_SECONDS ?= 5
hidden-switches: setup
	$(PY) bench/hidden_switches.py $(SWITCH_SECONDS)

# The test-only Kubernetes API emulator: make kubesim PORT=8080 KUBECONFIG_OUT=/tmp/kubeconfig
PORT ?= 8080
KUBECONFIG_OUT ?= $(CURDIR)/.weir/kubeconfig
kubesim: setup
	@mkdir -p $(dir $(KUBECONFIG_OUT))
	cd tests && ../$(PY) -m kubesim --port $(PORT) --kubeconfig $(KUBECONFIG_OUT)

# End to end on kind (needs docker and kind; skips with the reason otherwise).
e2e-kind:
	bash scripts/e2e-kind.sh
