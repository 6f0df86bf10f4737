"""multiprocessing's helper processes across a session's runs: the ones a run started end with it, and are forgotten.

The 'spawn' and 'forkserver' start methods start helper processes once per interpreter and keep them: the resource
tracker (which unlinks named semaphores and shared memory its users leave) and the fork server. In a session nothing
of a run outlives it (the runner kills every process the run left before it becomes the state), yet multiprocessing
still counted on them in the later runs: there the fork server's check (``os.waitpid`` of a process that is not a
child of the new run) raised ChildProcessError, so a 'forkserver' Process or pool failed in every run after the
first, and the resource tracker's check warned on stderr that it had died unexpectedly. :func:`forget` tells each
that its process is gone, as the state it was before the run started one: a later run starts its own, as the first
did. Through multiprocessing's private attributes (CPython 3.11 to 3.13 share them): another shape is left alone.
"""

from __future__ import annotations

import os
import sys


def forget() -> None:
    """In a session's runner once it has killed what its run left: the resource tracker and the fork server the run
    started (this process's children, so killed) are no longer known; their fds to them are closed."""
    try:
        tracker = getattr(sys.modules.get("multiprocessing.resource_tracker"), "_resource_tracker", None)
        if tracker is not None and tracker._pid is not None and tracker._fd is not None:
            os.close(tracker._fd)
            tracker._fd = tracker._pid = None
    except BaseException:  # noqa: BLE001 - another version's, or what the snippet made of it: left as it is
        pass
    try:
        server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
        if server is not None and server._forkserver_pid is not None:
            os.close(server._forkserver_alive_fd)
            server._forkserver_address = server._forkserver_alive_fd = server._forkserver_pid = None
    except BaseException:  # noqa: BLE001 - likewise
        pass
