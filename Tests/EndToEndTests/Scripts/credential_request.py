"""A root process asking the credentials socket as systemd's (sd-mkdcreds) would, but
orphaned to PID 1 by a double fork (as `setsid -f` does) rather than forked by systemd:
  1. forks a child that forks the asker and exits; the asker's parent is then PID 1;
  2. the asker joins cgroup v2 CGROUP (created; "-": stays where it is), binds the abstract
     address ADDRESS ("-": unbound), connects to SOCKET and reads to EOF (10 s at most);
  3. prints JSON: {"ppid", "cgroup", "bytes", "zeros" (all bytes zero), "text" (when not all
     zeros), "error"}, and leaves the cgroup (the folders it made are removed).
usage: credential_request.py SOCKET ADDRESS CGROUP
"""
import json
import os
import socket
import sys

path, address, cgroup = sys.argv[1], sys.argv[2], sys.argv[3]
# cgroup v2: the unified hierarchy's mount (a v1/v2 hybrid mounts it at .../unified).
root = next((r for r in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified") if os.path.exists(r + "/cgroup.procs")
             and os.path.exists(r + "/cgroup.subtree_control")), None)


def ask():
    result = {"ppid": os.getppid()}
    made = []
    try:
        if cgroup != "-":
            if root is None:
                raise OSError("no cgroup v2 hierarchy")
            d = cgroup
            while d not in ("", "/") and not os.path.exists(root + d):
                made.append(d)
                d = os.path.dirname(d)
            for d in reversed(made):
                os.mkdir(root + d)
            with open(root + cgroup + "/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
        with open("/proc/self/cgroup") as f:
            result["cgroup"] = next((line[3:].strip() for line in f if line.startswith("0::")), None)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if address != "-":
            s.bind("\0" + address)
        s.settimeout(10)
        s.connect(path)
        s.shutdown(socket.SHUT_WR)  # as systemd does: it sends nothing
        data = bytearray()
        while chunk := s.recv(65536):
            data += chunk
        result["bytes"] = len(data)
        result["zeros"] = len(data) > 0 and data.count(0) == len(data)
        if not result["zeros"]:
            result["text"] = data.decode("utf-8", "replace")
    except OSError as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        if cgroup != "-" and root is not None:
            with open(root + "/cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
            for d in made:
                os.rmdir(root + d)
    return result


report_r, report_w = os.pipe()
go_r, go_w = os.pipe()
middle = os.fork()
if middle == 0:
    if os.fork() == 0:
        os.close(report_r)
        os.close(go_w)
        os.setsid()
        os.read(go_r, 1)  # the middle process is reaped: our parent is PID 1 (or a subreaper) now
        os.write(report_w, json.dumps(ask()).encode())
        os._exit(0)
    os._exit(0)
os.close(report_w)
os.close(go_r)
os.waitpid(middle, 0)
os.write(go_w, b"x")
out = bytearray()
while chunk := os.read(report_r, 65536):
    out += chunk
print(out.decode())
