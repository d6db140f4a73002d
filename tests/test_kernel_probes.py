"""kprobes (verifier only: this machine's kernel cannot attach them) and uprobes
(attached, with exact counts from a program the test builds)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agenthelpers import apply, policy_yaml, rule_yaml, scrape, series, stats
from weir_agent.kernel import loading
from weir_agent.spec import abi, btf, codegen, programs
from weir_api import documents
from weir_api.policies import TracingPolicy

KPROBES = {
    "kprobes": [
        {
            "call": "tcp_sendmsg",
            "args": [
                {"index": 0, "type": "sock", "label": "sk"},
                {"index": 2, "type": "size_t", "label": "size"},
            ],
            "selectors": [
                {
                    "matchArgs": [
                        {"label": "sk", "operator": "NotDAddr", "values": ["10.0.0.0/8"]},
                        {"label": "sk", "operator": "SPort", "values": ["1:1024"]},
                    ]
                }
            ],
        },
        {
            "call": "openat",
            "syscall": True,
            "args": [
                {"index": 1, "type": "filename", "label": "path"},
                {"index": 2, "type": "int", "label": "flags"},
            ],
            "selectors": [
                {
                    "matchArgs": [
                        {"label": "path", "operator": "Postfix", "values": [".so"]},
                        {"label": "flags", "operator": "Mask", "values": ["0x40"]},
                    ]
                }
            ],
        },
        {"call": "security_file_open", "args": [{"index": 0, "type": "uint64", "label": "file"}]},
        {
            "call": "do_sys_openat2",
            "args": [{"index": 1, "type": "string", "label": "name"}],
            "selectors": [
                {"matchArgs": [{"label": "name", "operator": "Equal", "values": ["/etc/passwd"]}]}
            ],
        },
        {
            "call": "vfs_write",
            "args": [
                {"index": 1, "type": "char_buf", "sizeArgIndex": 3, "label": "buf"},
                {"index": 2, "type": "size_t", "label": "count"},
            ],
            "selectors": [
                {"matchArgs": [{"label": "buf", "operator": "Prefix", "values": ["secret"]}]}
            ],
        },
        {
            "call": "__sys_connect",
            "args": [{"index": 1, "type": "sockaddr", "label": "addr"}],
            "selectors": [
                {"matchArgs": [{"label": "addr", "operator": "DPort", "values": ["443"]}]}
            ],
        },
        {
            "call": "tcp_sendmsg",
            "return": True,
            "returnArg": {"index": 0, "type": "int", "label": "ret"},
            "selectors": [{"matchArgs": [{"label": "ret", "operator": "LT", "values": ["0"]}]}],
        },
    ]
}


def generated_for(name: str, spec: dict[str, Any]) -> programs.Generated:
    """A policy's programs, generated against this kernel's struct layouts."""
    parsed = documents.parse_object(
        {"apiVersion": "weir.dev/v1alpha1", "kind": "TracingPolicy",
         "metadata": {"name": name}, "spec": spec},
        source="k",
    )  # fmt: skip
    assert parsed.ok, parsed.problems
    assert isinstance(parsed.obj, TracingPolicy)
    return codegen.generate(parsed.obj, [], layouts={}, kernel_layout=btf.kernel_layout())


def assert_verified(generated: programs.Generated) -> None:
    """Every program compiles and passes the verifier here (kprobes verify only)."""
    assert not generated.problems
    loading.exec_tracker()  # hooks without selectors post, with the executable
    for program in generated.programs:
        loaded = loading.compile_and_load(program)
        try:
            assert loaded.instructions > 0 and loaded.jited_bytes > 0, program.hook
        finally:
            loaded.close()


def test_every_kprobe_argument_type_passes_the_verifier(kernel: None) -> None:
    generated = generated_for("kprobes", KPROBES)
    assert [p.hook for p in generated.programs] == [
        "kprobe:tcp_sendmsg",
        "kprobe:openat",
        "kprobe:security_file_open",
        "kprobe:do_sys_openat2",
        "kprobe:vfs_write",
        "kprobe:__sys_connect",
        "kretprobe:tcp_sendmsg",
    ]
    assert generated.programs[1].target == ("__x64_sys_openat",)
    assert_verified(generated)


# Tetragon's struct argument types, as its example policies use them.
STRUCT_KPROBES = {
    "kprobes": [
        {
            "call": "security_bprm_check",
            "args": [{"index": 0, "type": "linux_binprm", "label": "exe"}],
            "selectors": [
                {"matchArgs": [{"label": "exe", "operator": "Prefix", "values": ["/tmp/"]}]}
            ],
        },
        {
            "call": "cap_capable",
            "args": [{"index": 2, "type": "capability", "label": "cap"}],
            "selectors": [{"matchArgs": [{"label": "cap", "operator": "Equal", "values": ["21"]}]}],
        },
        {
            "call": "cap_capset",
            "args": [
                {"index": 2, "type": "cap_effective", "label": "effective"},
                {"index": 3, "type": "cap_inheritable", "label": "inheritable"},
                {"index": 4, "type": "cap_permitted", "label": "permitted"},
            ],
            "selectors": [
                {"matchArgs": [{"label": "permitted", "operator": "Mask", "values": ["2097152"]}]}
            ],
        },
        {
            "call": "do_init_module",
            "args": [{"index": 0, "type": "module", "label": "module"}],
            "selectors": [
                {"matchArgs": [{"label": "module", "operator": "Equal", "values": ["xfs"]}]}
            ],
        },
        # Read through their own resolve paths: a socket's sock, a program's and a
        # device's names.
        {
            "call": "security_socket_connect",
            "args": [{"index": 0, "type": "socket", "label": "socket"}],
            "selectors": [
                {"matchArgs": [{"label": "socket", "operator": "DPort", "values": ["443"]}]}
            ],
        },
        {
            "call": "security_bpf_prog",
            "args": [{"index": 0, "type": "bpf_prog", "label": "prog"}],
            "selectors": [
                {"matchArgs": [{"label": "prog", "operator": "Prefix", "values": ["weir"]}]}
            ],
        },
        {"call": "dev_open", "args": [{"index": 0, "type": "net_device"}]},
        # Tetragon's bpf.yaml and process-credentials examples.
        {"call": "bpf_check", "args": [{"index": 1, "type": "bpf_attr"}]},
        {"call": "security_perf_event_alloc", "args": [{"index": 0, "type": "perf_event"}]},
        {"call": "security_bpf_map_alloc", "args": [{"index": 0, "type": "bpf_map"}]},
        {
            "call": "commit_creds",
            "args": [{"index": 0, "type": "cred", "label": "new"}],
            "selectors": [
                {"matchArgs": [{"label": "new", "operator": "Equal", "values": ["0"]}]},
                {
                    "matchArgs": [
                        {
                            "label": "new",
                            "operator": "CapabilitiesGained",
                            "values": ["CAP_SYS_ADMIN", "CAP_SETUID"],
                        }
                    ]
                },
            ],
        },
        {
            "call": "cap_capable",
            "return": True,
            "args": [
                {"index": 1, "type": "user_namespace", "label": "ns"},
                {"index": 2, "type": "capability", "label": "cap"},
            ],
            "returnArg": {"index": 0, "type": "int"},
        },
    ]
}


def test_tetragons_struct_argument_types_pass_the_verifier(kernel: None) -> None:
    load_info = {"call": "load_module", "args": [{"index": 0, "type": "load_info"}]}
    if isinstance(btf.kernel_layout().get("LOAD_INFO_NAME"), int):
        assert_verified(
            generated_for("structs", {"kprobes": [*STRUCT_KPROBES["kprobes"], load_info]})
        )
        return
    assert_verified(generated_for("structs", STRUCT_KPROBES))
    # This kernel's BTF has no struct load_info: said, not guessed.
    assert [str(p) for p in generated_for("modules", {"kprobes": [load_info]}).problems] == [
        "spec.kprobes[0].args[0]: a load_info argument needs the kernel's layout: no "
        "struct load_info in the kernel's BTF"
    ]


def test_lsm_hooks_are_observed_through_their_security_functions(kernel: None) -> None:
    # Tetragon's lsm_track_grandparent.yml, less its extractParam: bprm_check_security is
    # called by security_bprm_check, file_open by security_file_open.
    generated = generated_for(
        "lsm",
        {
            "lsmhooks": [
                {
                    "hook": "bprm_check_security",
                    "args": [{"index": 0, "type": "linux_binprm"}],
                    "selectors": [{"matchActions": [{"action": "Post"}]}],
                },
                {"hook": "file_open", "args": [{"index": 0, "type": "file"}]},
                {  # lsm_track_grandparent.yml: resolve by its older names
                    "hook": "task_alloc",
                    "args": [
                        {
                            "index": 0,
                            "type": "int",
                            "extractParam": "real_parent.real_parent.comm",
                            "overwriteType": "string",
                        }
                    ],
                },
            ]
        },
    )
    assert [(p.hook, p.target) for p in generated.programs] == [
        ("kprobe:security_bprm_check", ("security_bprm_check",)),
        ("kprobe:security_file_open", ("security_file_open",)),
        ("kprobe:security_task_alloc", ("security_task_alloc",)),
    ]
    assert_verified(generated)


def test_fentries_are_observed_as_kprobes(kernel: None) -> None:
    # Tetragon's fentry.yaml: fentry and fexit see what kprobes and kretprobes see.
    sock = [{"index": 0, "type": "sock"}]
    generated = generated_for(
        "fentry",
        {
            "fentries": [
                {
                    "call": "tcp_connect",
                    "return": True,
                    "args": sock,
                    "returnArg": {"index": 0, "type": "int"},
                },
                {"call": "tcp_close", "args": sock},
            ]
        },
    )
    assert [p.hook for p in generated.programs] == [
        "kretprobe:tcp_connect",
        "kretprobe:tcp_connect:entry",  # saves the args for the return, as a kretprobe's
        "kprobe:tcp_close",
    ]
    assert_verified(generated)


TARGET = r"""
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) int weir_target(long value, const char *name) {
    __asm__ volatile("" ::: "memory");
    return (int)(value % 7) + name[0];
}
/* Writes 9 bytes into buf and says 4 were written (what returnCopy reads). */
__attribute__((noinline)) long weir_fill(char *buf, long i) {
    __asm__ volatile("" ::: "memory");
    memcpy(buf, i % 3 ? "kept-tail" : "skip-tail", 9);
    return 4;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    long total = 0;
    char buf[16];
    for (int i = 0; i < n; i++) total += weir_target(i, i % 2 ? "odd" : "even");
    for (int i = 0; i < n; i++) {
        memset(buf, 0, sizeof(buf));
        total += weir_fill(buf, i);
    }
    return (int)(total & 1);
}
"""


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the uprobe target")
    directory = tmp_path_factory.mktemp("uprobe")
    (directory / "target.c").write_text(TARGET)
    subprocess.run(
        ["gcc", "-O1", "-g", "-o", str(directory / "target"), str(directory / "target.c")],
        check=True,
    )
    return directory / "target"


def file_offset(binary: Path, symbol: str) -> int:
    """Where a function's code is in the file (its address, less its section's)."""
    from elftools.elf.elffile import ELFFile

    with open(binary, "rb") as stream:
        elf = ELFFile(stream)
        found = next(s for s in elf.get_section_by_name(".symtab").iter_symbols()
                     if s.name == symbol)  # fmt: skip
        section = elf.get_section(found["st_shndx"])
        return int(found["st_value"] - section["sh_addr"] + section["sh_offset"])


def test_a_uprobe_at_a_file_offset_counts_exactly(core, target: Path) -> None:
    # Tetragon's uprobe offsets: the probe goes at a file offset (here weir_target's
    # first instruction), its id uprobe:PATH:+0x...; the same calls as by symbol.
    offset = file_offset(target, "weir_target")
    spec = {
        "uprobes": [
            {
                "path": str(target),
                "offsets": [offset],
                "args": [{"index": 1, "type": "string", "label": "name"}],
                "selectors": [
                    {
                        "matchArgs": [{"label": "name", "operator": "Equal", "values": ["odd"]}],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            }
        ]
    }
    apply(core, policy_yaml("at-offset", yaml.safe_dump(spec)))
    assert [s.hook for s in core.snapshot() if s.policy == "at-offset"] == [
        f"uprobe:{target}:+{offset:#x}"
    ]
    subprocess.run([str(target), "60"], check=False)
    counts = stats(core, "at-offset")
    assert (counts["observed"], counts["matched"]) == (60, 30)


def test_a_uprobe_at_a_virtual_address_counts_exactly(core, target: Path) -> None:
    # Tetragon's addrs: weir_target's address, turned into its file offset through the
    # binary's loadable segment when attached.
    from elftools.elf.elffile import ELFFile

    with open(target, "rb") as stream:
        symtab = ELFFile(stream).get_section_by_name(".symtab")
        address = next(s["st_value"] for s in symtab.iter_symbols() if s.name == "weir_target")
    spec = {"uprobes": [{"path": str(target), "addrs": [address],
                         "selectors": [{"matchActions": [{"action": "NoPost"}]}]}]}  # fmt: skip
    apply(core, policy_yaml("at-address", yaml.safe_dump(spec)))
    assert [s.hook for s in core.snapshot() if s.policy == "at-address"] == [
        f"uprobe:{target}:@{address:#x}"
    ]
    subprocess.run([str(target), "25"], check=False)
    assert stats(core, "at-address")["matched"] == 25


def test_uprobes_count_exactly(core, target: Path) -> None:
    spec = {
        "uprobes": [
            {
                "path": str(target),
                "symbol": "weir_target",
                "args": [
                    {"index": 0, "type": "long", "label": "value"},
                    {"index": 1, "type": "string", "label": "name"},
                ],
                "selectors": [
                    {
                        "matchArgs": [
                            {"label": "name", "operator": "Equal", "values": ["odd"]},
                            {"label": "value", "operator": "LT", "values": ["50"]},
                        ],
                        "matchActions": [{"action": "NoPost"}],
                    }
                ],
            },
            {
                "path": str(target),
                "symbol": "weir_target",
                "return": True,
                "selectors": [{"matchActions": [{"action": "NoPost"}]}],
            },
        ]
    }
    rules = rule_yaml(
        "uprobe-values", "uprobes", "t_uprobe_values", value="{type: sum, arg: value}"
    ).replace("groupBy: []", "groupBy: []\n  hook: uprobe:" + str(target) + ":weir_target")
    apply(core, policy_yaml("uprobes", yaml.safe_dump(spec), rules=rules))
    subprocess.run([str(target), "100"], check=False)
    counts = {s.hook.split(":")[0]: s.stats for s in core.snapshot()}
    assert counts["uprobe"][abi.Stat.OBSERVED] == 100
    assert counts["uprobe"][abi.Stat.MATCHED] == 25  # odd values below 50
    assert counts["uretprobe"][abi.Stat.OBSERVED] == 100
    assert series(scrape(core), "t_uprobe_values_total") == {(): float(sum(range(1, 50, 2)))}
    assert stats(core, "uprobes")["matched"] == 25 + 100


def test_a_uretprobe_filters_on_its_return_value(core, target: Path) -> None:
    # weir_target returns value % 7 plus 'o' (111) for odd values, 'e' (101) for even ones.
    def returns(name: str, operator: str, *values: str) -> dict[str, object]:
        return {
            "path": str(target),
            "symbol": "weir_target",
            "return": True,
            "returnArg": {"index": 0, "type": "int"},
            "selectors": [
                {
                    "matchReturnArgs": [{"index": 0, "operator": operator, "values": list(values)}],
                    "matchActions": [{"action": "NoPost"}],
                }
            ],
        }

    apply(
        core,
        policy_yaml("ret-odd", yaml.safe_dump({"uprobes": [returns("odd", "GT", "110")]})),
        policy_yaml("ret-101", yaml.safe_dump({"uprobes": [returns("101", "Equal", "101")]})),
        policy_yaml(
            "ret-range", yaml.safe_dump({"uprobes": [returns("r", "NotInRange", "101:110")]})
        ),
    )
    subprocess.run([str(target), "100"], check=False)
    assert stats(core, "ret-odd")["matched"] == 50
    assert stats(core, "ret-101")["matched"] == len(range(0, 100, 14))  # even, multiple of 7
    assert stats(core, "ret-range")["matched"] == 50


def test_a_return_probe_with_args_reads_them_at_entry(core, target: Path) -> None:
    # Tetragon's way: args on a return probe are read at entry, by the entry half, and
    # tested at return together with the return value.
    hook = {
        "path": str(target),
        "symbol": "weir_target",
        "return": True,
        "args": [
            {"index": 0, "type": "long", "label": "value"},
            {"index": 1, "type": "string", "label": "name"},
        ],
        "returnArg": {"index": 0, "type": "int", "label": "ret"},
        "selectors": [
            {
                "matchArgs": [{"label": "name", "operator": "Equal", "values": ["odd"]}],
                "matchReturnArgs": [{"index": 0, "operator": "GT", "values": ["112"]}],
                "matchActions": [{"action": "NoPost"}],
            }
        ],
    }
    rules = rule_yaml(
        "ret-values", "ret-args", "t_ret_values", value="{type: sum, arg: value}"
    ).replace("groupBy: []", "groupBy: []\n  hook: uretprobe:" + str(target) + ":weir_target")
    apply(core, policy_yaml("ret-args", yaml.safe_dump({"uprobes": [hook]}), rules=rules))
    subprocess.run([str(target), "100"], check=False)
    wanted = [i for i in range(100) if i % 2 and i % 7 + 111 > 112]
    assert stats(core, "ret-args")["observed"] == 100
    assert stats(core, "ret-args")["matched"] == len(wanted)
    assert series(scrape(core), "t_ret_values_total") == {(): float(sum(wanted))}


def test_returncopy_reads_a_buffer_when_the_function_returns(core, target: Path) -> None:
    # Tetragon's returnCopy: the buffer is read on return (at entry it is zeros), as long
    # as the return value says (4 of the 9 bytes written); the hook is a return probe.
    hook = {
        "path": str(target),
        "symbol": "weir_fill",
        "args": [{"index": 0, "type": "char_buf", "returnCopy": True, "label": "buf"}],
        "selectors": [
            {
                "matchArgs": [{"label": "buf", "operator": "Equal", "values": ["kept"]}],
                "matchActions": [{"action": "NoPost"}],
            }
        ],
    }
    rules = rule_yaml("filled", "fills", "t_filled").replace(
        "groupBy: []", "groupBy: []\n  hook: uretprobe:" + str(target) + ":weir_fill"
    )
    apply(core, policy_yaml("fills", yaml.safe_dump({"uprobes": [hook]}), rules=rules))
    subprocess.run([str(target), "90"], check=False)
    assert stats(core, "fills")["observed"] == 90
    assert stats(core, "fills")["matched"] == 60
    assert series(scrape(core), "t_filled_total") == {(): 60.0}


def test_a_value_returnargaction_tracks_is_matched_by_a_later_call(core, target: Path) -> None:
    # returnArgAction TrackSock marks what each call returns (the mark named sock; weir keys
    # it by the returned value, whatever its type: here weir_target's int, 101-107 for even
    # calls, 111-117 for odd ones). The entry probe counts the calls whose value argument
    # is a value some earlier call returned: of 0-199, exactly 101-107 and 111-117.
    returned = {
        "path": str(target),
        "symbol": "weir_target",
        "return": True,
        "returnArg": {"index": 0, "type": "int", "label": "ret"},
        "returnArgAction": "TrackSock",
        "selectors": [{"matchActions": [{"action": "NoPost"}]}],
    }
    called = {
        "path": str(target),
        "symbol": "weir_target",
        "args": [{"index": 0, "type": "long", "label": "value"}],
        "selectors": [
            {
                "matchMarks": [{"mark": "sock", "key": "arg:value"}],
                "matchActions": [{"action": "NoPost"}],
            }
        ],
    }
    apply(core, policy_yaml("tracked-returns", yaml.safe_dump({"uprobes": [returned, called]})))
    subprocess.run([str(target), "200"], check=False)
    counts = {s.hook.split(":")[0]: s.stats for s in core.snapshot()}
    assert counts["uretprobe"][abi.Stat.MARKED] == 14  # each returned value, once
    assert counts["uprobe"][abi.Stat.MATCHED] == 14
