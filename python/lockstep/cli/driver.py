"""`lockstep driver`: a real Aeron C media driver (aeronmd) in the foreground, built once from
the Aeron source in PyPI's pyaeron sdist and cached."""

from __future__ import annotations

import os
import sys

import click

from .group import main


@main.command("driver")
@click.option("--dir", "dir_", type=click.Path(file_okay=False), default=None,
              help="The driver's directory (default: $AERON_DIR, else /dev/shm/aeron-$USER, as Aeron's).")
@click.option("-D", "defines", multiple=True, metavar="name=value",
              help="An Aeron setting as for aeronmd, e.g. -D aeron.threading.mode=DEDICATED "
                   "(= env AERON_THREADING_MODE); overrides the small-machine defaults. Repeatable.")
@click.option("--build-only", is_flag=True, help="Build (or find) aeronmd, print its path and exit.")
@click.option("--print-config", is_flag=True, help="Print the AERON_* settings it would run with and exit.")
def driver(dir_: str | None, defines: tuple[str, ...], build_only: bool, print_config: bool) -> None:
    """Run an Aeron media driver in the foreground (Ctrl-C or SIGTERM stops it cleanly).

    The first run builds aeronmd (Aeron 1.53 C, from the pyaeron 0.1.0 sdist on PyPI; needs C and
    C++ compilers, and cmake >= 3.30, fetched from PyPI if missing) into the user cache directory
    ($LOCKSTEP_CACHE_DIR, else ~/.cache/lockstep); $LOCKSTEP_AERONMD names an aeronmd to run
    instead (e.g. from Aeron's releases). Defaults for a small machine: one driver thread with
    a backoff idle strategy, 1 MiB terms and counters, the directory removed on exit.
    lockstep.aeron.Aeron(dir) then publishes and subscribes through it.
    """
    from ..aeron.cnc import default_aeron_dir
    from ..aeron.driver import build_driver, driver_env, parse_defines

    overrides = parse_defines(defines)
    directory = overrides.pop("AERON_DIR", None) or dir_ or str(default_aeron_dir())
    env = driver_env(directory, overrides)
    if print_config:
        for key in sorted(k for k in env if k.startswith("AERON_")):
            click.echo(f"{key}={env[key]}")
        return
    build = build_driver(out=sys.stderr)
    if build_only:
        click.echo(str(build.aeronmd))
        return
    click.echo(f"lockstep: running {build.aeronmd} in {directory} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(build.aeronmd, [str(build.aeronmd)], env)  # the driver itself in the foreground: signals go to it
