"""Invariant 2 under forced PID reuse. Run as root as the init of a new PID namespace
(`unshare --pid --fork --mount-proc`), so that lanyardd and the agents share pid numbers:
  1. starts lanyardd (the rest of argv) and waits for its agent socket (SOCKET);
  2. an agent process (uid AGENT_UID) connects, is attested by a Hello (HELLO, hex),
     hands its socket to us (SCM_RIGHTS) and exits;
  3. we set ns_last_pid so that the next process gets the agent's pid, and start an
     impostor with that pid, the same uid and the same binary, holding the socket;
  4. the impostor sends REQ (hex) and writes the response body, hex, to stderr, then "done".
The impostor first writes "pid reused: P", P being the agent's pid and its own.
usage: pid_reuse.py SOCKET AGENT_UID AGENT_GID LANYARDD ARGS...
"""
import os
import socket
import subprocess
import sys
import time

IMPOSTOR = r'''
import os, socket, sys
s = socket.socket(fileno=3)
s.sendall(bytes.fromhex(os.environ["REQ"]))
n = int.from_bytes(s.recv(4, socket.MSG_WAITALL), "big")
sys.stderr.write(s.recv(n, socket.MSG_WAITALL).hex() + "\ndone\n")
'''


def call(sock, frame_hex):
    sock.sendall(bytes.fromhex(frame_hex))
    n = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
    return sock.recv(n, socket.MSG_WAITALL)


path, uid, gid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
daemon = subprocess.Popen(sys.argv[4:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 20
while not os.path.exists(path):
    if daemon.poll() is not None or time.monotonic() > deadline:
        sys.exit("lanyardd did not start")
    time.sleep(0.05)

for attempt in range(20):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    agent = os.fork()
    if agent == 0:
        os.setgid(gid)
        os.setuid(uid)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        call(s, os.environ["HELLO"])  # attested now
        socket.send_fds(theirs, [b"x"], [s.fileno()])
        os._exit(0)
    _, fds, _, _ = socket.recv_fds(ours, 1, 1)
    os.waitpid(agent, 0)  # the attested process is gone; its pid is free

    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(agent - 1))
    impostor = os.fork()
    if impostor == 0:
        if os.getpid() != agent:
            os._exit(3)  # another process took the pid first; try again
        sys.stderr.write(f"pid reused: {agent}\n")
        sys.stderr.flush()
        os.setgid(gid)
        os.setuid(uid)
        os.dup2(fds[0], 3)
        os.execv(sys.executable, [sys.executable, "-c", IMPOSTOR])
    _, status = os.waitpid(impostor, 0)
    os.close(fds[0])
    if os.waitstatus_to_exitcode(status) != 3:
        break
daemon.terminate()
daemon.wait()
