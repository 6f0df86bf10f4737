"""``sandbox serve``: server-side code execution for any model, over the Gemini REST API.

An application written for the service's code execution tool (``google-genai`` with
``tools=[Tool(code_execution=ToolCodeExecution())]``) runs unchanged against a local or
remote model by pointing ``HttpOptions(base_url=...)`` here: the model writes the code
(through function calling), this server runs it in the sandbox and answers with the
service's parts (``executableCode``, ``codeExecutionResult``, ``inlineData``, text) in
one request. Needs the ``serve`` extra (Starlette, uvicorn, httpx).

Modules, in the order a request meets them::

    config.py         options: file, environment, command line (one schema)
    app.py            routes, lifespan, error rendering, access log
    http.py           body cap, key, request slots, client-disconnect watch
    gemini_api.py     generateContent / streamGenerateContent / models
    responses_api.py  POST /v1/responses (OpenAI Responses-style, code_interpreter)
    responses_output.py  loop events as a Responses object and its stream events
    wire.py           Gemini JSON <-> typed parts (camelCase and snake_case, both base64 alphabets)
    loop.py           the execution loop: backend turn, run code in a session, repeat
    transcript.py     a Gemini conversation as a function-calling backend's turns
    backends/         openai_chat.py (Chat Completions), gemini.py (Gemini function calling)
    errors.py         ApiError in Google's shape, ConfigError
    scripted.py       a scripted model (no weights, no key) for the tests and ``sandbox bench serve``
"""
