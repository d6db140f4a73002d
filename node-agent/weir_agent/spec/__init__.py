"""What a policy becomes, computed without touching the kernel: the ABI shared with the C
sources, tracefs formats, BTF types, code generation and plans. Pure logic."""
