"""Runs a program's absl ``main`` inside the test process, for the cases that stop at a one-line error.

``python -m tfimpute.X`` costs a TensorFlow start-up (about 10 s here) before it reaches the check a
test is about. Here the program's flags are defined, parsed from ``args`` as ``app.run`` would
(``--flagfile`` included) and removed again, and its ``main`` runs through the same
:func:`tfimpute.cli.run_main` wrapper that turns user errors into one line and an exit status.
What only a real process shows (TensorFlow's start-up lines, signals) is tested with subprocesses.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
from typing import Iterator

from absl import flags

from tfimpute import cli

FLAGS = flags.FLAGS


@contextlib.contextmanager
def _environment(env: dict[str, str] | None) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_here(module_name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m module_name *args`` run in this process: its exit status, stdout and stderr."""
    module = importlib.import_module(module_name)
    existing = set(FLAGS)
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        module.define_flags()
        with _environment(env), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                argv = FLAGS([module_name, *args])
                cli.run_main(module.main)(argv)
                status = 0
            except flags.Error as exc:  # what app.run reports for a flag it cannot parse
                print(f"FATAL Flags parsing error: {exc}", file=stderr)
                status = 1
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        for name in set(FLAGS) - existing:
            delattr(FLAGS, name)
        FLAGS.unparse_flags()
    return subprocess.CompletedProcess([module_name, *args], status, stdout.getvalue(), stderr.getvalue())
