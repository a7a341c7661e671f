"""An MCP server that lets agents use the pool: `super_agent_run` and its helpers.

Start it with `python -m mcp_proxy --transport stdio|http`, or call `serve`.
"""

from mcp_proxy.result import PoolStatusResult, RunLookupResult, RunToolResult
from mcp_proxy.server import (
    CANCEL_TOOL,
    RESULT_TOOL,
    STATUS_TOOL,
    TOOL_NAME,
    TOOL_NAMES,
    build_server,
    serve,
)
from mcp_proxy.tools import PoolTools

__all__ = [
    "CANCEL_TOOL",
    "RESULT_TOOL",
    "STATUS_TOOL",
    "TOOL_NAME",
    "TOOL_NAMES",
    "PoolStatusResult",
    "PoolTools",
    "RunLookupResult",
    "RunToolResult",
    "build_server",
    "serve",
]
