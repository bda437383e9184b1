"""Stage 1, the playbook: TOML source with positions -> shape models -> cross-reference checks and
lints.

`load.load(path)` gives a checked `LoadedPlaybook` or raises `PlaybookError` with every problem
located."""
