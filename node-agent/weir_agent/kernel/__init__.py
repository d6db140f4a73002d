"""The agent's kernel I/O: compiling (compiler.py, the only bcc user, run as a child
process) and loading programs through bpf() (objects.py, loading.py), configuring and
attaching them, ring buffers, attachability and kernel headers."""
