"""``weir check`` and ``weir render``: a policy file, judged and shown without running it.

``check`` validates, generates, compiles and verifies each program (never attaching) and
says per hook whether it could attach here; non-zero on any failure, so CI can run it on
every example. ``render`` prints the fixed C source and, per hook, the integer flags,
configuration and map seeds that specialise it: what a policy becomes, with no user
string in any C text.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from weir_agent.identity import namespaces
from weir_agent.spec import abi, btf, codegen, formats, programs
from weir_api import checks, documents, limits, problems
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy


def _read(files: list[Path]) -> tuple[list[documents.Parsed], int]:
    parsed: list[documents.Parsed] = []
    unreadable = 0
    for path in files:
        try:
            parsed.extend(documents.parse_text(path.read_text(), source=str(path)))
        except OSError as error:
            print(f"{path}: cannot read: {error.strerror}", file=sys.stderr)
            unreadable += 1
    return documents.cross_check(parsed), unreadable


def check(*, files: list[Path], kernel: bool = True) -> int:
    """Validate, generate, compile and verify (never attach); non-zero on any failure."""
    parsed, failed = _read(files)
    rules = [p.obj for p in parsed if p.ok and p.kind == "AggregationRule"]
    for item in parsed:
        label = f"{item.source}: {item.kind or '?'} {item.name or '?'}"
        if not item.ok:
            failed += 1
            print(f"{label}: invalid\n{problems.render(item.problems)}", file=sys.stderr)
            continue
        if item.kind != "TracingPolicy":
            print(f"{label}: valid")
            continue
        failed += _check_policy(item, rules, label, kernel=kernel)
    return 1 if failed else 0


def _check_policy(
    item: documents.Parsed, rules: Sequence[object], label: str, *, kernel: bool
) -> int:

    policy = item.obj
    assert isinstance(policy, TracingPolicy)
    mine = [
        r for r in rules if isinstance(r, AggregationRule) and r.spec.policy_ref.name == policy.name
    ]
    layouts = {
        t.target_id(): formats.read_format(t.subsystem, t.event)
        for t in policy.spec.tracepoint_hooks()
    }
    # Offline (no kernel) nothing is compiled: any layout will do to check the rest.
    kernel_layout = btf.kernel_layout() if kernel else btf.zero_layout()
    generated = codegen.generate(
        policy,
        mine,
        layouts=layouts,
        kernel_layout=kernel_layout,
        host_namespaces=namespaces.host_namespaces(),
        kernel_types=btf.kernel_types() if kernel else None,
    )
    if generated.problems:
        print(f"{label}: cannot generate\n{problems.render(generated.problems)}", file=sys.stderr)
        return 1
    for warning in checks.policy_warnings(policy.spec):
        print(f"{label}: warning: {warning}", file=sys.stderr)
    for hook in policy.spec.hooks():
        if not hook.selectors:
            print(
                f"{label}: warning: {hook.hook_id()} has no selectors, so every call is posted "
                "to user space (Tetragon's default); add a selector with matchActions "
                "[{action: NoPost}] to count and aggregate only",
                file=sys.stderr,
            )
    total, _ = checks.memory(policy.spec, [(r.name, r.spec) for r in mine])
    print(
        f"{label}: maps take up to {total / 2**20:.1f} MiB "
        f"(budget {limits.POLICY_MEMORY_BUDGET / 2**20:.0f} MiB per policy)"
    )
    if not kernel:
        print(f"{label}: valid ({len(generated.programs)} programs generated)")
        return 0
    from weir_agent.kernel import attachable, handles, loading

    failed = 0
    if any(p.needs_tracker for p in generated.programs):
        loading.exec_tracker()
    for program in generated.programs:
        try:
            loaded = loading.compile_and_load(program)
        except handles.LoadError as error:
            failed = 1
            print(
                f"{label}: {program.hook}: {error.phase} failed: {error.message}\n{error.log}",
                file=sys.stderr,
            )
            continue
        loaded.close()
        cannot, notes = attachable.check(program)
        verified = (
            f"{label}: {program.hook}: verified, {loaded.instructions} instructions, "
            f"{loaded.translated_bytes} bytes, compile {loaded.compile_ms:.0f} ms"
        )
        if cannot:
            failed = 1
            print(f"{verified}; cannot attach: {'; '.join(cannot)}", file=sys.stderr)
        elif notes:
            print(f"{verified}; {'; '.join(notes)}")
        else:
            print(f"{verified}; can attach")
    return failed


def render(*, file: Path) -> int:
    """Print the C source and, per hook, the flags and map seeds that specialise it."""

    parsed, failed = _read([file])
    bad = [p for p in parsed if not p.ok]
    if failed or bad:
        for item in bad:
            print(f"{item.source}: invalid\n{problems.render(item.problems)}", file=sys.stderr)
        return 1
    rules = [p.obj for p in parsed if isinstance(p.obj, AggregationRule)]
    print(f"/* {programs.HOOK_SOURCE}: the program every hook runs, configured below */")
    print(programs.source_text(programs.HOOK_SOURCE))
    status = 0
    enums = set(abi.enum_flags())
    for item in parsed:
        if not isinstance(item.obj, TracingPolicy):
            continue
        policy = item.obj
        layouts = {
            t.target_id(): formats.read_format(t.subsystem, t.event)
            for t in policy.spec.tracepoint_hooks()
        }
        generated = codegen.generate(
            policy,
            [r for r in rules if r.spec.policy_ref.name == policy.name],
            layouts=layouts,
            kernel_layout=btf.kernel_layout(),
            host_namespaces=namespaces.host_namespaces(),
            kernel_types=btf.kernel_types(),
        )
        for problem in generated.problems:
            print(f"{item.source}: {problem}", file=sys.stderr)
            status = 1
        for program in generated.programs:
            print(f"\n/* ---- {policy.name} {program.hook} (shape {program.shape_digest()}) ----")
            print(" * shape: the compiler's flags (integers only):")
            for name, value in program.shape_flags():
                if name not in enums:
                    print(f" *   -D{name}={value}")
            print(" * configuration: the config map (an edit to these is a map write):")
            for name, number in sorted(program.config.flags().items()):
                if number:
                    print(f" *   {name} = {number}")
            print(" * map seeds (written after load, never part of the program):")
            for matcher, data, bits in program.seeds.strings:
                print(f" *   str_lpm matcher={matcher} prefix_bits={bits} bytes={_listed(data)}")
            for matcher, data, bits in program.seeds.addresses:
                print(f" *   addr_lpm matcher={matcher} prefix_bits={bits} addr={data.hex()}")
            for matcher, value in program.seeds.integers:
                print(f" *   int_set matcher={matcher} value={value}")
            for matcher, low, high in program.seeds.ranges:
                print(f" *   range_lpm matcher={matcher} keys {low}..{high}")
            for index, bound in program.seeds.bounds:
                print(f" *   bounds[{index}] = {bound}")
            print(" */")
    return status


def _listed(data: bytes) -> str:
    """A bytes literal that cannot end the listing's C comment."""
    return repr(data).replace("*/", "*\\x2f")
