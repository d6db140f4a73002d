"""Tetragon's vocabulary, for messages: what a Tetragon user may write that weir does not
take, and what to say instead of "unknown field".

weir reads Tetragon's TracingPolicy shape. Fields and values Tetragon has and weir does
not fall in two groups: enforcement (weir observes; it never kills, overrides or signals)
and observability features weir does not have yet. Each gets its own words, naming the
field, so a policy ported from Tetragon says what to remove or wait for. docs/tetragon.md
lists them with what weir supports.
"""

from __future__ import annotations

from collections.abc import Sequence

ENFORCEMENT = "enforcement is not supported: weir observes"

# matchActions[].action values that enforce.
ENFORCEMENT_ACTIONS = frozenset({"Sigkill", "Override", "Signal", "NotifyEnforcer", "Set"})
# matchActions[].action values that observe, in Tetragon, but weir does not have yet.
LATER_ACTIONS = frozenset(
    {
        "GetUrl",
        "DnsLookup",
        "NoOp",
        "CleanupEnforcerNotification",
    }
)
# Spec keys that only enforce.
ENFORCEMENT_FIELDS = frozenset({"enforcers"})
# Keys (at any level) Tetragon has and weir does not support yet.
LATER_FIELDS = frozenset(
    {
        # spec
        "hostSelector",
        "usdts",
        "loader",
        # hooks
        "ignore",
        "data",
        "btfArgs",
        # args
        "source",
        # selectors
        "matchReturnActions",
        "matchData",
        # matchActions parameters of actions weir does not have
        "argUrl",
        "argFqdn",
        "imaHash",
    }
)
# Argument types Tetragon reads that weir does not yet.
LATER_TYPES = frozenset(
    {
        "sock_type",
        "dentry",
        "data_loc",
        "const_buf",
        "int32_arr",
        "uint32_arr",
        "int64_arr",
        "uint64_arr",
        "kiocb",
        "iov_iter",
        "char_iovec",
    }
)
# matchArgs operators Tetragon has that weir does not yet.
LATER_OPERATORS: frozenset[str] = frozenset()


def unknown_field(loc: Sequence[object]) -> str | None:
    """Words for a field weir's schema does not have, when Tetragon has it."""
    name = str(loc[-1]) if loc else ""
    if name in ENFORCEMENT_FIELDS:
        return f"{ENFORCEMENT}; remove {name}"
    if name in LATER_FIELDS:
        return (
            f"Tetragon's {name} is not supported by weir (yet); remove it, see docs/tetragon.md "
            "for what weir supports"
        )
    return None


def unknown_value(loc: Sequence[object], given: object) -> str | None:
    """Words for an enum value weir does not take, when it is Tetragon's."""
    field = str(loc[-1]) if loc else ""
    if field == "action" and given in ENFORCEMENT_ACTIONS:
        return (
            f"{ENFORCEMENT}; remove action {given} (action: Post reports the call instead, "
            "NoPost only counts it)"
        )
    if field == "action" and given in LATER_ACTIONS:
        return f"Tetragon's action {given} is not supported by weir (yet); use Post or NoPost"
    if field == "type" and given in LATER_TYPES:
        return (
            f"Tetragon's arg type {given} is not supported by weir (yet); read the value as "
            "an integer (uint64), or see docs/tetragon.md"
        )
    if field == "operator" and given in LATER_OPERATORS:
        return f"Tetragon's operator {given} is not supported by weir (yet); see docs/tetragon.md"
    return None
