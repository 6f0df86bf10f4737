"""Google ADK adapter: ``SandboxCodeExecutor``, a confined drop-in for ``UnsafeLocalCodeExecutor``.

Change one line of an agent::

    from sandbox.adapters.adk import SandboxCodeExecutor

    agent = LlmAgent(name="analyst", model="gemini-2.5-flash",
                     code_executor=SandboxCodeExecutor(stateful=True))   # was UnsafeLocalCodeExecutor()

What it adds over ``UnsafeLocalCodeExecutor`` (which runs ``exec`` in a plain
subprocess of the agent, with the agent's environment):

* confinement by a policy (rlimits, no_new_privs, namespaces, Landlock, seccomp) and
  a scrubbed environment; ``timeout_seconds`` (default: the policy's wall clock);
* ``stateful=True``: one session per ADK app, user and ``execution_id`` (ADK passes the
  ADK session's id, unique only within one app and user: two users' sessions of one id
  never share variables or files), so variables persist between code blocks of a
  conversation; an id longer than 128 characters (ADK's database session services keep
  ids of 128 at most) is refused, and at most ``max_sessions`` sessions are kept (see the class);
* ``input_files`` (ADK ``File``, base64 text or raw bytes) land in the work dir under
  their names, so ``optimize_data_file=True`` works too; a file the policy refuses (over
  ``limits.max_input_file_bytes``, past ``max_input_files``, a bad name) is left out and
  named, with the limit, at the end of the block's result: ADK resends every file with
  every block, and one such file failed them all;
* ``output_files``: figures (``plt.show()``), saved images and other files the code
  wrote, as ADK ``File`` objects (base64 content, MIME type), which ADK saves as
  artifacts. Artifacts outlive a code block, so each block's names carry its number
  in the ADK session: ``run1_figure_1.png``, ``run2_figure_1.png``, ``run2_out.csv``
  (two blocks' figures never become two versions of one artifact); a name ADK's file
  artifact service would refuse is made plain (a backslash becomes ``_``, a
  ``metadata.json`` or ``versions`` part gets a ``_`` in front, a part is cut to 255 bytes). The number follows
  the code execution results stored in the ADK session, so it goes on across turns,
  rebuilt executors and restarts on a persistent session service;
* cancellation: a block whose ADK invocation is cancelled or aborted is killed at once
  (see :attr:`SandboxCodeExecutor.execute_code`).

Result mapping follows ADK's reading of a ``CodeExecutionResult``: any ``stderr``
marks the block failed and counts toward ``error_retry_attempts``, and is then all the
model is shown of the block. So a successful run has an empty ``stderr`` and ``stdout``
is the interleaved output, warnings included (what the Gemini service returns); a
failed run keeps what it printed in ``stdout``, and its ``stderr`` holds that output,
then the traceback (or the limit that stopped it), as the service shows a failed run,
then a ``Saved artifacts:`` line naming the files ADK saves. Either ends with a line per
input file left out and per cap of the policy that dropped some of the block's images or
files (``limits.max_returned_files``...).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import dataclasses
import functools
import threading
from pathlib import Path
from typing import Any, Callable, Hashable, Optional, Sequence, Union

from google.adk.code_executors.base_code_executor import BaseCodeExecutor
from google.adk.code_executors.code_execution_utils import CodeExecutionInput, CodeExecutionResult
from google.adk.code_executors.code_execution_utils import File as AdkFile
from pydantic import ConfigDict, Field, PrivateAttr

from ..core import Sandbox, shared_sandbox
from ..errors import InputError, SessionError, value_text
from ..image import Image
from ..inputs import check_input_file
from ..names import fit, numbered
from ..outfiles import plain
from ..policy import Policy
from ..results import File, Outcome, Result
from ._common import MAX_SESSIONS, SessionPool, limit_notes

__all__ = ["SandboxCodeExecutor"]

# Newer ADK releases report the exit status; older ones have no such field.
_HAS_EXIT_CODE = "exit_code" in {f.name for f in dataclasses.fields(CodeExecutionResult)}


class SandboxCodeExecutor(BaseCodeExecutor):
    """Runs the model's code blocks in the sandbox (see the module docstring).

    Attributes:
        policy: policy name, TOML path or ``sandbox.Policy`` (ignored when ``sandbox`` is given).
        image: image name, TOML path or ``sandbox.Image`` (ignored when ``sandbox`` is given).
        sandbox: a ``sandbox.Sandbox`` to run in; default: the process-wide shared one
            for (policy, image), started on first use.
        max_sessions: live stateful sessions kept at most. A new ``execution_id`` closes
            the least recently used session that is not running a block (its variables
            are lost); a session running a block is never closed for another one, so
            when all of them are, the new id's block fails (``SessionError`` in
            ``stderr``, naming ``max_sessions``) until one ends.
        stateful, timeout_seconds, optimize_data_file, error_retry_attempts, ...: as in
            ``BaseCodeExecutor``; ``timeout_seconds=None`` means the policy's
            ``limits.wall_seconds``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)  # Policy, Image and Sandbox are not pydantic models

    policy: Union[str, Path, Policy] = "default"
    image: Union[str, Path, Image] = "vertex"
    sandbox: Optional[Sandbox] = Field(default=None, exclude=True)
    max_sessions: int = Field(default=MAX_SESSIONS, ge=1)

    _pool: Optional[SessionPool] = PrivateAttr(default=None)
    _runs: Any = PrivateAttr(default_factory=collections.OrderedDict)  # _conversation() -> code blocks run
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    def _box(self) -> Sandbox:
        return self.sandbox if self.sandbox is not None else shared_sandbox(self.policy, self.image)

    @property  # type: ignore[override]
    def execute_code(self) -> Callable[[Any, CodeExecutionInput], CodeExecutionResult]:
        """Run one code block: ``executor.execute_code(invocation_context, code_execution_input)``.

        Snippet failures and refused input come back in ``stderr``. A property, so that the
        lookup ADK makes on its event loop, right before it hands the call to a worker
        thread (``asyncio.to_thread(executor.execute_code, ...)``), notes the task awaiting
        the block: if that task is cancelled, or the invocation aborted
        (``Runner.run_async(abort_signal=...)``, ``InvocationContext.abort()``), the run is
        killed at once (``Sandbox.arun`` cancellation) instead of running to its deadline.
        """
        try:
            waiter: Optional[asyncio.Task[Any]] = asyncio.current_task()
        except RuntimeError:  # no event loop here: a plain call
            waiter = None
        return functools.partial(self._execute_code, waiter)

    def _execute_code(self, waiter: Optional["asyncio.Task[Any]"], invocation_context: Any,
                      code_execution_input: CodeExecutionInput) -> CodeExecutionResult:
        key = code_execution_input.execution_id
        if key is not None and (not isinstance(key, str) or len(key) > _MAX_EXECUTION_ID):
            # It keys a session (and the block count of _prefix): a hostile id must not cost host memory.
            got = f"{len(key)} characters" if isinstance(key, str) else type(key).__name__
            return _result(stdout="", stderr=f"InputError: execution_id must be a str of at most "
                           f"{_MAX_EXECUTION_ID} characters (got {got})", exit_code=1)
        files, left_out = _admitted(code_execution_input.input_files, self._box().policy)
        conversation = _conversation(key, invocation_context)
        run = functools.partial(self._arun, code_execution_input.code, files, conversation)
        result: Optional[Result]
        try:
            if _on_event_loop():  # called synchronously on a loop's thread: cannot wait on a loop of our own
                result = self._run(code_execution_input.code, files, conversation)
            else:
                result = asyncio.run(_watched(run, waiter, invocation_context))
        except (InputError, SessionError) as exc:
            return _result(stdout="", stderr=f"{type(exc).__name__}: {exc}", exit_code=1)
        if result is None:
            return _result(stdout="", stderr="the run was cancelled: the ADK invocation was cancelled or aborted",
                           exit_code=1)
        return _from_result(result, self._prefix(conversation, invocation_context), [*left_out, *limit_notes(result)])

    def _run(self, code: str, files: list[File], conversation: Optional[Hashable]) -> Result:
        if self.stateful and conversation:
            return self._sessions().run(conversation, code, files=files, timeout=self.timeout_seconds)
        return self._box().run(code, files=files, timeout=self.timeout_seconds)

    async def _arun(self, code: str, files: list[File], conversation: Optional[Hashable]) -> Result:
        if self.stateful and conversation:
            return await self._sessions().arun(conversation, code, files=files, timeout=self.timeout_seconds)
        return await self._box().arun(code, files=files, timeout=self.timeout_seconds)

    def _sessions(self) -> SessionPool:
        with self._lock:
            if self._pool is None:
                self._pool = SessionPool(self._box(), self.max_sessions)
            return self._pool

    def _prefix(self, conversation: Optional[Hashable], invocation_context: Any) -> str:
        """``run<N>_`` for the N-th block of this ADK session: artifact names never repeat across its blocks.

        N follows the code execution results the ADK session already holds. Counted here alone,
        it restarted with the executor: an app that builds its agent per request, or a restarted
        server on a persistent session, named the next turn's figure ``run1_figure_1.png`` again
        and ADK saved it over the first turn's. The count kept here covers calls without a
        readable ADK session (and never goes back).
        """
        stored = _blocks_stored(invocation_context)
        with self._lock:
            count = max(self._runs.pop(conversation, 0), stored) + 1
            self._runs[conversation] = count
            while len(self._runs) > _MAX_TRACKED:
                self._runs.popitem(last=False)
        return f"run{count}_"

    def close(self) -> None:
        """Close the stateful sessions (the shared Sandbox stays for other users); a stateful block after this
        raises SandboxClosed. Idempotent."""
        if self._pool is not None:
            self._pool.close()


#: ADK sessions whose block count is kept (least recently used forgotten first).
_MAX_TRACKED = 4096
#: Longest execution_id taken, in characters: ADK's database session services keep ids of 128 at most
#: (google.adk.sessions.schemas.shared.DEFAULT_MAX_KEY_LENGTH), the MCP server's session_id the same.
_MAX_EXECUTION_ID = 128
#: How often a run checks whether its ADK caller is gone, in seconds.
_WATCH_SECONDS = 0.05


def _conversation(execution_id: Optional[str], invocation_context: Any) -> Optional[Hashable]:
    """What keys a stateful session and the block count: (app, user, execution_id) when the context names them.

    ADK passes the ADK session's id as ``execution_id``, and a session id is unique only within one (app, user):
    keyed by the id alone, two users' sessions of one id ran in one sandbox session, and each saw the other's
    variables and work-dir files. A call without such a context (a plain call, a stand-in) keys by the id."""
    if not execution_id:
        return None
    app, user = getattr(invocation_context, "app_name", None), getattr(invocation_context, "user_id", None)
    if isinstance(app, str) and isinstance(user, str):
        return (app, user, execution_id)
    return execution_id


def _blocks_stored(invocation_context: Any) -> int:
    """Code blocks the invocation's ADK session has run: its events holding a code execution result
    (ADK appends one per block before the next block runs); 0 without a readable session."""
    events = getattr(getattr(invocation_context, "session", None), "events", None)
    if not isinstance(events, list):  # no session, or a stand-in's (a test's mock)
        return 0
    return sum(1 for event in events if _holds_result(getattr(event, "content", None)))


def _holds_result(content: Any) -> bool:
    parts = getattr(content, "parts", None)
    return isinstance(parts, list) and any(getattr(part, "code_execution_result", None) is not None for part in parts)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _watched(run: Callable[[], Any], waiter: Optional["asyncio.Task[Any]"], ctx: Any) -> Optional[Result]:
    """``await run()``, cancelled (None) as soon as the ADK caller is gone."""
    job = asyncio.ensure_future(run())
    while True:
        done, _ = await asyncio.wait({job}, timeout=_WATCH_SECONDS)
        if done:
            return job.result()
        if _abandoned(waiter, ctx):
            job.cancel()  # Sandbox.arun: the run's process tree is killed, its slot freed
            with contextlib.suppress(asyncio.CancelledError):
                await job
            return None


def _abandoned(waiter: Optional["asyncio.Task[Any]"], ctx: Any) -> bool:
    """The awaiting task was cancelled (or ended), or the invocation was aborted (ADK 2.x)."""
    if getattr(ctx, "is_aborted", False) is True:
        return True
    # Read from this thread without the loop's help: a flag and a counter, set on the loop's thread.
    return waiter is not None and (waiter.done() or waiter.cancelling() > 0)


def _admitted(files: list[AdkFile], policy: Policy) -> tuple[list[File], list[str]]:
    """The input files the policy lets a run take, and a one-line note for each file left out.

    ADK sends every data file of its session with every block (``optimize_data_file``): one file the core refuses
    (over ``limits.max_input_file_bytes``, a bad name, content that is not base64) failed every later block of the
    conversation whole. Such a file is left out and the block's result names it and why; the others are given."""
    kept: list[File] = []
    notes: list[str] = []
    for index, item in enumerate(files):
        try:
            file = check_input_file(_to_sandbox_file(item), index, policy)
            if any(file.name == other.name for other in kept):
                raise InputError(f"duplicate input file name {value_text(file.name)}")
        except InputError as exc:
            notes.append(f"[left out: {exc}]")
            continue
        kept.append(file)
    most = policy.limits.max_input_files
    if len(kept) > most:
        notes.append(f"[left out: {', '.join(value_text(f.name) for f in kept[most:])}: past the {most} input files "
                     f"a run takes (policy {policy.name!r}: limits.max_input_files)]")
    return kept[:most], notes


def _to_sandbox_file(file: AdkFile) -> File:
    """An ADK File (content: base64 text, or raw bytes in newer ADK) as a sandbox File."""
    content = file.content
    if isinstance(content, str):
        try:
            content = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"input file {value_text(file.name)}: content is not valid base64 ({exc})") from None
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise InputError(f"input file {value_text(file.name)}: content must be base64 text or bytes "
                         f"(got {type(content).__name__})")
    return File(name=file.name, data=bytes(content), mime_type=file.mime_type)


#: Longest path part, in bytes of UTF-8, that ADK's FileArtifactService can make (Linux file systems' NAME_MAX).
_NAME_MAX_BYTES = 255

#: Most bytes of UTF-8 the folders of an artifact's name take. ADK's FileArtifactService makes the name a path under
#: its root, followed by ``/versions/<n>/`` and the file's own name again: a returned name is checked only to be a
#: path below the work dir (4,096 characters at most), and one of 30 folders of 254 bytes made a path past PATH_MAX
#: (4,096 bytes), for which the service raised ENAMETOOLONG. With the file's own part (255 bytes at most) a name
#: takes at most 2 KiB: the root may take the other half.
_MAX_FOLDER_BYTES = 2048 - _NAME_MAX_BYTES

#: Path parts ADK's FileArtifactService keeps for itself (compared as it does: case and trailing dots and spaces
#: aside); a name holding one is refused with InputValidationError.
_ADK_RESERVED_PARTS = ("metadata.json", "versions")


def _artifact_names(prefix: str, files: list[File]) -> list[str]:
    """The artifact name of each file: ``prefix`` + its path, made one ADK accepts, unique within the block.

    ADK saves output files after the executor returns, outside any call of ours, and an artifact service that
    refuses a name fails the agent's whole turn. The snippet picks the names: a backslash (ADK reads it as a
    Windows separator, so ``a\\..\\x`` is a parent reference) becomes ``_``, and a part ADK reserves gets a
    ``_`` in front. ADK's FileArtifactService makes each part a file or folder on the host's disk: control
    characters (escape sequences for the terminal that lists them) and a leading ``-`` (an option to a command on
    the folder's ``*``) become ``_`` too, as in ``sandbox run --out`` (outfiles.plain). The folders past
    :data:`_MAX_FOLDER_BYTES` are left out of the name (its path on the host's disk would pass PATH_MAX)."""
    names: list[str] = []
    for item in files:
        parts = [plain(part) for part in item.name.split("/")]  # a backslash too
        parts = ["_" + part if part.rstrip(" .").casefold() in _ADK_RESERVED_PARTS else part for part in parts]
        parts[0] = prefix + parts[0]
        # Each part within NAME_MAX bytes, the prefix, a "_" and a number included: a file name of 255 bytes is the
        # file system's own limit, and the file service raised ENAMETOOLONG for "run1_" + it.
        # The first folder (the prefix's) always fits: one takes NAME_MAX + 1 bytes at most.
        folders = ""
        for part in parts[:-1]:
            folder = fit(part, _NAME_MAX_BYTES) + "/"
            if len((folders + folder).encode("utf-8", "surrogatepass")) > _MAX_FOLDER_BYTES:
                break
            folders += folder
        names.append(next(name for name in (folders + last for last in numbered(parts[-1], _NAME_MAX_BYTES))
                          if name not in names))
    return names


def _from_result(result: Result, prefix: str = "", notes: Sequence[str] = ()) -> CodeExecutionResult:
    """The block's CodeExecutionResult; ``notes`` (lines naming what the run was not given, or did not give back)
    end what the model sees."""
    files = [*result.images, *result.files]
    produced = [AdkFile(name=name, content=base64.b64encode(f.data).decode("ascii"), mime_type=f.mime_type)
                for name, f in zip(_artifact_names(prefix, files), files)]
    if result.outcome == Outcome.OK:
        stdout = result.output + "".join(note + "\n" for note in notes)
        return _result(stdout=stdout, stderr="", output_files=produced, exit_code=0)
    status = -result.signal if result.signal else 1
    return _result(stdout=result.output, stderr="\n".join([_failure_text(result, produced), *notes]),
                   output_files=produced, exit_code=status)


def _failure_text(result: Result, produced: list[AdkFile]) -> str:
    """``stderr`` of a failed block: the output printed before the failure, the error, then the artifacts saved.

    It is all the model sees of the block: ADK's ``build_code_execution_result_part`` shows ``stderr`` alone when
    it is not empty, and names saved artifacts only on success. With the error alone there, the output printed
    before an exception or the deadline, and the figures ADK saved all the same, were hidden from the model. The
    service shows a failed run the same way: its output, then the traceback."""
    error = result.error or str(result.outcome)
    if result.outcome == Outcome.DEADLINE_EXCEEDED:
        error = f"{Outcome.DEADLINE_EXCEEDED}: {error}"
    lines = [text.rstrip("\n") for text in (result.output, error) if text]
    if produced:
        lines.append("Saved artifacts: " + ", ".join(f"`{f.name}`" for f in produced))
    return "\n".join(lines)


def _result(*, stdout: str, stderr: str, exit_code: int, output_files: list[AdkFile] | None = None) -> CodeExecutionResult:
    extra = {"exit_code": exit_code} if _HAS_EXIT_CODE else {}
    return CodeExecutionResult(stdout=stdout, stderr=stderr, output_files=output_files or [], **extra)
