"""OpenAI-style tool calls: a ``run_python`` tool for Chat Completions and the Responses API.

For any OpenAI-compatible backend (llama.cpp, vLLM, Ollama, ...)::

    from sandbox.adapters import openai as sbx

    final = sbx.run_chat(client, model=m, messages=messages)                 # openai.OpenAI
    final = await sbx.arun_chat(async_client, model=m, messages=messages)    # openai.AsyncOpenAI
    final = sbx.run_chat(client, model=m, messages=messages, tools=[weather_tool],
                         functions={"get_weather": get_weather})             # your tools too
    final = sbx.run_responses(client, model=m, input=items)                  # the Responses API
    final = await sbx.arun_responses(async_client, model=m, input=items)
    final = sbx.run_responses(client, model=m, input=items, chain=True)      # previous_response_id

or write the loop yourself with :func:`chat_tool` and :func:`handle_calls`
(:func:`ahandle_calls`), :func:`responses_tool` and :func:`handle_function_call`.
What the APIs accept decides where images go:

* Chat Completions: a ``tool`` message holds text only, so :func:`handle` returns the
  text (outcome, output, error, names of produced files) and :func:`handle_calls`
  adds, after all the tool messages of a turn (the API wants those first), one
  ``user`` message with the images as ``image_url`` data URLs. ``images="save"``
  writes them to a folder and names the paths instead; ``images="none"`` drops them.
* Responses API: a ``function_call_output`` may hold ``input_text`` and
  ``input_image`` items, so :func:`handle_function_call` and :func:`run_responses` put the images there.

The loops and :func:`handle_calls` send at most ``max_image_bytes_per_turn`` bytes of images (default
10,000,000) for one turn's calls: they stay in the conversation, sent with every later request, and a
request past the server's size limit fails. A call whose images were left out says so in its text.
The loops also hold a turn's images within what ``max_image_bytes_per_request`` (default 10,000,000)
leaves once the request resends the base64 data of the history (all of it, or with ``chain=True`` or a
conversation only the items the server has not seen).
:func:`handle_function_call` answers with at most ``max_image_bytes_per_call`` bytes of them (default
10,000,000 too), naming the rest the same way.

Tool calls are taken as the ``openai`` package's objects or as plain dicts of the same
JSON shape; one without an id (some local servers send null) is given ``call_<uuid4 hex>``,
set on the call, so its assistant message and tool message match. Bad arguments and code the
sandbox refuses become an error text for the model, never an exception.
"""

from __future__ import annotations

# One tool call at a time, where its images go, and the loops live in modules of their own.
from ._openai_calls import ahandle, ahandle_calls, ahandle_function_call, chat_tool, handle, handle_calls, \
    handle_function_call, responses_tool
from ._openai_chat import arun_chat, assistant_message, run_chat
from ._openai_images import ImagesMode
from ._openai_responses import arun_responses, run_responses

__all__ = ["ImagesMode", "ahandle", "ahandle_calls", "ahandle_function_call", "arun_chat", "arun_responses",
           "assistant_message", "chat_tool", "handle", "handle_calls", "handle_function_call", "responses_tool",
           "run_chat", "run_responses"]
