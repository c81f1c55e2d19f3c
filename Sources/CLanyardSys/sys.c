#define _GNU_SOURCE
#include <malloc.h>
#include "CLanyardSys.h"
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <unistd.h>
#include <fcntl.h>
#include <spawn.h>

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

ssize_t lanyard_recv_attributed(int fd, void *buf, size_t len, pid_t *sender) {
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    union {
        struct cmsghdr align;
        char bytes[CMSG_SPACE(sizeof(struct ucred))];
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof(control.bytes)};
    *sender = -1;
    ssize_t n;
    do {
        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
            struct ucred cred;
            memcpy(&cred, CMSG_DATA(c), sizeof(cred));
            *sender = cred.pid;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            // A peer may pass descriptors along with its bytes: never keep them.
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < count; i++) {
                int passed;
                memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                close(passed);
            }
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) *sender = -1;  // credentials cut off: attribute to no one
    return n;
}

int lanyard_enable_passcred(int fd) {
    int on = 1;
    return setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
}

int lanyard_accept(int fd) {
    return accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int lanyard_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int lanyard_epoll_add(int epfd, int fd, uint64_t token, int oneshot) {
    // A oneshot registration starts disarmed, the first read request arms it. Disarmed
    // means EPOLLONESHOT too: the kernel reports hang-ups and errors whatever the events
    // asked for, and a level-triggered hang-up before the first arm would be reported on
    // every wait for as long as the connection stays open (its calls still running).
    struct epoll_event ev = {.events = oneshot ? EPOLLONESHOT : EPOLLIN, .data.u64 = token};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int lanyard_epoll_arm(int epfd, int fd, uint64_t token) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.u64 = token};
    return epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
}

int lanyard_epoll_remove(int epfd, int fd) {
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
}

int lanyard_epoll_wait(int epfd, uint64_t *tokens, int max) {
    struct epoll_event events[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, events, max, -1);
    for (int i = 0; i < n; i++) tokens[i] = events[i].data.u64;
    return n;
}

int lanyard_pipe(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

static int spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err, int isolated, pid_t *pid) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0) { posix_spawn_file_actions_destroy(&actions); return rc; }
    sigemptyset(&none);
    sigfillset(&all);
    if ((rc = posix_spawn_file_actions_adddup2(&actions, in, 0)) == 0
        && (rc = posix_spawn_file_actions_adddup2(&actions, out, 1)) == 0
        && (rc = posix_spawn_file_actions_adddup2(&actions, err, 2)) == 0
        && (rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) == 0
        && (!isolated || (rc = posix_spawn_file_actions_addchdir_np(&actions, "/")) == 0)
        && (!isolated || (rc = posix_spawnattr_setpgroup(&attr, 0)) == 0)
        && (rc = posix_spawnattr_setsigmask(&attr, &none)) == 0
        && (rc = posix_spawnattr_setsigdefault(&attr, &all)) == 0
        && (rc = posix_spawnattr_setflags(&attr, (isolated ? POSIX_SPAWN_SETPGROUP : 0) | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)) == 0) {
        rc = posix_spawn(pid, path, &actions, &attr, argv, envp);
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc;
}

int lanyard_spawn_isolated(const char *path, char *const argv[], char *const envp[], int in, int out, pid_t *pid) {
    return spawn(path, argv, envp, in, out, out, 1, pid);
}

int lanyard_spawn(const char *path, char *const argv[], char *const envp[], int in, int out, int err, pid_t *pid) {
    return spawn(path, argv, envp, in, out, err, 0, pid);
}

void lanyard_name_thread(const char *name) {
    char short_name[16];
    strncpy(short_name, name, sizeof short_name - 1);
    short_name[sizeof short_name - 1] = 0;
    pthread_setname_np(pthread_self(), short_name);
}
