/*
 * Closed-loop load generator for lanyardd and the reference servers: N connections, one
 * thread each, one request in flight per connection, for a fixed time. The request is
 * encoded once with protobuf-c; each answer is read as a frame and (with --check)
 * unpacked. Prints one JSON line: requests, seconds, rps, p50/p99/p999 in µs, errors.
 *   loadgen SOCKET SCENARIO CONNECTIONS SECONDS [--check]
 *   SCENARIO: hello | authorize | provision | identity | idle | ssh-identities
 * idle: opens CONNECTIONS connections, completes one Hello on each, holds them SECONDS.
 * ssh-identities: an ssh-agent's REQUEST_IDENTITIES (the same framing: a peer measured
 * against the same ceilings); --check expects IDENTITIES_ANSWER.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lanyard/v1/agent.pb-c.h"

static const char *socket_path;
static uint8_t *request_frame;
static size_t request_len;
static double seconds;
static int check;
static int ssh;  /* the ssh-agent protocol instead of Lanyard's */
static atomic_int stop;

typedef struct {
    uint64_t *lat_ns;
    size_t n, cap;
    long errors;
} worker;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int connect_socket(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, socket_path, sizeof a.sun_path - 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("loadgen: connect");
        exit(1);
    }
    return fd;
}

static int read_full(int fd, uint8_t *p, size_t n) {
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* One round trip; 0 when answered (and, with --check, answered OK). */
static int round_trip(int fd, uint8_t *buf, size_t cap) {
    if (write(fd, request_frame, request_len) != (ssize_t)request_len) return -1;
    uint8_t h[4];
    if (read_full(fd, h, 4)) return -1;
    size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (n > cap || read_full(fd, buf, n)) return -1;
    if (check && ssh) return n >= 1 && buf[0] == 12 ? 0 : -2;  /* SSH2_AGENT_IDENTITIES_ANSWER */
    if (check) {
        Lanyard__V1__Response *r = lanyard__v1__response__unpack(NULL, n, buf);
        int bad = !r || (r->status && r->status->code != 0);
        if (r) lanyard__v1__response__free_unpacked(r, NULL);
        return bad ? -2 : 0;
    }
    return 0;
}

static void *run(void *arg) {
    worker *w = arg;
    int fd = connect_socket();
    uint8_t *buf = malloc(1 << 16);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        uint64_t t0 = now_ns();
        int rc = round_trip(fd, buf, 1 << 16);
        if (rc == -1) { w->errors++; break; }
        if (rc) { w->errors++; continue; }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 1 << 16;
            w->lat_ns = realloc(w->lat_ns, w->cap * sizeof *w->lat_ns);
        }
        w->lat_ns[w->n++] = now_ns() - t0;
    }
    free(buf);
    close(fd);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: loadgen SOCKET hello|authorize|provision|identity|idle|ssh-identities CONNECTIONS SECONDS [--check]\n");
        return 2;
    }
    socket_path = argv[1];
    const char *scenario = argv[2];
    int conns = atoi(argv[3]);
    seconds = atof(argv[4]);
    check = argc > 5 && strcmp(argv[5], "--check") == 0;

    Lanyard__V1__Request req = LANYARD__V1__REQUEST__INIT;
    Lanyard__V1__HelloRequest hello = LANYARD__V1__HELLO_REQUEST__INIT;
    Lanyard__V1__AuthorizeRequest authorize = LANYARD__V1__AUTHORIZE_REQUEST__INIT;
    Lanyard__V1__ProvisionRequest provision = LANYARD__V1__PROVISION_REQUEST__INIT;
    Lanyard__V1__IssueIdentityRequest identity = LANYARD__V1__ISSUE_IDENTITY_REQUEST__INIT;
    char *scope[] = {"github:read_repo"};
    req.id = 1;
    if (!strcmp(scenario, "hello") || !strcmp(scenario, "idle")) {
        req.call_case = LANYARD__V1__REQUEST__CALL_HELLO;
        req.hello = &hello;
    } else if (!strcmp(scenario, "authorize")) {
        authorize.capability = "github:read_repo";
        req.call_case = LANYARD__V1__REQUEST__CALL_AUTHORIZE;
        req.authorize = &authorize;
    } else if (!strcmp(scenario, "provision")) {
        provision.service = "github";
        provision.n_scope = 1;
        provision.scope = scope;
        provision.ttl_seconds = 60;
        req.call_case = LANYARD__V1__REQUEST__CALL_PROVISION;
        req.provision = &provision;
    } else if (!strcmp(scenario, "identity")) {
        identity.audience = "bench";
        req.call_case = LANYARD__V1__REQUEST__CALL_ISSUE_IDENTITY;
        req.issue_identity = &identity;
    } else if (!strcmp(scenario, "ssh-identities")) {
        ssh = 1;
    } else {
        fprintf(stderr, "loadgen: unknown scenario %s\n", scenario);
        return 2;
    }
    static uint8_t ssh_request[] = {0, 0, 0, 1, 11};  /* SSH2_AGENTC_REQUEST_IDENTITIES */
    if (ssh) {
        request_frame = ssh_request;
        request_len = sizeof ssh_request;
    } else {
        size_t n = lanyard__v1__request__get_packed_size(&req);
        request_len = 4 + n;
        request_frame = malloc(request_len);
        request_frame[0] = (uint8_t)(n >> 24);
        request_frame[1] = (uint8_t)(n >> 16);
        request_frame[2] = (uint8_t)(n >> 8);
        request_frame[3] = (uint8_t)n;
        lanyard__v1__request__pack(&req, request_frame + 4);
    }

    if (!strcmp(scenario, "idle")) {
        uint8_t buf[4096];
        for (int i = 0; i < conns; i++) {
            int fd = connect_socket();  /* kept open until exit */
            if (round_trip(fd, buf, sizeof buf)) { fprintf(stderr, "loadgen: idle connection %d not answered\n", i); return 1; }
        }
        printf("{\"connections\":%d}\n", conns);
        fflush(stdout);
        usleep((useconds_t)(seconds * 1e6));
        return 0;
    }

    worker *ws = calloc((size_t)conns, sizeof *ws);
    pthread_t *ts = calloc((size_t)conns, sizeof *ts);
    uint64_t t0 = now_ns();
    for (int i = 0; i < conns; i++) pthread_create(&ts[i], NULL, run, &ws[i]);
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&stop, 1);
    for (int i = 0; i < conns; i++) pthread_join(ts[i], NULL);
    double elapsed = (double)(now_ns() - t0) / 1e9;

    size_t total = 0;
    long errors = 0;
    for (int i = 0; i < conns; i++) { total += ws[i].n; errors += ws[i].errors; }
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < conns; i++) { memcpy(all + k, ws[i].lat_ns, ws[i].n * sizeof *all); k += ws[i].n; }
    qsort(all, total, sizeof *all, cmp);
#define PCT(p) (total ? (double)all[(size_t)((double)(total - 1) * (p))] / 1000.0 : 0.0)
    printf("{\"requests\":%zu,\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"errors\":%ld}\n",
           total, elapsed, (double)total / elapsed, PCT(0.50), PCT(0.99), PCT(0.999), errors);
    return errors && !total ? 1 : 0;
}
