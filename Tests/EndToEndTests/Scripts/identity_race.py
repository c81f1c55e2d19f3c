"""Invariant 2 races. Connects to the agent socket, then, depending on MODE:
  plain  — sends the request itself (control);
  fork   — forks; the parent exits; the child, holding the same socket, sends it;
  exec   — hands the socket (fd 3) to a different binary (perl), which sends it.
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


path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
call(s, os.environ["HELLO"])  # attested now
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
elif mode == "exec":
    os.dup2(s.fileno(), 3)
    os.set_inheritable(3, True)
    os.execv("/usr/bin/perl", ["perl", "-e", PERL])
