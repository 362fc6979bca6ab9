"""The ``broker`` command line (Typer)."""
