#define _GNU_SOURCE
#include <malloc.h>
#include "CLanyardSys.h"
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <unistd.h>

int lanyard_disable_dumps(void) {
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_CORE, &none) != 0) return -1;
    return prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

int lanyard_thread_set_effective(uid_t uid, gid_t gid) {
    // Order matters: drop the gid while still privileged, restore the uid first.
    if (uid == 0) {
        if (syscall(SYS_setresuid, -1, 0, -1) != 0) return -1;
        return (int)syscall(SYS_setresgid, -1, gid, -1);
    }
    if (syscall(SYS_setresgid, -1, gid, -1) != 0) return -1;
    return (int)syscall(SYS_setresuid, -1, uid, -1);
}

int lanyard_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int lanyard_unblock_all_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    return pthread_sigmask(SIG_SETMASK, &none, NULL);
}

void lanyard_release_free_memory(void) {
    malloc_trim(0);
}
