"""The weir node agent: policies in, specialised BPF programs loaded, metrics and reports out."""
