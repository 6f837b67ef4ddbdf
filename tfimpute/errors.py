"""Exceptions that carry a one-line, user-facing explanation."""


class TfImputeError(Exception):
    """Base class: every error a user can cause and fix by changing their input."""


class DataError(TfImputeError):
    """The dataset could not be found or read (names the path and the problem)."""


class InvalidInputError(TfImputeError, ValueError):
    """Arrays or options passed to the library are malformed (shape, range, NaN...)."""


class WorkdirError(TfImputeError):
    """A workdir holds a run that is incompatible with the requested one."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping or preempting the job) received while training: handled as Ctrl-C is."""


class ClusterError(TfImputeError):
    """A multi-worker cluster did not form, or lost a worker: the message names the tasks and says how
    to resume. ``exit_at_once``: a thread of TensorFlow's may still be blocked on the cluster, so the
    program must end without waiting for it (``os._exit``) once the message is printed."""

    def __init__(self, message: str, exit_at_once: bool = False):
        super().__init__(message)
        self.exit_at_once = exit_at_once
