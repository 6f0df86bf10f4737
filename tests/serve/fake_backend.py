"""The scripted model the tests put behind ``sandbox serve``: :mod:`sandbox.serve.scripted` with the tests' scripts.

The mechanism (Chat Completions and Gemini endpoints on loopback, steps counted from
the ``SCRIPT:name`` message, deterministic usage, recorded requests, held requests)
lives in the package, where ``sandbox bench serve`` uses it too; the scripts below are
the tests' own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.responses import Response, StreamingResponse

from sandbox.serve.scripted import HOLD, Reply, ScriptedModel, call, code, text

RUNAWAY_BYTES = 48 * 1024 * 1024
"""What the ``runaway`` backend sends: past the server's cap on a backend answer (32 MiB)."""


def _chat_answer(message: dict[str, Any]) -> bytes:
    return json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()


def _runaway(body: dict[str, Any]) -> Response:
    """A valid answer after ``RUNAWAY_BYTES`` of JSON whitespace, sent as fast as it is read."""
    async def chunks() -> AsyncIterator[bytes]:
        blank = b" " * (1024 * 1024)
        for _ in range(RUNAWAY_BYTES // len(blank)):
            yield blank
            await asyncio.sleep(0)
        yield _chat_answer({"role": "assistant", "content": "all read"})
    return StreamingResponse(chunks(), media_type="application/json")


def _trickle(body: dict[str, Any]) -> Response:
    """A valid answer after a minute of JSON whitespace, one byte a second: never a pause as long as a read timeout."""
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(60):
            yield b" "
            await asyncio.sleep(1)
        yield _chat_answer({"role": "assistant", "content": "all read"})
    return StreamingResponse(chunks(), media_type="application/json")


def raw(answer: Any) -> Reply:
    """A step answering with ``answer`` as the JSON body, whatever its shape."""
    return Reply("response", lambda body: Response(json.dumps(answer), media_type="application/json"))


def chat_calls(*calls: tuple[str, Any]) -> Reply:
    """A Chat Completions answer whose tool calls hold these (name, raw arguments) as given."""
    return raw({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate(calls)]}}]})

def gemini_parts(*parts: Any) -> Reply:
    """A Gemini answer whose one candidate holds these parts as given."""
    return raw({"candidates": [{"content": {"role": "model", "parts": list(parts)}, "finishReason": "STOP"}]})


def _chat(message: Any = None, **fields: Any) -> dict[str, Any]:
    """A Chat Completions answer: ``message`` (a text one by default) and ``fields`` over the defaults."""
    choice = {"index": 0, "message": {"role": "assistant", "content": "hi"} if message is None else message,
              "finish_reason": "stop"}
    return {"choices": [{**choice, **fields.pop("choice", {})}], **fields}


def _gemini(parts: Any = None, **fields: Any) -> dict[str, Any]:
    """A Gemini answer: one candidate holding ``parts`` (one text part by default), ``fields`` over the defaults."""
    candidate = {"content": {"role": "model", "parts": [{"text": "hi"}] if parts is None else parts},
                 "finishReason": "STOP"}
    return {"candidates": [{**candidate, **fields.pop("candidate", {})}], **fields}


#: backend kind -> {script: (an answer of the wrong shape, the field the error must name)}.
MALFORMED: dict[str, dict[str, tuple[Any, str]]] = {
    "openai": {
        "cnotobject": ([_chat()], "JSON that is not an object"),
        "cchoices": ({"choices": {"0": _chat()["choices"][0]}}, "choices that is not a list"),
        "cnochoices": ({"choices": []}, "no choices[0]"),
        "cmessagestr": (_chat("hi"), "choices[0].message that is not an object"),
        "cnomessage": (_chat(choice={"message": None}), "no choices[0].message"),
        "ccontent": (_chat({"role": "assistant", "content": 42}), "choices[0].message.content that is not text"),
        "ccontentparts": (_chat({"role": "assistant", "content": ["hi"]}),
                          "choices[0].message.content[0] that is not an object"),
        "ccontenttext": (_chat({"role": "assistant", "content": [{"type": "text", "text": ["hi"]}]}),
                         "choices[0].message.content[0].text that is not text"),
        "cfinishlist": (_chat(choice={"finish_reason": ["stop"]}), "choices[0].finish_reason that is not text"),
        "ccallsdict": (_chat({"role": "assistant", "tool_calls": {"id": "c0"}}),
                       "choices[0].message.tool_calls that is not a list"),
        "ccallsstr": (_chat({"role": "assistant", "tool_calls": ["run_python"]}),
                      "choices[0].message.tool_calls[0] that is not an object"),
        "cfunction": (_chat({"role": "assistant", "tool_calls": [{"id": "c0", "function": "run_python"}]}),
                      "choices[0].message.tool_calls[0].function that is not an object"),
        "cfunctionname": (_chat({"role": "assistant", "tool_calls": [{"id": "c0", "function": {"name": 7}}]}),
                          "choices[0].message.tool_calls[0].function.name that is not text"),
        "ccallid": (_chat({"role": "assistant", "tool_calls": [{"id": [0], "function": {"name": "run_python"}}]}),
                    "choices[0].message.tool_calls[0].id that is not text"),
        "cusage": (_chat(usage=12), "usage that is not an object"),
        "cusagestr": (_chat(usage={"prompt_tokens": "many", "completion_tokens": 7}),
                      "usage.prompt_tokens that is not a count"),
        "cusagefloat": (_chat(usage={"prompt_tokens": 10, "completion_tokens": 1.5}),
                        "usage.completion_tokens that is not a count"),
        "creasoningtokens": (_chat(usage={"prompt_tokens": 3, "completion_tokens": 7,
                                          "completion_tokens_details": {"reasoning_tokens": "some"}}),
                             "usage.completion_tokens_details.reasoning_tokens that is not a count"),
        "clogprobsobj": (_chat(choice={"logprobs": [{"token": "hi", "logprob": -1}]}),
                         "choices[0].logprobs that is not an object"),
        "clogprob": (_chat(choice={"logprobs": {"content": [{"token": "hi", "logprob": "low"}]}}),
                     "choices[0].logprobs.content[0].logprob that is not a number"),
        "ctoplogprob": (_chat(choice={"logprobs": {"content": [{"token": "hi", "logprob": -1,
                                                                "top_logprobs": [{"logprob": -1}]}]}}),
                        "no choices[0].logprobs.content[0].top_logprobs[0].token"),
        "clogprobbytes": (_chat(choice={"logprobs": {"content": [{"token": "hi", "logprob": -1, "bytes": [104, 300]}]}}),
                          "choices[0].logprobs.content[0].bytes that is not a list of byte values"),
    },
    "gemini": {
        "gnotobject": ("candidates", "JSON that is not an object"),
        "gcandidates": ({"candidates": {"content": {}}}, "candidates that is not a list"),
        "gcandidate": ({"candidates": ["hi"]}, "candidates[0] that is not an object"),
        "gcontent": (_gemini(candidate={"content": "hi"}), "candidates[0].content that is not an object"),
        "gparts": (_gemini({"0": {"text": "hi"}}), "candidates[0].content.parts that is not a list"),
        "gpartstr": (_gemini(["hi"]), "candidates[0].content.parts[0] that is not an object"),
        "gtext": (_gemini([{"text": 42}]), "candidates[0].content.parts[0].text that is not text"),
        "gthought": (_gemini([{"text": "hm", "thought": "yes"}]),
                     "candidates[0].content.parts[0].thought that is not true or false"),
        "gcall": (_gemini([{"functionCall": "run_python"}]),
                  "candidates[0].content.parts[0].functionCall that is not an object"),
        "gcallname": (_gemini([{"functionCall": {"name": ["run_python"], "args": {}}}]),
                      "candidates[0].content.parts[0].functionCall.name that is not text"),
        "gcallid": (_gemini([{"functionCall": {"name": "run_python", "args": {}, "id": 3}}]),
                    "candidates[0].content.parts[0].functionCall.id that is not text"),
        "gsignature": (_gemini([{"functionCall": {"name": "run_python", "args": {}}, "thoughtSignature": 1}]),
                       "candidates[0].content.parts[0].thoughtSignature that is not text"),
        "gfinishlist": (_gemini(candidate={"finishReason": ["STOP"]}), "candidates[0].finishReason that is not text"),
        "gusage": (_gemini(usageMetadata=[]), "usageMetadata that is not an object"),
        "gusagestr": (_gemini(usageMetadata={"promptTokenCount": "ten"}),
                      "usageMetadata.promptTokenCount that is not a count"),
        "gthoughtsstr": (_gemini(usageMetadata={"promptTokenCount": 3, "thoughtsTokenCount": "2"}),
                         "usageMetadata.thoughtsTokenCount that is not a count"),
        "gfeedback": ({"promptFeedback": "SAFETY"}, "promptFeedback that is not an object"),
        "gblockreason": ({"promptFeedback": {"blockReason": ["SAFETY"]}},
                         "promptFeedback.blockReason that is not text"),
        "gnocandidates": ({"candidates": []}, "no candidates"),
        "glogprobtoken": (_gemini(candidate={"logprobsResult": {"chosenCandidates": [{"token": 5}]}}),
                          "candidates[0].logprobsResult.chosenCandidates[0].token that is not text"),
        "gtoplogprob": (_gemini(candidate={"logprobsResult": {"topCandidates": [
                            {"candidates": [{"token": "hi", "logProbability": "-1"}]}]}}),
                        "candidates[0].logprobsResult.topCandidates[0].candidates[0].logProbability that is not a number"),
    },
}
"""Each is its own script, answering every request with that answer."""

#: backend kind -> {script: an answer in a shape real servers send, which must read as the text "fine"}.
TOLERATED: dict[str, dict[str, Any]] = {
    "openai": {  # no usage, a null finish_reason (some local servers), fields we do not read
        "cnulls": _chat({"role": "assistant", "content": "fine", "refusal": None, "reasoning_content": "hmm",
                         "tool_calls": None},
                        choice={"finish_reason": None, "logprobs": None}, system_fingerprint=None),
        "cparts": _chat({"role": "assistant", "content": [{"type": "text", "text": "fi"}, {"text": "ne"}]},
                        usage={"prompt_tokens": 3, "completion_tokens": None, "total_tokens": 3}),
    },
    "gemini": {  # no usageMetadata, a thought part, a null finishReason, fields we do not read
        "gnulls": {**_gemini([{"text": "hmm", "thought": True}, {"text": "fine"}],
                             candidate={"finishReason": None, "safetyRatings": [], "index": 0}), "modelVersion": "x"},
        "gusagesome": _gemini([{"text": "fine"}], usageMetadata={"promptTokenCount": 3, "totalTokenCount": 3}),
    },
}

NOISE_CODE = ("import numpy as np, matplotlib.pyplot as plt\nrng = np.random.default_rng(0)\n"
              "for _ in range(5):\n    plt.figure()\n    plt.imshow(rng.random((400, 400)))\n    plt.show()\n"
              "print('drew 5')")  # five PNGs of ~450 KB each: noise does not compress
PLOT_CODE = ("x = 6 * 7\nprint('x is', x)\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n")

SCRIPTS = {
    "plot": [code(PLOT_CODE), code("print(x + 1)"),
             text(lambda tools: "The answer is 43." if "43" in tools[-1] else f"I saw: {tools}")],
    "csv": [code("import os\nprint(sorted(f for f in os.listdir('.') if f.startswith('input_file')))\n"
                 "print(open('input_file_0.csv').read().strip().splitlines()[-1])"),
            text(lambda tools: "read: " + tools[-1].replace("\n", " | "))],
    "noise": [code(NOISE_CODE), code(PLOT_CODE), text(lambda tools: f"I saw: {tools}")],
    "hello": [text("Hello from the scripted model.")],
    "which": [code("import sys\nprint(sys.prefix)\nprint(sys.executable)"), text("ran")],  # the run's interpreter
    "weather": [call("get_weather", {"city": "Paris"}), text(lambda tools: f"Weather report: {tools[-1]}")],
    "fail": [code("print('before')\nraise ValueError('boom')"), text("It failed.")],
    "sleep": [code("import time\nmarker = open('sleeper-marker', 'w')\nprint('sleeping', flush=True)\n"
                   "time.sleep(120)\n"), text("woke up")],
    "stream": [code("import time\nprint('start', flush=True)\ntime.sleep(6)\nprint('end')"), text("streamed")],
    "slowsecond": [code("print('first')"), HOLD, text("too late")],
    "hold": [HOLD, text("released")],
    "loop": [code("print(1)", without_code_tool=text("no more code"))] * 50,
    "badargs": [Reply("code", {"source": "print(1)"}), text("fixed")],  # not the 'code' argument
    "runaway": [Reply("response", _runaway)],
    "trickle": [Reply("response", _trickle)],
    # a run printing at the output cap (1 MiB), three times: an answer of some MB for a client that reads none of it
    "bigout": [code("print('x' * (1 << 20), end='')")] * 3 + [text("printed")],
    # three runs of 1 MiB of a control character each: 6 MiB of JSON a run (\u0001), past the default output budget
    "controls": [code("import sys\nsys.stdout.write('\\x01' * (1 << 20))")] * 3 + [text(lambda tools: "printed")],
    # five code calls in one turn, past --max-executions 3; then, asked without the tool, an answer
    "manycalls": [chat_calls(*(("run_python", json.dumps({"code": f"print({n})"})) for n in range(5))),
                  text(lambda tools: f"answered after {len(tools)} runs")],
    "argsnotobject": [chat_calls(("run_python", "[1, 2]"))],  # every turn, however often it is told
    "undeclared": [chat_calls(("get_weather", '{"city": "Paris"}'), ("rm_rf", "{}"))],  # a function never declared
    "clientargs": [chat_calls(("get_weather", "{city: Paris"))],
    "gargsnotobject": [gemini_parts({"functionCall": {"name": "run_python", "args": "print(1)"}}),
                       text(lambda tools: f"told: {tools[-1]}")],
    # a call to the client's function without an id (Gemini sends none; so do some local Chat Completions servers)
    "gweathernoid": [gemini_parts({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}),
                     text(lambda tools: f"Weather report: {tools[-1]}")],
    "cweathernoid": [raw(_chat({"role": "assistant", "content": None, "tool_calls": [
                         {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                               choice={"finish_reason": "tool_calls"})),
                     text(lambda tools: f"Weather report: {tools[-1]}")],
    "json": [text('{"city": "Paris", "degrees": 21}')],
    "cfiltered": [raw(_chat({"role": "assistant", "content": None}, choice={"finish_reason": "content_filter"}))],
    "gpromptblocked": [raw({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})],
}
#: The tokens the logprobs scripts' backends send, as /v1/responses returns them in output_text.logprobs: the
#: first message (before a code run) then the second. Chat Completions bytes come as sent (null: the token's UTF-8);
#: Gemini sends none, and leaves out a logProbability of 0, as proto JSON leaves out a default.
LOGPROBS = (
    [{"token": "Let", "bytes": [76, 101, 116], "logprob": -0.25,
      "top_logprobs": [{"token": "Let", "bytes": [76, 101, 116], "logprob": -0.25},
                       {"token": "I", "bytes": [73], "logprob": -1.5}]},
     {"token": " us", "bytes": [32, 117, 115], "logprob": 0.0, "top_logprobs": []}],
    [{"token": "Caf", "bytes": [67, 97, 102], "logprob": -0.5, "top_logprobs": []},
     {"token": "é", "bytes": [195, 169], "logprob": -2.0,
      "top_logprobs": [{"token": "é", "bytes": [195, 169], "logprob": -2.0},
                       {"token": "e", "bytes": [101], "logprob": -2.25}]}],
)


def _chat_logprobs(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    sent = [{**token, "bytes": None} if token["token"] == "é" else token for token in tokens]
    return {"content": sent}


def _gemini_logprobs(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    def candidate(token: dict[str, Any]) -> dict[str, Any]:
        return {"token": token["token"], "tokenId": 7,
                **({"logProbability": token["logprob"]} if token["logprob"] else {})}
    return {"chosenCandidates": [candidate(token) for token in tokens],
            "topCandidates": [{"candidates": [candidate(top) for top in token["top_logprobs"]]} for token in tokens],
            "logProbabilitySum": sum(token["logprob"] for token in tokens)}


SCRIPTS.update({
    "clogprobs": [raw(_chat({"role": "assistant", "content": "Let us", "tool_calls": [
                      {"id": "c0", "type": "function", "function": {"name": "run_python", "arguments":
                                                                    '{"code": "print(1)"}'}}]},
                            choice={"finish_reason": "tool_calls", "logprobs": _chat_logprobs(LOGPROBS[0])})),
                  raw(_chat({"role": "assistant", "content": "Café"},
                            choice={"logprobs": _chat_logprobs(LOGPROBS[1])}))],
    "glogprobs": [raw(_gemini([{"text": "Let"}, {"text": " us"},
                               {"functionCall": {"name": "run_python", "args": {"code": "print(1)"}}}],
                              candidate={"logprobsResult": _gemini_logprobs(LOGPROBS[0])})),
                  raw(_gemini([{"text": "Café"}], candidate={"logprobsResult": _gemini_logprobs(LOGPROBS[1])}))],
})
#: The thoughts the thoughts scripts' backends send beside each answer: before the code, then before the text.
THOUGHTS = ("I should compute it.", "It printed 1.")
_RUN_ONE = {"name": "run_python", "arguments": '{"code": "print(1)"}'}
#: The tokens of each thoughts script's two answers: (prompt, answer, thoughts); a Gemini backend counts the
#: thoughts apart (thoughtsTokenCount), a Chat Completions one within completion_tokens (reasoning_tokens).
THOUGHTS_USAGE = ((100, 5, 11), (120, 6, 13))


def _gemini_usage(step: int) -> dict[str, int]:
    prompt, answer, thoughts = THOUGHTS_USAGE[step]
    return {"promptTokenCount": prompt, "candidatesTokenCount": answer, "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + answer + thoughts}


def _chat_usage(step: int) -> dict[str, Any]:
    prompt, answer, thoughts = THOUGHTS_USAGE[step]
    return {"prompt_tokens": prompt, "completion_tokens": answer + thoughts, "total_tokens": prompt + answer + thoughts,
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


SCRIPTS.update({
    "gthoughts": [raw(_gemini([{"text": THOUGHTS[0], "thought": True, "thoughtSignature": "c2ln"},
                               {"functionCall": {"name": "run_python", "args": {"code": "print(1)"}}}],
                              usageMetadata=_gemini_usage(0))),
                  raw(_gemini([{"text": THOUGHTS[1], "thought": True}, {"text": "The answer is 1."}],
                              usageMetadata=_gemini_usage(1)))],
    # vLLM and llama.cpp send reasoning_content, OpenRouter and newer vLLM reasoning
    "cthoughts": [raw(_chat({"role": "assistant", "content": None, "reasoning_content": THOUGHTS[0],
                             "tool_calls": [{"id": "c0", "type": "function", "function": _RUN_ONE}]},
                            choice={"finish_reason": "tool_calls"}, usage=_chat_usage(0))),
                  raw(_chat({"role": "assistant", "content": "The answer is 1.", "reasoning": THOUGHTS[1]},
                            usage=_chat_usage(1)))],
})
#: Gemini finish reasons of a content-policy stop, each the script ``gstop_<REASON>``: a blocked candidate, as the
#: service sends one (no content).
CONTENT_POLICY = ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY")
#: Gemini finish reasons of a turn cut short for no content policy and no limit: an unsupported language, an
#: image model that made no image, and the catch-alls.
CUT_SHORT = ("LANGUAGE", "OTHER", "NO_IMAGE", "IMAGE_OTHER")
#: Gemini finish reasons the server has no meaning for: the enum's default, and one newer than the server.
UNKNOWN_STOP = ("FINISH_REASON_UNSPECIFIED", "SOME_NEWER_REASON")
SCRIPTS.update({f"gstop_{reason}": [raw({"candidates": [{"finishReason": reason, "index": 0}]})]
                for reason in (*CONTENT_POLICY, *CUT_SHORT)})
SCRIPTS.update({f"gtext_{reason}": [raw(_gemini([{"text": "partly"}], candidate={"finishReason": reason}))]
                for reason in (*UNKNOWN_STOP, "CONTINUATION")})
SCRIPTS.update({script: [raw(answer)] for cases in MALFORMED.values() for script, (answer, _) in cases.items()})
SCRIPTS.update({script: [raw(answer)] for cases in TOLERATED.values() for script, answer in cases.items()})


class FakeModel(ScriptedModel):
    """The scripted model with the tests' scripts, every request recorded."""

    def __init__(self) -> None:
        super().__init__(SCRIPTS)
