"""An MCP server (the Python SDK's FastMCP, `MCPServer` in mcp 2) that records every
call it receives, one JSON line each, in the file named by $RECORDING_LOG: what the
gateway tests check the server did or did not see."""

import json
import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("recording")


def record(tool: str, **arguments: object) -> None:
    with open(os.environ["RECORDING_LOG"], "a") as log:
        log.write(json.dumps({"tool": tool, "arguments": arguments, "pid": os.getpid()}) + "\n")


@server.tool()
def read(path: str) -> str:
    """LOW in the test policy."""
    record("read", path=path)
    return f"contents of {path}"


@server.tool()
def write(path: str, content: str) -> str:
    """MEDIUM in the test policy."""
    record("write", path=path, content=content)
    return f"wrote {len(content)} bytes to {path}"


@server.tool()
def deploy(target: str) -> str:
    """HIGH in the test policy."""
    record("deploy", target=target)
    return f"deployed {target}"


@server.tool()
def secret() -> str:
    """In the policy's catalog, granted to no agent."""
    record("secret")
    return "the secret tool ran"


@server.tool()
def unlisted() -> str:
    """In no policy at all."""
    record("unlisted")
    return "the unlisted tool ran"


@server.tool()
def credentials() -> dict[str, object]:
    """What the server process was given: its environment credential, its credential file, its pid."""
    record("credentials")
    directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
    token_file = ""
    if directory:
        with open(os.path.join(directory, "token.txt")) as f:
            token_file = f.read()
    return {"env": os.environ.get("GITHUB_TOKEN", ""), "file": token_file, "pid": os.getpid(),
            "directory": directory}


@server.tool()
def hang() -> str:
    """Never answers (the gateway's --call-timeout-seconds answers the client)."""
    record("hang")
    time.sleep(3600)
    return "late"


if __name__ == "__main__":
    print(f"recording server {os.getpid()} starting", file=sys.stderr)
    server.run()
