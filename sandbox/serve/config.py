"""Options of ``sandbox serve``: one frozen schema, three sources.

The dataclasses below are the documentation of every option. A value comes from, in
increasing priority: a TOML config file (``--config FILE``, keys as below, the
backend's in a ``[backend]`` table), the environment (``SANDBOX_SERVE_<KEY>``,
``SANDBOX_SERVE_BACKEND_<KEY>``), and the command line (``--<key-with-dashes>``,
``--backend-<key>``; ``backend.kind`` is ``--backend``). The backend's API key also
falls back to the variable its own SDK reads (``OPENAI_API_KEY``; ``GEMINI_API_KEY``
or ``GOOGLE_API_KEY``). Everything is validated by :mod:`sandbox.schema`: a bad value
is a :class:`~sandbox.serve.errors.ConfigError` naming the dotted key, e.g.
``sandbox serve (environment): port must be between 0 and 65535 (got 70000)``.

Safe to leave running: a host other than loopback is refused unless ``api_key`` is set.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Mapping

from .. import schema
from ..errors import value_text
from .errors import ConfigError

#: Where the gemini backend sends requests unless ``backend.url`` says otherwise.
GEMINI_URL = "https://generativelanguage.googleapis.com"

#: The environment variables each backend's own SDK reads its key from, in order.
BACKEND_KEY_VARIABLES: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}

_ENV_PREFIX = "SANDBOX_SERVE_"
_Positive = Annotated[float, schema.positive]


@dataclass(frozen=True)
class BackendConfig:
    """The model that writes the code (``[backend]`` in the config file)."""

    kind: Annotated[str, schema.one_of("backend", ("openai", "gemini"))] = "openai"
    """``openai``: any OpenAI-compatible Chat Completions endpoint (llama.cpp, vLLM, Ollama, OpenAI);
    ``gemini``: the Gemini API through function calling (the code runs here)."""
    url: str = ""
    """Base URL: for ``openai`` the one ending in ``/v1`` (``http://127.0.0.1:8080/v1``); for
    ``gemini`` default :data:`GEMINI_URL`."""
    model: str = ""
    """Model name the backend is asked for."""
    api_key: str = field(default="", repr=False)
    """Key sent to the backend (``Authorization: Bearer`` / ``x-goog-api-key``); may be empty for local servers."""
    timeout_seconds: _Positive = 300.0
    """Longest wait for one backend answer; past it the request fails with DEADLINE_EXCEEDED."""
    vision: bool = False
    """Send figures back to an ``openai`` backend as images (needs a vision model); the gemini backend always does."""

    def cross_check(self, prefix: str) -> str | None:
        if self.kind == "openai" and not self.url:
            return f"{prefix}url must be set for the openai backend (--backend-url http://HOST:PORT/v1)"
        if not self.model:
            return f"{prefix}model must be set (--backend-model NAME)"
        return None


@dataclass(frozen=True)
class ServeConfig:
    """Every option of ``sandbox serve``. Units are in the names."""

    host: str = "127.0.0.1"
    """Address to bind. Anything but loopback needs ``api_key``."""
    port: Annotated[int, schema.between(0, 65535)] = 8000
    """TCP port (0: any free port, printed when listening)."""
    api_key: str = field(default="", repr=False)
    """Key clients must send (``x-goog-api-key`` header or ``key=`` query; ``Authorization: Bearer`` on /v1)."""
    models: tuple[str, ...] = ("gemini-*",)
    """Model names clients may ask for (shell patterns); the backend model is always accepted.
    Each is answered by the backend model, so an application's ``gemini-2.5-flash`` runs unchanged."""
    policy: schema.NonEmptyStr = "default"
    """Sandbox policy of every run (name or TOML path)."""
    image: schema.NonEmptyStr = "vertex"
    """Sandbox image (library set) of every run (name or TOML path)."""
    venv: str = ""
    """Virtual environment holding the image (``sandbox image install NAME --venv DIR``), whose interpreter runs
    the zygote; empty: this interpreter. Checked at load: a path that is no virtual environment is refused."""
    max_request_bytes: Annotated[int, schema.positive] = 20_000_000
    """Largest request body; larger ones get INVALID_ARGUMENT (the service's inline limit is 20 MB)."""
    max_concurrent_requests: Annotated[int, schema.between(1, 1024)] = 8
    """Generation requests in progress at once; one more gets 429 RESOURCE_EXHAUSTED at once."""
    max_executions: Annotated[int, schema.between(1, 100)] = 10
    """Code runs per request; then the model must answer in text (finishReason TOO_MANY_TOOL_CALLS if not)."""
    max_response_image_bytes: Annotated[int, schema.positive] = 32_000_000
    """Bytes of images one request may return, every run's together (before base64); a run's images past it
    are left out, and its result says so to the model and the client. The policy alone allows far more
    (limits.max_returned_images x max_returned_file_bytes per run, times max_executions), all held in the server's memory."""
    max_response_output_bytes: Annotated[int, schema.positive] = 16_000_000
    """Bytes of run output one request may return, all its runs together, counted as the answer's JSON writes them
    (a control character takes 6, a character past ASCII 6 or 12); a run's output past it is cut, and its result says
    so to the model and the client. The policy's limits.max_output_bytes per run, times max_executions, would make
    up to 6 times as much JSON, held in the server's memory several times over."""
    request_timeout_seconds: _Positive = 600.0
    """Longest a request may take, every backend call and run included (DEADLINE_EXCEEDED past it)."""
    client_timeout_seconds: _Positive = 60.0
    """Longest a client may stall while sending a request: its head (request line and headers) must all
    come within this of connecting or of the previous answer, and no gap in its body may be longer."""
    backend: BackendConfig = field(default_factory=BackendConfig)

    def cross_check(self, prefix: str) -> str | None:
        if self.venv:
            from ..errors import ImageError
            from ..image import interpreter_for
            try:
                interpreter_for(self.venv)
            except ImageError as exc:  # refused with the source it came from, before the port is bound
                return f"{prefix}venv: {exc}"
        if self.api_key != self.api_key.strip():  # a blank key was a key: '?key=%20' let anyone in
            return (f"{prefix}api_key has blank characters at its start or end (or is blank): no client can send "
                    "those in a header; give a key without them, or none")
        if not self.api_key and not is_loopback(self.host):
            return (f"{prefix}host {value_text(self.host)} is not a loopback address: refusing to serve code execution "
                    "to the network without a key; set api_key (--api-key or SANDBOX_SERVE_API_KEY)")
        return None


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load(*, file: str | Path | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> ServeConfig:
    """The configuration from a TOML file, the environment and command-line ``overrides``.

    ``overrides`` holds dotted keys (``"backend.url"``) to values already typed; None
    values are ignored (an option not given).
    """
    data: dict[str, Any] = schema.read_toml(Path(file), ConfigError) if file is not None else {}
    origins = [str(file)] if file is not None else []
    from_env = _from_env(env or {})
    if from_env:
        origins.append("environment")
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if given:
        origins.append("command line")
    for key, value in [*from_env.items(), *given.items()]:
        _set(data, key, value)
    _backend_key_fallback(data, env or {})
    source = f"sandbox serve ({' + '.join(origins) or 'defaults'})"
    return schema.build(ServeConfig, data, source=source, error=ConfigError)


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    head, _, rest = dotted.partition(".")
    if rest:
        table = data.setdefault(head, {})
        if not isinstance(table, dict):
            raise ConfigError(f"sandbox serve: {head} must be a table (got {value_text(table)})")
        _set(table, rest, value)
    else:
        data[head] = value


def _keys() -> dict[str, Any]:
    """Dotted key -> annotation, for every leaf option."""
    keys: dict[str, Any] = {}
    for cls, prefix in ((ServeConfig, ""), (BackendConfig, "backend.")):
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            if f.name != "backend":
                keys[prefix + f.name] = hints[f.name]
    return keys


def env_name(dotted: str) -> str:
    """``backend.url`` -> ``SANDBOX_SERVE_BACKEND_URL`` (``backend.kind`` -> ``SANDBOX_SERVE_BACKEND``)."""
    name = "backend" if dotted == "backend.kind" else dotted.replace(".", "_")
    return _ENV_PREFIX + name.upper()


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found = {}
    for dotted, annotation in _keys().items():
        name = env_name(dotted)
        if name in env:
            found[dotted] = _typed(env[name], annotation, name)
    return found


def _typed(text: str, annotation: Any, name: str) -> Any:
    """An environment string as the option's type; a bad one is a ConfigError naming the variable."""
    base = typing.get_origin(annotation) is Annotated and typing.get_args(annotation)[0] or annotation
    if typing.get_origin(base) is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    try:
        return _PARSERS.get(base, str)(text)
    except ValueError:
        raise ConfigError(f"sandbox serve (environment): {name} must be {_WORDS.get(base, 'text')} "
                          f"(got {value_text(text)})") from None


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


_PARSERS: dict[type, typing.Callable[[str], Any]] = {int: int, float: float, bool: _boolean, str: str}
_WORDS = {int: "an int", float: "a number", bool: "true or false", str: "text"}


def _backend_key_fallback(data: dict[str, Any], env: Mapping[str, str]) -> None:
    backend = data.setdefault("backend", {})
    if not isinstance(backend, dict) or backend.get("api_key"):
        return
    for name in BACKEND_KEY_VARIABLES.get(backend.get("kind", "openai"), ()):
        if env.get(name):
            backend["api_key"] = env[name]
            return
