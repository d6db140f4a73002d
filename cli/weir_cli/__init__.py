"""The ``weir`` command: one console script, one subcommand per role."""
