"""The `sopkit` command line (typer + rich)."""
