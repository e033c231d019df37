"""`python -m lockstep.cli`: the same as the `lockstep` command."""

from lockstep.cli import main

main(prog_name="lockstep")
