/*
 * The reference servers lanyard-bench measures Lanyard against, with the same framing
 * (4-byte big-endian length + body) on a Unix socket:
 *   refserver SOCKET echo            answers each frame with the same frame, one thread
 *                                    per connection — a transport ceiling;
 *   refserver SOCKET epoll           the same echo from one thread over epoll (faster
 *                                    with many connections on few cores) — the other;
 *   refserver SOCKET durable FILE    first appends a 256-byte record per request to FILE
 *                                    and makes it durable with fdatasync, committing
 *                                    every request waiting at that moment together (group
 *                                    commit) — the durable ceiling.
 * Runs until killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int durable_fd = -1;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queued = PTHREAD_COND_INITIALIZER, committed = PTHREAD_COND_INITIALIZER;
static uint64_t appended, synced;  /* records queued / made durable */

static void *committer(void *arg) {
    (void)arg;
    char record[256];
    memset(record, 'r', sizeof record);
    for (;;) {
        pthread_mutex_lock(&mu);
        while (appended == synced) pthread_cond_wait(&queued, &mu);
        uint64_t upto = appended;
        pthread_mutex_unlock(&mu);
        for (uint64_t i = synced; i < upto; i++)
            if (write(durable_fd, record, sizeof record) != (ssize_t)sizeof record) { perror("refserver: write"); exit(1); }
        if (fdatasync(durable_fd) != 0) { perror("refserver: fdatasync"); exit(1); }
        pthread_mutex_lock(&mu);
        synced = upto;
        pthread_cond_broadcast(&committed);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static int read_full(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    uint8_t *buf = malloc(4 + 65536);
    for (;;) {
        if (read_full(fd, buf, 4)) break;
        size_t n = ((size_t)buf[0] << 24) | ((size_t)buf[1] << 16) | ((size_t)buf[2] << 8) | buf[3];
        if (n == 0 || n > 65536 || read_full(fd, buf + 4, n)) break;
        if (durable_fd >= 0) {
            pthread_mutex_lock(&mu);
            uint64_t mine = ++appended;
            pthread_cond_signal(&queued);
            while (synced < mine) pthread_cond_wait(&committed, &mu);
            pthread_mutex_unlock(&mu);
        }
        if (write(fd, buf, 4 + n) != (ssize_t)(4 + n)) break;
    }
    free(buf);
    close(fd);
    return NULL;
}

/* One connection of the epoll echo: the bytes read and not yet answered. */
typedef struct {
    int fd;
    size_t len;
    uint8_t buf[4 + 65536];
} conn;

/* Writes all of p (the peer reads its answer before it sends again: a full socket buffer
 * only happens with a misbehaving peer, which is then waited for). */
static int write_full(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EAGAIN) {
            fd_set out;
            FD_ZERO(&out);
            FD_SET(fd, &out);
            select(fd + 1, NULL, &out, NULL, NULL);
            continue;
        }
        if (w <= 0) { if (w < 0 && errno == EINTR) continue; return -1; }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads what c's socket has and answers every whole frame; -1 when the connection ends. */
static int echo_ready(conn *c) {
    for (;;) {
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r == 0) return -1;
        if (r < 0) return errno == EAGAIN ? 0 : errno == EINTR ? echo_ready(c) : -1;
        c->len += (size_t)r;
        size_t at = 0;
        while (c->len - at >= 4) {
            uint8_t *h = c->buf + at;
            size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
            if (n == 0 || n > 65536) return -1;
            if (c->len - at < 4 + n) break;
            if (write_full(c->fd, h, 4 + n)) return -1;
            at += 4 + n;
        }
        memmove(c->buf, c->buf + at, c->len - at);
        c->len -= at;
    }
}

static int serve_epoll(int s) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};  /* NULL: the listening socket */
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev)) { perror("refserver: epoll"); return 1; }
    struct epoll_event ready[256];
    for (;;) {
        int n = epoll_wait(ep, ready, 256, -1);
        if (n < 0) { if (errno == EINTR) continue; perror("refserver: epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            conn *c = ready[i].data.ptr;
            if (!c) {
                int fd = accept4(s, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0) continue;
                c = calloc(1, sizeof *c);
                c->fd = fd;
                struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev)) { close(fd); free(c); }
            } else if (echo_ready(c)) {
                close(c->fd);  /* also leaves the epoll set */
                free(c);
            }
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[2], "echo") && strcmp(argv[2], "epoll") && (strcmp(argv[2], "durable") || argc < 4))) {
        fprintf(stderr, "usage: refserver SOCKET echo | refserver SOCKET epoll | refserver SOCKET durable FILE\n");
        return 2;
    }
    if (!strcmp(argv[2], "durable")) {
        durable_fd = open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (durable_fd < 0) { perror("refserver: open"); return 1; }
        pthread_t t;
        pthread_create(&t, NULL, committer, NULL);
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    unlink(argv[1]);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || chmod(argv[1], 0666) || listen(s, 1024)) { perror("refserver: listen"); return 1; }
    if (!strcmp(argv[2], "epoll")) return serve_epoll(s);
    for (;;) {
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) { if (errno == EINTR || errno == ECONNABORTED) continue; perror("refserver: accept"); return 1; }
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_create(&t, &at, serve, (void *)(intptr_t)c);
        pthread_attr_destroy(&at);
    }
}
