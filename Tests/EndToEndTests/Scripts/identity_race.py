"""Invariant 2 races. Connects to the agent socket, then, depending on MODE:
  plain  — sends the request itself (control);
  fork   — forks; the parent exits; the child, holding the same socket, sends it;
  exec   — hands the socket (fd 3) to a different binary (perl), which sends it;
  fork-alive — forks; the child sends it while the parent, attested, waits alive;
  steal  — a parent copies the socket out of its live, attested child with
           pidfd_getfd(2) and sends it;
  pass   — the attested process passes the socket over SCM_RIGHTS to another
           process, which sends it while the sender waits alive.
Before handing on, it completes a Hello round trip (HELLO, hex), so the daemon has
attested it. The request frame comes hex-encoded in REQ; the response body is written
hex-encoded to stderr, followed by a line "done".
usage: identity_race.py SOCKET MODE
"""
import os
import socket
import sys

PERL = r'''
open(my $s, "+<&=3") or die "fd 3: $!";
binmode $s;
syswrite($s, pack("H*", $ENV{REQ}));
my $hdr = ""; sysread($s, $hdr, 4) == 4 or die "no header";
my $n = unpack("N", $hdr); my $body = "";
while (length($body) < $n) { my $c; sysread($s, $c, $n - length($body)) or die "eof"; $body .= $c; }
print STDERR unpack("H*", $body), "\ndone\n";
'''


def call(sock, frame_hex):
    sock.sendall(bytes.fromhex(frame_hex))
    n = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
    return sock.recv(n, socket.MSG_WAITALL)


def exchange(sock):
    sys.stderr.write(call(sock, os.environ["REQ"]).hex() + "\ndone\n")
    sys.stderr.flush()


def pidfd_getfd(pidfd, fd):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    got = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
    if got < 0:
        raise OSError(ctypes.get_errno(), "pidfd_getfd")
    return got


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    call(s, os.environ["HELLO"])  # attested now
    return s


path, mode = sys.argv[1], sys.argv[2]
if mode == "steal":
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    child = os.fork()
    if child == 0:  # the agent: attested, alive until the thief is done
        s = connect()
        os.write(ready_w, str(s.fileno()).encode())
        os.read(hold_r, 1)
        os._exit(0)
    fd = int(os.read(ready_r, 16))
    stolen = socket.socket(fileno=pidfd_getfd(os.pidfd_open(child), fd))
    exchange(stolen)
    os.write(hold_w, b"x")
    os.waitpid(child, 0)
    sys.exit(0)
if mode == "pass":
    a, b = socket.socketpair()
    child = os.fork()
    if child == 0:  # the receiver: not the process that connected
        msg, fds, _, _ = socket.recv_fds(b, 1, 1)
        exchange(socket.socket(fileno=fds[0]))
        os._exit(0)
    s = connect()
    socket.send_fds(a, [b"x"], [s.fileno()])
    os.waitpid(child, 0)  # alive and unchanged until the receiver is done
    sys.exit(0)
s = connect()
if mode == "plain":
    exchange(s)
elif mode == "fork":
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(w)
        os.read(r, 1)  # EOF: the parent, the attested process, has exited
        exchange(s)
        os._exit(0)
    os._exit(0)
elif mode == "fork-alive":
    child = os.fork()
    if child == 0:
        exchange(s)
        os._exit(0)
    os.waitpid(child, 0)
elif mode == "exec":
    os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    os.execv("/usr/bin/perl", ["perl", "-e", PERL])
