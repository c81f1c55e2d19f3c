"""One long-lived agent process for tests: connects to SOCKET once, then for each line
of stdin (a length-prefixed request frame, hex) sends it and writes the response body
(hex) as a line to stdout; exits at end of input. A line `exec PROGRAM` replaces the
process with PROGRAM running this script again (same pid, another executable file), which
connects anew. usage: agent_process.py SOCKET"""
import os
import socket
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(sys.argv[1])
for line in sys.stdin:
    if line.startswith("exec "):
        program = line.split(" ", 1)[1].strip()
        sys.stdout.write("exec\n")
        sys.stdout.flush()
        os.execv(program, [program, os.path.abspath(__file__), sys.argv[1]])
    sock.sendall(bytes.fromhex(line.strip()))
    n = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
    sys.stdout.write(sock.recv(n, socket.MSG_WAITALL).hex() + "\n")
    sys.stdout.flush()
