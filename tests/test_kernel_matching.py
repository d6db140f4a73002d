"""Every matchArgs operator class, in the real kernel, with exact counts.

Each test drives a workload it controls (files it opens, offsets it seeks to,
bytes it sends) and values unique to the test (a fresh directory, offsets no
other process uses, a fresh port), so the kernel's counts are exact even on a
busy machine.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from agenthelpers import apply, policy_yaml, rule_yaml, scrape, series, stats

OPENAT = """
tracepoints:
  - subsystem: syscalls
    event: sys_enter_openat
    args: [{{field: filename, type: filename, label: path}}]
    selectors:
      - matchArgs: {matches}
        matchActions: [{{action: NoPost}}]
"""


def openat_policy(name: str, matches: str) -> str:
    return policy_yaml(name, OPENAT.format(matches=matches))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    base = Path("/tmp") / f"weir-{uuid.uuid4().hex[:12]}"
    (base / "sub").mkdir(parents=True)
    for name in ("a.log", "b.txt", "sub/c.log"):
        (base / name).write_text("x")
    outside = Path(f"{base}-x")
    outside.mkdir()
    (outside / "a.log").write_text("x")
    yield base
    for path in (base / "a.log", base / "b.txt", base / "sub/c.log", outside / "a.log"):
        path.unlink()
    (base / "sub").rmdir()
    base.rmdir()
    outside.rmdir()


def open_times(path: Path, times: int) -> None:
    for _ in range(times):
        with open(path):
            pass


def test_string_operators(core, tree: Path) -> None:
    base = f"{tree}/"
    apply(
        core,
        openat_policy(
            "prefix-postfix",
            f'[{{label: path, operator: Prefix, values: ["{base}"]}}, '
            '{label: path, operator: Postfix, values: [".log"]}]',
        ),
        openat_policy(
            "equal", f'[{{label: path, operator: Equal, values: ["{base}b.txt", "{base}zz"]}}]'
        ),
        openat_policy(
            "not-postfix",
            f'[{{label: path, operator: Prefix, values: ["{base}"]}}, '
            '{label: path, operator: NotPostfix, values: [".log"]}]',
        ),
        openat_policy(
            "not-prefix",
            f'[{{label: path, operator: Prefix, values: ["{base}"]}}, '
            f'{{label: path, operator: NotPrefix, values: ["{base}sub/"]}}]',
        ),
        openat_policy(
            "not-equal",
            f'[{{label: path, operator: Prefix, values: ["{tree}"]}}, '
            f'{{label: path, operator: NotEqual, values: ["{base}a.log"]}}]',
        ),
    )
    open_times(tree / "a.log", 3)
    open_times(tree / "b.txt", 2)
    open_times(tree / "sub" / "c.log", 4)
    open_times(Path(f"{tree}-x") / "a.log", 5)  # shares the prefix without the slash
    assert stats(core, "prefix-postfix")["matched"] == 3 + 4
    assert stats(core, "equal")["matched"] == 2
    assert stats(core, "not-postfix")["matched"] == 2
    assert stats(core, "not-prefix")["matched"] == 3 + 2
    assert stats(core, "not-equal")["matched"] == 2 + 4 + 5


def test_substring_operators(core, tree: Path) -> None:
    # Tetragon's SubString and SubStringIgnCase: a value anywhere in the string; the test's
    # directory name (random hex) makes every value unique to it.
    name = tree.name
    apply(
        core,
        openat_policy(
            "substring",
            f'[{{label: path, operator: Prefix, values: ["{tree}/"]}}, '
            '{label: path, operator: SubString, values: ["/sub/", "b.t"]}]',
        ),
        openat_policy(
            "substring-outside", f'[{{label: path, operator: SubString, values: ["{name}-x/"]}}]'
        ),
        openat_policy(
            "substring-case",
            f'[{{label: path, operator: SubString, values: ["{name.upper()}/SUB/"]}}]',
        ),
        openat_policy(
            "substring-ignore-case",
            f'[{{label: path, operator: SubStringIgnCase, values: ["{name.upper()}/SUB/C.LOG"]}}]',
        ),
        openat_policy(
            "substring-whole",
            f'[{{label: path, operator: SubString, values: ["{tree}/a.log"]}}]',
        ),
    )
    open_times(tree / "a.log", 3)
    open_times(tree / "b.txt", 2)
    open_times(tree / "sub" / "c.log", 4)
    open_times(Path(f"{tree}-x") / "a.log", 5)
    assert stats(core, "substring")["matched"] == 2 + 4
    assert stats(core, "substring-outside")["matched"] == 5
    assert stats(core, "substring-case")["matched"] == 0  # SubString minds case
    assert stats(core, "substring-ignore-case")["matched"] == 4
    assert stats(core, "substring-whole")["matched"] == 3  # the whole string is a substring
    # An edit swaps the values in (the other configuration copy): the old value no longer
    # counts, the new one does.
    apply(
        core,
        openat_policy(
            "substring-outside", f'[{{label: path, operator: SubString, values: ["{name}/sub"]}}]'
        ),
    )
    before = stats(core, "substring-outside")["matched"]
    open_times(Path(f"{tree}-x") / "a.log", 2)
    open_times(tree / "sub" / "c.log", 3)
    assert stats(core, "substring-outside")["matched"] == before + 3


BASE = 7_300_000_000  # offsets no other process seeks to


def m(operator: str, *values: object, label: str = "offset") -> dict[str, object]:
    return {"label": label, "operator": operator, "values": [str(v) for v in values]}


OURS = m("InRange", f"{BASE}:{BASE + 99}")


def lseek_policy(name: str, *selectors: list[dict[str, object]], rules: str = "") -> str:
    spec = {
        "tracepoints": [
            {
                "subsystem": "syscalls",
                "event": "sys_enter_lseek",
                "args": [
                    {"field": "offset", "type": "long", "label": "offset"},
                    {"field": "whence", "type": "uint", "label": "whence"},
                ],
                "selectors": [
                    {"matchArgs": s, "matchActions": [{"action": "NoPost"}]} for s in selectors
                ],
            }
        ]
    }
    return policy_yaml(name, yaml.safe_dump(spec), rules=rules)


def seek(offsets: list[int], whence: int = os.SEEK_SET) -> None:
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        for offset in offsets:
            os.lseek(fd, offset, whence)
    finally:
        os.close(fd)


def test_integer_operators_and_group_by_arg(core) -> None:
    offsets = [BASE + n for n in range(10)] * 2 + [BASE + 3] * 5 + [BASE + 500]
    apply(
        core,
        lseek_policy(
            "int-equal",
            [m("Equal", BASE + 1, BASE + 3)],
            rules=rule_yaml("int-equal", "int-equal", "t_equal", group_by="[arg:offset]"),
        ),
        lseek_policy("int-gt-lt", [m("GT", BASE + 5), m("LT", BASE + 9)]),
        lseek_policy("int-mask", [OURS, m("Mask", "0x1")]),
        lseek_policy("int-not-equal", [OURS, m("NotEqual", BASE + 3)]),
    )
    seek(offsets)
    # Equal {B+1, B+3}: B+1 twice; B+3 twice and five more times.
    assert stats(core, "int-equal")["matched"] == 2 + 7
    assert series(scrape(core), "t_equal_total") == {
        (("offset", str(BASE + 1)),): 2.0,
        (("offset", str(BASE + 3)),): 7.0,
    }
    assert stats(core, "int-gt-lt")["matched"] == 3 * 2  # B+6, B+7, B+8 twice each
    # BASE is even: odd offsets are B+1, 3, 5, 7, 9 (twice each) plus B+3 five more times.
    assert stats(core, "int-mask")["matched"] == 10 + 5
    assert stats(core, "int-not-equal")["matched"] == 20 - 2  # all ours but the two B+3 of the loop


def test_entries_on_the_same_tracepoint_count_each_on_their_own(core, tree: Path) -> None:
    # As in Tetragon, a policy may hook one target in several entries: each is its own
    # program (hook ids tracepoint:...:sys_enter_openat, then ...#2), so a call both
    # match is counted by both.
    entry = yaml.safe_load(OPENAT.format(matches="[]"))["tracepoints"][0]

    def opening(prefix: str) -> dict:
        match = {"label": "path", "operator": "Prefix", "values": [prefix]}
        return {**entry, "selectors": [{**entry["selectors"][0], "matchArgs": [match]}]}

    hook = "tracepoint:syscalls:sys_enter_openat"
    rules = "\n---\n".join(
        rule_yaml(f"twice-{n}", "twice", f"t_twice_{n}").replace(
            "groupBy: []", f"groupBy: []\n  hook: '{hook}{suffix}'"
        )
        for n, suffix in ((1, ""), (2, "#2"))
    )
    spec = {"tracepoints": [opening(f"{tree}/"), opening(f"{tree}/sub/")]}
    apply(core, policy_yaml("twice", yaml.safe_dump(spec), rules=rules))
    open_times(tree / "a.log", 3)
    open_times(tree / "sub" / "c.log", 4)
    samples = scrape(core)
    assert series(samples, "t_twice_1_total") == {(): 7.0}
    assert series(samples, "t_twice_2_total") == {(): 4.0}


def test_selectors_are_ored_first_match_wins_and_unmatched_are_only_observed(core) -> None:
    apply(
        core,
        lseek_policy(
            "ored",
            [m("Equal", BASE + 1)],
            [m("InRange", f"{BASE}:{BASE + 2}")],
            rules=rule_yaml(
                "ored",
                "ored",
                "t_ored",
                group_by="[arg:offset, arg:whence]",
                value="{type: sum, arg: offset}",
            ),
        ),
    )
    seek([BASE, BASE + 1, BASE + 2, BASE + 3])
    seek([BASE + 1], os.SEEK_CUR)
    samples = series(scrape(core), "t_ored_total")
    assert samples == {
        (("offset", str(BASE)), ("whence", "0")): float(BASE),
        (("offset", str(BASE + 1)), ("whence", "0")): float(BASE + 1),
        (("offset", str(BASE + 2)), ("whence", "0")): float(BASE + 2),
        (("offset", str(BASE + 1)), ("whence", "1")): float(BASE + 1),
    }
    counts = stats(core, "ored")
    assert counts["matched"] == 4 and counts["aggregated"] == 4
    assert counts["observed"] >= 5  # the whole machine's lseeks: only a floor is exact


def test_overflow_is_counted_never_lost(core) -> None:
    apply(
        core,
        lseek_policy(
            "overflow",
            [OURS],
            rules=rule_yaml(
                "overflow", "overflow", "t_overflow", group_by="[arg:offset]", max_series=3
            ),
        ),
    )
    seek([BASE + n for n in range(5)] * 2)  # 5 distinct keys, 3 fit
    samples = series(scrape(core), "t_overflow_total")
    kept = {k: v for k, v in samples.items() if k != (("offset", "__overflow__"),)}
    assert len(kept) == 3 and all(v == 2.0 for v in kept.values())
    assert samples[(("offset", "__overflow__"),)] == 4.0
    assert stats(core, "overflow")["overflow"] == 4
    assert sum(samples.values()) == 10.0


def test_histograms_exp2_and_explicit(core) -> None:
    rules = rule_yaml("h-exp2", "hist", "t_exp2", value="{type: histogram, arg: whence}")
    rules += "---\n" + rule_yaml(
        "h-explicit",
        "hist",
        "t_explicit",
        value="{type: histogram, arg: whence, buckets: {type: explicit, bounds: [0, 1, 10]}}",
    )
    apply(core, lseek_policy("hist", [OURS], rules=rules))
    seek([BASE] * 3, os.SEEK_SET)  # whence 0
    seek([BASE] * 2, os.SEEK_CUR)  # whence 1
    seek([BASE] * 1, os.SEEK_END)  # whence 2
    samples = scrape(core)
    assert series(samples, "t_exp2_bucket") == {
        (("le", "0"),): 3.0,
        (("le", "1"),): 5.0,
        (("le", "3"),): 6.0,
        (("le", "+Inf"),): 6.0,
    }
    assert series(samples, "t_exp2_sum") == {(): 4.0}
    assert series(samples, "t_exp2_count") == {(): 6.0}
    assert series(samples, "t_explicit_bucket") == {
        (("le", "0"),): 3.0,
        (("le", "1"),): 5.0,
        (("le", "10"),): 6.0,
        (("le", "+Inf"),): 6.0,
    }


SEND = """
tracepoints:
  - subsystem: sock
    event: sock_send_length
    args:
      - {{field: sk, type: sock, label: sk}}
      - {{field: ret, type: int, label: bytes}}
    selectors:
      - matchArgs: {matches}
        matchActions: [{{action: NoPost}}]
"""


class Server:
    """A loopback TCP server on a fresh port that echoes ``reply`` bytes per connection."""

    def __init__(self, host: str, reply: int = 0, family: int = socket.AF_INET) -> None:
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                while conn.recv(65536):
                    pass
                if self.reply:
                    conn.sendall(b"r" * self.reply)

    def close(self) -> None:
        self.listener.close()


def send(host: str, port: int, sizes: list[int], family: int = socket.AF_INET) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.connect((host, port))
        for size in sizes:
            client.sendall(b"x" * size)
        client.shutdown(socket.SHUT_WR)
        while client.recv(65536):
            pass


def send_policy(name: str, matches: str, group_by: str = "[]") -> str:
    return policy_yaml(
        name,
        SEND.format(matches=matches),
        rules=rule_yaml(
            name,
            name,
            f"t_{name.replace('-', '_')}",
            group_by=group_by,
            value="{type: sum, arg: bytes}",
        ),
    )


def test_address_and_port_operators(core) -> None:
    external = Server("127.0.0.2", reply=700)
    internal = Server("127.0.0.1")
    v6 = Server("::1", family=socket.AF_INET6)
    ports = f"['{external.port}', '{internal.port}', '{v6.port}']"
    try:
        apply(
            core,
            send_policy(
                "egress",
                f"[{{label: sk, operator: NotDAddr, values: ['127.0.0.1/32', '::1/128']}}, "
                f"{{label: sk, operator: DPort, values: {ports}}}]",
                group_by="[addressClass:sk]",
            ),
            send_policy(
                "to-external",
                f"[{{label: sk, operator: DAddr, values: ['127.0.0.2']}}, "
                f"{{label: sk, operator: DPort, values: ['{external.port}']}}]",
            ),
            send_policy(
                "v6",
                f"[{{label: sk, operator: DAddr, values: ['::1/128']}}, "
                f"{{label: sk, operator: DPort, values: ['{v6.port}']}}]",
            ),
            send_policy(
                "server-replies",
                f"[{{label: sk, operator: SPort, values: ['{external.port}']}}, "
                "{label: sk, operator: SAddr, values: ['127.0.0.0/8']}]",
            ),
            send_policy(
                "not-dport",
                f"[{{label: sk, operator: DAddr, values: ['127.0.0.2']}}, "
                f"{{label: sk, operator: NotDPort, values: ['{external.port}']}}]",
            ),
        )
        send("127.0.0.2", external.port, [1000, 1000, 1000])
        send("127.0.0.1", internal.port, [500, 500])
        send("::1", v6.port, [300], socket.AF_INET6)
        samples = scrape(core)
        assert series(samples, "t_egress_total") == {(("sk_class", "loopback"),): 3000.0}
        assert series(samples, "t_to_external_total") == {(): 3000.0}
        assert series(samples, "t_v6_total") == {(): 300.0}
        assert series(samples, "t_server_replies_total") == {(): 700.0}
        assert stats(core, "not-dport")["matched"] == 0
    finally:
        for server in (external, internal, v6):
            server.close()
