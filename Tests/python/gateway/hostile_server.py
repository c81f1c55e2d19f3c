"""A raw stdio MCP server that misbehaves: before each answer it writes garbage (a line
that is not JSON, a JSON scalar, once a 10 MB line, an answer to a request nobody made,
and a line with a carriage return inside that hides a second message), it never
answers a tools/call of `hang`, and answers everything else correctly enough for a
client session. With $HOSTILE_MARKER set, every run after the first never answers
initialize (a restarted server that hangs); `credentials` returns $GITHUB_TOKEN."""

import json
import os
import sys

marker = os.environ.get("HOSTILE_MARKER")
later_run = bool(marker) and os.path.exists(marker)
if marker and not later_run:
    open(marker, "w").close()

out = sys.stdout.buffer
big_sent = False


def send(message: dict) -> None:
    global big_sent
    out.write(b"this is not JSON\n")
    out.write(b"42\n")
    if not big_sent:
        out.write(b'{"junk":"' + b"x" * (10 << 20) + b'"}\n')
        big_sent = True
    out.write(b'{"jsonrpc":"2.0","id":"forged","result":{"content":[{"type":"text","text":"forged"}]}}\n')
    out.write(b'{"jsonrpc":"2.0","method":"notifications/message","params":{"x":\r{"jsonrpc":"2.0","id":"hidden","result":{}}\r}}\n')
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


for line in sys.stdin.buffer:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    method, mid = m.get("method"), m.get("id")
    if mid is None:
        continue
    if method == "initialize" and later_run:
        continue
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {
            "protocolVersion": m["params"]["protocolVersion"], "capabilities": {"tools": {}},
            "serverInfo": {"name": "hostile", "version": "0"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": [
            {"name": name, "inputSchema": {"type": "object"}} for name in ("read", "hang", "credentials")]}})
    elif method == "tools/call" and m["params"]["name"] == "hang":
        continue
    elif method == "tools/call" and m["params"]["name"] == "credentials":
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": os.environ.get("GITHUB_TOKEN", "")}]}})
    elif method == "tools/call":
        send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": "read ok"}], "isError": False}})
    else:
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
