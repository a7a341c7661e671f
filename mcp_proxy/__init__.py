"""An MCP server that lets agents start runs on the pool with `super_agent_run`.

Start it with `python -m mcp_proxy --transport stdio|http`, or call `serve`.
"""

from mcp_proxy.result import RunToolResult
from mcp_proxy.server import TOOL_NAME, build_server, serve

__all__ = ["TOOL_NAME", "RunToolResult", "build_server", "serve"]
