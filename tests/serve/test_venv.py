"""``sandbox serve --venv DIR`` (config key ``venv``): its runs use that virtual environment's interpreter; a DIR that
is none is refused before the port is bound, naming where it came from."""

from __future__ import annotations

import subprocess
import sys

from google import genai
from google.genai import types

from .conftest import REPO, start_serve, stop_serve

CODE_TOOL = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])


def test_runs_use_the_venv_given(fake_model, tmp_path, linked_venv, stdlib_image_file):
    served = start_serve(tmp_path / "serve.log", "--backend-url", f"{fake_model.url}/v1", "--backend-model", "scripted",
                         "--venv", str(linked_venv), "--image", stdlib_image_file)
    try:
        assert f", venv '{linked_venv}'" in served.log.read_text()  # the listening line says it
        client = genai.Client(api_key="x", http_options=types.HttpOptions(base_url=served.url, timeout=180_000))
        response = client.models.generate_content(model="gemini-2.5-flash", contents="SCRIPT:which", config=CODE_TOOL)
    finally:
        stop_serve(served)
    results = [p.code_execution_result for p in response.candidates[0].content.parts if p.code_execution_result]
    assert [r.output for r in results] == [f"{linked_venv}\n{linked_venv}/bin/python\n"]


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sandbox", "serve", "--port", "0", "--backend-url",
                           "http://127.0.0.1:9/v1", "--backend-model", "m", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})})


def test_a_venv_that_is_none_is_a_usage_error_naming_its_source(tmp_path):
    missing = tmp_path / "no-venv"
    why = (f"venv: {missing} is not a virtual environment (expected {missing}/pyvenv.cfg and {missing}/bin/python; "
           f"create it with: sandbox image install NAME --venv {missing})")
    config = tmp_path / "serve.toml"
    config.write_text(f'venv = "{missing}"\n')
    for args, env, source in ((["--venv", str(missing)], None, "command line"),
                              ([], {"SANDBOX_SERVE_VENV": str(missing)}, "environment + command line"),
                              (["--config", str(config)], None, f"{config} + command line")):
        done = _serve(*args, env=env)
        assert done.returncode == 2 and "listening" not in done.stdout, (done.stdout, done.stderr)
        assert done.stderr == f"sandbox: error: sandbox serve ({source}): {why}\n"
