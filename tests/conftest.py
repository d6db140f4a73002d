"""Shared fixtures.

Kernel tests need root and a working bpf(). On a machine without them they
skip with the reason, except when ``WEIR_REQUIRE_KERNEL=1`` (CI sets it): then
a missing capability is a failure, so a green CI always means the BPF tests ran.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "policies"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require(condition: bool, reason: str) -> None:
    """Skip (or fail, under WEIR_REQUIRE_KERNEL=1) when ``condition`` is false."""
    if condition:
        return
    if os.environ.get("WEIR_REQUIRE_KERNEL") == "1":
        pytest.fail(f"WEIR_REQUIRE_KERNEL=1 but {reason}")
    pytest.skip(reason)


def kernel_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to load BPF programs"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc (python3-bpfcc) is not importable; run `make setup`"
    if not Path("/sys/kernel/tracing/events").is_dir():
        return "tracefs is not mounted at /sys/kernel/tracing; run `make setup`"
    return None


_USED_THE_KERNEL: list[bool] = []


@pytest.fixture
def kernel() -> None:
    """Use in every test that loads BPF programs."""
    reason = kernel_unavailable_reason()
    require(reason is None, reason or "")
    _USED_THE_KERNEL.append(True)


@pytest.fixture
def examples() -> list[Path]:
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert files, f"no examples under {EXAMPLES}"
    return files


@pytest.fixture
def core(kernel: None):  # type: ignore[no-untyped-def]
    """A real engine; every program it loaded is detached when the test ends."""
    from weir_agent.runtime import engine

    instance = engine.Engine(node_name="n1")
    yield instance
    instance.close()


def wait_for(
    predicate: Any,
    what: str,
    timeout: float = 60.0,
    logs: Any = None,
) -> Any:
    """Poll ``predicate`` until it returns something true (and return that); fail naming
    ``what``, the last value or error, and ``logs()`` when given. Errors a poll can meet while
    things start (connection refused, a key not there yet) count as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, KeyError, ValueError, AssertionError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(0.3)
    extra = f"\n{logs()}" if logs else ""
    raise AssertionError(f"timed out waiting for {what} (last: {last!r}){extra}")


@pytest.fixture(autouse=True, scope="session")
def _no_test_pins_left() -> Any:
    """Agents started for the nodes a test plays pin under /sys/fs/bpf/weir-tests (see
    roles.command); whatever a failed test left there is detached at the end."""
    yield
    root = Path("/sys/fs/bpf/weir-tests")
    # Only a session that ran kernel tests cleans up: another session (pure tests, say)
    # running meanwhile must not detach its agents' pins.
    if _USED_THE_KERNEL and os.geteuid() == 0 and root.exists():
        from weir_agent.kernel import bpf

        bpf.remove_pins(root)


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    """kubesim with weir's CRDs and the weir-system namespace: where an operator test starts
    (a test file that needs less, or more, defines its own)."""
    from test_kubesim import Cluster

    instance = Cluster(tmp_path)
    instance.install()
    instance.core.create_namespace({"metadata": {"name": "weir-system"}})
    yield instance
    instance.close()
