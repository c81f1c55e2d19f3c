#ifndef LANYARD_SYS_H
#define LANYARD_SYS_H
#include <sys/types.h>
#include <stdint.h>

/// No core dumps and no ptrace/proc access by other users: crash output holds no secret.
int lanyard_disable_dumps(void);

/// Sets the effective uid/gid of the calling thread only (raw syscalls, not glibc's
/// process-wide setxid broadcast). Tests use it to connect as another uid.
int lanyard_thread_set_effective(uid_t uid, gid_t gid);

/// Unblocks every signal: a launcher (such as systemd-socket-activate) may exec us with
/// SIGTERM blocked, which would make graceful shutdown impossible.
int lanyard_unblock_all_signals(void);

/// pidfd_open(2): a pidfd for `pid`, or -1 with errno set.
int lanyard_pidfd_open(pid_t pid);

/// Names the calling thread (at most 15 bytes are kept), as ps and perf show it.
void lanyard_name_thread(const char *name);

/// Returns the heap's free pages to the kernel (glibc malloc_trim): after a burst of
/// connections the allocator otherwise keeps them, and the daemon's RSS stays at its peak.
void lanyard_release_free_memory(void);

/// recvmsg(2) on a Unix stream socket with SO_PASSCRED set: reads at most `len` bytes
/// into `buf` and stores the pid of the process that sent them in `*sender` (-1 when the
/// kernel attached no credentials). The kernel never returns bytes of two senders in one
/// read. Returns the byte count, 0 at end of stream, or -1 with errno set.
ssize_t lanyard_recv_attributed(int fd, void *buf, size_t len, pid_t *sender);

/// Turns on SO_PASSCRED, so that every read reports its sender.
int lanyard_enable_passcred(int fd);

/// accept4(2), non-blocking and close-on-exec: a connected descriptor, or -1 with errno.
int lanyard_accept(int fd);

/// epoll, reduced to what the socket reactor needs: one token per descriptor.
/// `oneshot`: report readiness once, until `lanyard_epoll_arm` asks again.
int lanyard_epoll_create(void);
int lanyard_epoll_add(int epfd, int fd, uint64_t token, int oneshot);
int lanyard_epoll_arm(int epfd, int fd, uint64_t token);
int lanyard_epoll_remove(int epfd, int fd);
/// Waits for readiness; writes up to `max` tokens and returns their count (-1: EINTR).
int lanyard_epoll_wait(int epfd, uint64_t *tokens, int max);

/// pipe2(2) with O_CLOEXEC: neither end leaks into a program another thread starts.
int lanyard_pipe(int fds[2]);

/// posix_spawn(2) of a notification command: `in` as its stdin, `out` as its stdout and
/// stderr, no other descriptor, its own process group, working directory /, every signal
/// unblocked and at its default. Stores the pid in `*pid`; 0 or an errno value.
int lanyard_spawn_isolated(const char *path, char *const argv[], char *const envp[], int in, int out, pid_t *pid);

/// posix_spawn(2) with `in`, `out` and `err` as the child's stdin, stdout and stderr, no
/// other descriptor, every signal at its default, in the caller's working directory and
/// process group (the test suites' children). 0 or an errno value.
int lanyard_spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err, pid_t *pid);

#endif
