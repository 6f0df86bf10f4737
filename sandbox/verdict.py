"""Turn what a run sent back (:class:`~sandbox.collect.Collected`) into a public Result.

The outcome follows the service (OK / FAILED / DEADLINE_EXCEEDED); ``reason`` says
which of our limits, or which kind of crash, ended the run.
"""

from __future__ import annotations

import dataclasses
import signal as _signal

from .collect import Collected
from .frames import MAX_DENIALS
from .names import numbered
from .policy import Policy
from .results import Denial, File, Outcome, Result
from .streams import rollback_note


def _signal_name(signum: int) -> str:
    try:
        return f"{_signal.Signals(signum).name} ({_signal.strsignal(signum)})"
    except ValueError:
        return f"signal {signum}"


def _decide(got: Collected, policy: Policy, timeout_s: float) -> tuple[Outcome, str | None, str | None]:
    """(outcome, reason, error text) for one run."""
    where = f"policy {policy.name!r}"
    signum, code, reported = got.exit.signal, got.exit.exitcode, got.reported
    if got.killed == "timeout":
        set_by = (f"{where}: limits.wall_seconds" if timeout_s == policy.limits.wall_seconds
                  else "the run's timeout")  # a caller's timeout= (a batch item's, --timeout) is not the policy's
        return Outcome.DEADLINE_EXCEEDED, "timeout", f"wall time limit of {timeout_s:g} s exceeded ({set_by})"
    if got.killed == "output_limit":
        return (Outcome.FAILED, "output_limit",
                f"output limit of {policy.limits.max_output_bytes} bytes exceeded ({where}: limits.max_output_bytes)")
    if got.killed == "cancelled":
        return Outcome.FAILED, "cancelled", (f"the run was cancelled: {got.cancelled_by}" if got.cancelled_by
                                             else "the run was cancelled by the caller")
    if got.killed == "protocol":
        return Outcome.FAILED, "protocol", got.protocol_error
    if got.exit.refused is not None:
        return Outcome.FAILED, "process_limit", got.exit.refused
    if got.memory is not None and got.memory.oom_kills:  # the host read it from the cgroup: no frame says it
        return Outcome.FAILED, "memory_limit", _memory_cgroup_error(got, policy)
    if reported.error is not None:
        reason = "memory_limit" if reported.exc_type == "MemoryError" else "exception"
        return Outcome.FAILED, reason, reported.error
    if reported.done:
        return Outcome.OK, None, None
    if signum == _signal.SIGXCPU or got.exit.cpu_limit:
        return (Outcome.FAILED, "cpu_limit",
                f"CPU time limit of {policy.limits.cpu_seconds} s exceeded ({where}: limits.cpu_seconds)")
    if signum == _signal.SIGKILL:
        return (Outcome.FAILED, "killed",
                "the worker was killed by SIGKILL: by the kernel's out-of-memory killer, another process, or the "
                "snippet itself")
    if signum is not None:
        return Outcome.FAILED, "crashed", f"the interpreter crashed: killed by {_signal_name(signum)}"
    if code == 0:
        return Outcome.OK, None, None  # os._exit(0): a clean exit without our epilogue
    if got.exit.lost is not None:
        return Outcome.FAILED, "crashed", f"the run was lost: {got.exit.lost}"
    if code is None:  # a session's runner whose root reported the run's end with no `done` before it
        return Outcome.FAILED, "crashed", "the run ended without reporting its end (no 'done' came from it)"
    return Outcome.FAILED, "crashed", f"the process exited with status {code} before the run finished"


def _ended_badly(got: Collected) -> str:
    """How the run's process ended, if not cleanly ("" if it exited with 0, or its end is unknown)."""
    if got.exit.signal is not None:
        return f"was killed by {_signal_name(got.exit.signal)}"
    return f"exited with status {got.exit.exitcode}" if got.exit.exitcode not in (0, None) else ""


def _memory_cgroup_error(got: Collected, policy: Policy) -> str:
    return (f"memory limit of {policy.limits.memory_mb} MB exceeded (policy {policy.name!r}: limits.memory_mb; "
            f"the run's memory cgroup, {got.memory.limit_bytes >> 20} MiB with the image it was forked from, "  # type: ignore[union-attr]  # the caller checked it
            "counts shared memory, memfd and tmpfs files too): the run was killed")


def peak_bytes(got: Collected) -> int:
    """The run's peak memory: from its memory cgroup when it had one (every page, shmem included), else the
    peak RSS of its process."""
    if got.memory is not None and got.memory.peak_bytes:
        return got.memory.peak_bytes
    return got.exit.usage.maxrss_kb * 1024


def to_result(got: Collected, policy: Policy, timeout_s: float, *, rolled_back: bool = False,
              memory_error: str | None = None) -> Result:
    """The public Result of one run.

    Sessions: ``rolled_back`` when the session went back to its state before the run;
    ``memory_error`` when the host refused the run's new state (``session.max_memory_mb``):
    the run then failed with ``reason="memory_limit"`` and was rolled back.
    """
    outcome, reason, error = _decide(got, policy, timeout_s)
    if memory_error is not None:
        outcome, reason, error, rolled_back = Outcome.FAILED, "memory_limit", memory_error, True
    elif rolled_back and outcome == Outcome.OK and got.reported.done and (ended := _ended_badly(got)):
        outcome, reason = Outcome.FAILED, "crashed"
        why = rollback_note(got.stderr.decode("utf-8", "replace"))
        error = (f"the run finished, but its process {ended} before it could become the session's state"
                 f"{f' ({why})' if why else ''}: the session is back at its state before the run")
    stdout, stderr, output = got.stdout, got.stderr, bytes(got.output)
    if reason == "output_limit":
        output += f"\n[output truncated at {policy.limits.max_output_bytes} bytes]\n".encode()
    reported = got.reported
    images, files = unique_names(reported.images, reported.files)
    return Result(
        outcome=outcome,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        output=output.decode("utf-8", "replace"),
        error=error,
        reason=reason,
        signal=got.exit.signal,
        denied=reported.denied + _dropped_notes(got, policy),
        images=images,
        files=files,
        duration_s=got.duration_s,
        peak_memory_bytes=peak_bytes(got),
        cpu_s=got.exit.usage.cpu_s,
        rolled_back=rolled_back,
    )


def unique_names(images: list[File], files: list[File]) -> tuple[list[File], list[File]]:
    """The run's images and files, every name unique within the run.

    Names come from inside (hostile input), and a figure can be named like a file the
    run saves afterwards. The last one reported keeps the name (work-dir files are
    reported last, so a real file keeps its own); an earlier one becomes ``stem_2.ext``,
    ``stem_3.ext``, ... (:func:`sandbox.names.numbered`: the first such name no other item has).
    """
    produced = [*images, *files]
    original = {item.name for item in produced}
    if len(original) == len(produced):
        return images, files
    taken: set[str] = set()
    named: list[File] = []
    for item in reversed(produced):
        name = item.name
        if name in taken:
            name = next(n for n in numbered(name) if n not in taken and n not in original)
            item = dataclasses.replace(item, name=name)
        taken.add(name)
        named.append(item)
    named.reverse()
    return named[:len(images)], named[len(images):]


#: kind of dropped item -> (what one is, the policy key that capped it)
_CAPS = {"images": ("image", "limits.max_returned_images"),
         "files": ("file", "limits.max_returned_files"),
         "images bytes": ("image", "limits.max_returned_bytes"),
         "files bytes": ("file", "limits.max_returned_bytes"),
         "denied": ("denied action", f"limits.max_output_bytes; {MAX_DENIALS} entries at most")}


def _dropped_notes(got: Collected, policy: Policy) -> list[Denial]:
    """What the host did not keep, said in the result: one ``limit`` entry per capped kind."""
    notes = []
    for kind, count in sorted(got.reported.dropped.items()):
        what, key = _CAPS[kind]
        was = f"{what} was" if count == 1 else f"{what}s were"
        notes.append(Denial(kind="limit", detail=f"{count} more {was} not returned (policy {policy.name!r}: {key})"))
    return notes
