"""`python -m vtrial ...` runs the `vtrial` command line (the same as the installed script)."""

from vtrial.cli import app

app(prog_name="vtrial")
