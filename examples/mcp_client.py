"""MCP + sandbox: start ``sandbox mcp`` and call its run_python tool with the mcp client.

    pip install 'sandbox[mcp]'
    python examples/mcp_client.py

Any MCP host can use the same server, e.g. in its JSON config:
    {"mcpServers": {"python": {"command": "sandbox", "args": ["mcp", "--policy", "default"]}}}
"""

import asyncio
import sys

from mcp import Client, StdioServerParameters
from mcp.types import ImageContent


async def main() -> None:
    server = StdioServerParameters(command=sys.executable, args=["-m", "sandbox", "mcp"])
    async with Client(server) as client:
        (tool,) = (await client.list_tools()).tools
        print(tool.name, "-", tool.description[:100], "...")
        await client.call_tool("run_python", {"code": "import numpy as np\ndata = np.arange(10) ** 2",
                                              "session_id": "demo"})
        result = await client.call_tool("run_python", {
            "code": "import matplotlib.pyplot as plt\nprint(data.sum())\nplt.plot(data)\nplt.show()",
            "session_id": "demo"})
        for item in result.content:
            print(f"image: {item.mime_type}, {len(item.data)} base64 chars" if isinstance(item, ImageContent)
                  else item.text)


asyncio.run(main())
