"""google-genai adapter: run Gemini's code parts and ``run_python`` function calls locally.

Two ways to plug the sandbox into a ``google-genai`` conversation:

* **Code execution parts.** A model (or a recording) produced an ``ExecutableCode``
  part; :func:`execute` (or ``await`` :func:`aexecute`) returns what the service would
  have put after it: the ``code_execution_result`` part(s) and one ``inline_data`` part
  per image, as ``google.genai.types.Part`` objects (DESIGN §5; :meth:`sandbox.Result.parts`
  is the source of truth, validated into the SDK's types)::

      parts = execute(part)            # part.executable_code.code is run

* **Function calling**, for models without server-side code execution: declare
  :func:`function_declaration` (or :func:`tool`), answer each call with :func:`handle`
  (:func:`ahandle`), or let :class:`ToolLoop` drive the model until it stops calling
  tools: ``loop.run(...)`` with ``client.models``, ``await loop.arun(...)`` with
  ``client.aio.models``. The loop runs every ``run_python`` call of one conversation in
  one session, so variables persist between calls as they do on the service, and
  answers the caller's own tools from ``functions={name: callable}``.

Images of a ``run_python`` call travel inside its ``FunctionResponse`` (its ``parts``
field, each image a ``FunctionResponsePart`` whose ``display_name`` the response's
``images`` list refers to as ``{"$ref": name}``), the SDK's form for multimodal function
responses. ``images="sibling"`` puts them as ``inline_data`` parts after the function
response instead, for models that do not read function response parts. :class:`ToolLoop` sends at
most ``max_image_bytes_per_turn`` bytes of images (default 10,000,000) in one turn's answers: the
Gemini API takes 20 MB of inline data in a request, and the history keeps every image; a call whose
images were left out says so in its ``output``. Every request resends the history, so a turn's images
also fit what ``max_image_bytes_per_request`` (default 10,000,000) leaves once the request resends the
inline data the history holds. :func:`handle` answers with at most
``max_image_bytes_per_call`` bytes of them (default 10,000,000 too), naming the rest the same way.

Code parts as the REST API's JSON work too, with google-genai installed or not: :func:`execute`
given a dict (``{"executableCode": {"language": "PYTHON", "code": "..."}}``) returns dicts,
the ``codeExecutionResult`` and ``inlineData`` parts of :meth:`sandbox.Result.parts`. Without
google-genai, this module has only :func:`execute` and :func:`aexecute`, for dicts and code strings
(dicts back); the function-calling names say what to install when used.
"""

from __future__ import annotations

from typing import Any

try:  # The one-call API (code parts, run_python calls) and the conversation loop live in modules of their own.
    from ._genai_loop import ToolLoop
    from ._genai_parts import DEFAULT_IMAGES, HAS_RESPONSE_PARTS, ImagesMode, aexecute, ahandle, execute, \
        function_declaration, handle, tool
    _MISSING = None
except ImportError as exc:
    if not (exc.name or "").startswith("google"):
        raise
    from ._genai_dicts import aexecute, execute  # type: ignore[no-redef]  # dicts and code strings only
    _MISSING = exc

__all__ = ["aexecute", "execute"]
_NEEDS_THE_SDK = ["DEFAULT_IMAGES", "HAS_RESPONSE_PARTS", "ImagesMode", "ToolLoop", "ahandle", "function_declaration",
                  "handle", "tool"]
if _MISSING is None:
    __all__ += ["DEFAULT_IMAGES", "HAS_RESPONSE_PARTS", "ImagesMode", "ToolLoop", "ahandle", "function_declaration",
                "handle", "tool"]


def __getattr__(name: str) -> Any:
    """Without google-genai, what needs it: an ImportError that says what to install."""
    if _MISSING is not None and name in _NEEDS_THE_SDK:
        from ..install_hint import install_command
        raise ImportError(f"sandbox.adapters.genai.{name} needs google-genai ({_MISSING}); install it with: "
                          f"{install_command('genai')} (execute() and aexecute() take dicts without it)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
