"""The `celpaint` command line: thin Typer commands over the library."""
