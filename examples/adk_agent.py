"""Google ADK + sandbox: SandboxCodeExecutor where an agent had UnsafeLocalCodeExecutor.

    pip install -e '.[adk]'
    python examples/adk_agent.py                    # offline: a scripted model writes the code
    GOOGLE_API_KEY=... python examples/adk_agent.py gemini-2.5-flash

ADK's own runner (InMemoryRunner) drives both; offline the model is a scripted ``BaseLlm``.
Figures become artifacts named per code block (``run2_figure_1.png``).
"""

import asyncio
import os
import sys
from typing import AsyncGenerator

from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import InMemoryRunner
from google.genai import types

from sandbox.adapters.adk import SandboxCodeExecutor


class TwoStepModel(BaseLlm):
    """Stands in for Gemini offline: writes two code blocks, then answers."""

    turn: int = 0

    async def generate_content_async(self, llm_request: LlmRequest, stream: bool = False) -> AsyncGenerator[LlmResponse, None]:
        self.turn += 1
        text = {1: "```python\nimport pandas as pd\ndf = pd.DataFrame({'v': [3, 1, 4, 1, 5]})\nprint(df.v.mean())\n```",
                2: "```python\nprint(df.v.max())  # df is still here: the executor is stateful\n"
                   "import matplotlib.pyplot as plt\nplt.bar(range(5), df.v)\nplt.show()\n```"}.get(
                    self.turn, "The mean is 2.8 and the max is 5.")
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))


async def main() -> None:
    online = len(sys.argv) > 1 and os.environ.get("GOOGLE_API_KEY")
    model = sys.argv[1] if online else TwoStepModel(model="offline")
    executor = SandboxCodeExecutor(stateful=True, timeout_seconds=30)   # the one line that changes
    agent = LlmAgent(name="analyst", model=model, code_executor=executor,
                     instruction="Answer with Python code blocks; they run in a sandbox.")
    runner = InMemoryRunner(agent=agent, app_name="example")
    session = await runner.session_service.create_session(app_name="example", user_id="me")
    question = types.Content(role="user", parts=[types.Part(text="Mean and max of 3, 1, 4, 1, 5? Plot them.")])
    try:
        async for event in runner.run_async(user_id="me", session_id=session.id, new_message=question):
            for part in (event.content.parts if event.content else None) or []:
                if part.code_execution_result:
                    print("result:", part.code_execution_result.output.strip())
                elif part.text:
                    print(f"{event.author}:", part.text.strip())
        artifacts = await runner.artifact_service.list_artifact_keys(app_name="example", user_id="me",
                                                                     session_id=session.id)
        print("artifacts:", artifacts)
    finally:
        executor.close()


if __name__ == "__main__":
    asyncio.run(main())
