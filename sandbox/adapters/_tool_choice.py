"""A tool choice that forces a call, relaxed once the model has used tools: what the loops send from then on.

A request that forces a call (OpenAI ``tool_choice="required"``, a named function or tool,
``allowed_tools`` in mode ``"required"``; Gemini ``function_calling_config.mode="ANY"``) gets a
call back every turn: a loop that resends it never ends before ``max_turns``, and never with the
model's answer. The OpenAI Agents SDK resets ``tool_choice`` once the agent has used a tool
(``Agent.reset_tool_choice``, True by default: ``maybe_reset_tool_choice`` drops it before the next
model call). The loops do the same, and send ``"auto"`` (``mode="AUTO"``) instead: the force
holds for the first request, and only for it, once a turn of calls has been answered.

Nothing here imports a framework: the SDKs' objects are read by their fields.
"""

from __future__ import annotations

from typing import Any, Mapping


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def forces_a_call(tool_choice: Any) -> bool:
    """True for an OpenAI ``tool_choice`` the model must answer with a call: ``"required"``, a named function
    or custom tool (Chat ``{"type": "function", "function": {"name": ...}}``, Responses ``{"type": "function",
    "name": ...}``), a hosted tool or MCP server, and ``allowed_tools`` in mode ``"required"`` (Responses
    ``{"type": "allowed_tools", "mode": ...}``, Chat ``{"type": "allowed_tools", "allowed_tools": {"mode": ...}}``).
    False for ``"auto"``, ``"none"``, absent (None), and ``allowed_tools`` in mode ``"auto"``."""
    if tool_choice is None or isinstance(tool_choice, str):
        return tool_choice == "required"
    kind = _field(tool_choice, "type")
    if kind == "allowed_tools":
        mode = _field(tool_choice, "mode") or _field(_field(tool_choice, "allowed_tools"), "mode")
        return mode == "required"
    return kind is not None


def relaxed_kwargs(create_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``create_kwargs`` itself, or, if its ``tool_choice`` forces a call (:func:`forces_a_call`), a copy whose
    ``tool_choice`` is ``"auto"``: the model may call tools again, or answer."""
    if not forces_a_call(create_kwargs.get("tool_choice")):
        return create_kwargs
    return {**create_kwargs, "tool_choice": "auto"}


def relaxed_config(config: Any) -> Any:
    """A google-genai ``GenerateContentConfig`` itself, or, if its ``tool_config.function_calling_config.mode``
    is ``ANY`` (a call every turn), a copy whose mode is ``AUTO`` and without ``allowed_function_names`` (the
    API takes them with ``ANY`` only). The other modes (``AUTO``, ``NONE``, ``VALIDATED``) force no call."""
    tool_config = config.tool_config
    calling = tool_config.function_calling_config if tool_config is not None else None
    if calling is None or calling.mode != "ANY":  # the SDK's mode enum is a str enum
        return config
    fields = {**calling.model_dump(exclude_none=True), "mode": "AUTO"}
    fields.pop("allowed_function_names", None)
    auto = type(calling).model_validate(fields)  # the SDK's own class, its mode the SDK's enum
    return config.model_copy(update={"tool_config": tool_config.model_copy(update={"function_calling_config": auto})})
