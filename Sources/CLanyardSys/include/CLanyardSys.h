#ifndef LANYARD_SYS_H
#define LANYARD_SYS_H
#include <sys/types.h>

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

/// Returns the heap's free pages to the kernel (glibc malloc_trim): after a burst of
/// connections the allocator otherwise keeps them, and the daemon's RSS stays at its peak.
void lanyard_release_free_memory(void);

#endif

