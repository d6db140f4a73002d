"""The agent's kernel I/O: compiling and loading programs (the only bcc user), configuring
and attaching them, ring buffers, attachability and kernel headers."""
