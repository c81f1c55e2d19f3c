#include "lanyard.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int lanyard_connect(lanyard_conn *conn, const char *path) {
    if (!path) path = getenv("LANYARD_SOCKET");
    if (!path || !*path) path = LANYARD_DEFAULT_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    conn->fd = fd;
    conn->next_id = 1;
    conn->max_frame = LANYARD_DEFAULT_MAX_FRAME;
    return 0;
}

void lanyard_close(lanyard_conn *conn) {
    if (conn->fd >= 0) close(conn->fd);
    conn->fd = -1;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) return -ECONNRESET;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Reads one frame; checks the length against our cap before allocating the body. */
static int read_frame(lanyard_conn *conn, uint8_t **body, size_t *len) {
    uint8_t hdr[4];
    int rc = read_all(conn->fd, hdr, 4);
    if (rc) return rc;
    uint32_t n = ((uint32_t)hdr[0] << 24) | ((uint32_t)hdr[1] << 16) | ((uint32_t)hdr[2] << 8) | hdr[3];
    if (n == 0 || n > conn->max_frame) return -EPROTO;
    uint8_t *buf = malloc(n);
    if (!buf) return -ENOMEM;
    rc = read_all(conn->fd, buf, n);
    if (rc) {
        free(buf);
        return rc;
    }
    *body = buf;
    *len = n;
    return 0;
}

int lanyard_call(lanyard_conn *conn, Lanyard__V1__Request *req, Lanyard__V1__Response **out) {
    req->id = conn->next_id++;
    size_t n = lanyard__v1__request__get_packed_size(req);
    if (n == 0 || n > conn->max_frame) return -EMSGSIZE;
    uint8_t *frame = malloc(4 + n);
    if (!frame) return -ENOMEM;
    frame[0] = (uint8_t)(n >> 24);
    frame[1] = (uint8_t)(n >> 16);
    frame[2] = (uint8_t)(n >> 8);
    frame[3] = (uint8_t)n;
    lanyard__v1__request__pack(req, frame + 4);
    int rc = write_all(conn->fd, frame, 4 + n);
    free(frame);
    if (rc) return rc;

    for (;;) {
        uint8_t *body = NULL;
        size_t len = 0;
        rc = read_frame(conn, &body, &len);
        if (rc) return rc;
        Lanyard__V1__Response *resp = lanyard__v1__response__unpack(NULL, len, body);
        free(body);
        if (!resp) return -EPROTO;
        if (resp->id == req->id || resp->id == 0) { /* id 0: a connection-level error */
            *out = resp;
            return 0;
        }
        /* A response to an earlier pipelined call this simple client no longer waits for. */
        lanyard__v1__response__free_unpacked(resp, NULL);
    }
}

void lanyard_response_free(Lanyard__V1__Response *resp) {
    if (resp) lanyard__v1__response__free_unpacked(resp, NULL);
}

int lanyard_hello(lanyard_conn *conn, Lanyard__V1__Response **out) {
    Lanyard__V1__Request req = LANYARD__V1__REQUEST__INIT;
    Lanyard__V1__HelloRequest hello = LANYARD__V1__HELLO_REQUEST__INIT;
    hello.client = "liblanyard";
    req.call_case = LANYARD__V1__REQUEST__CALL_HELLO;
    req.hello = &hello;
    return lanyard_call(conn, &req, out);
}

int lanyard_authorize(lanyard_conn *conn, const char *capability, const char *resource, Lanyard__V1__Response **out) {
    Lanyard__V1__Request req = LANYARD__V1__REQUEST__INIT;
    Lanyard__V1__AuthorizeRequest auth = LANYARD__V1__AUTHORIZE_REQUEST__INIT;
    auth.capability = (char *)capability;
    auth.resource = (char *)(resource ? resource : "");
    req.call_case = LANYARD__V1__REQUEST__CALL_AUTHORIZE;
    req.authorize = &auth;
    return lanyard_call(conn, &req, out);
}

int lanyard_status_code(const Lanyard__V1__Response *resp) {
    return resp->status ? (int)resp->status->code : 0;
}

const char *lanyard_status_message(const Lanyard__V1__Response *resp) {
    return resp->status && resp->status->message ? resp->status->message : "";
}

const char *lanyard_decision_name(Lanyard__V1__Decision d) {
    switch (d) {
    case LANYARD__V1__DECISION__DECISION_ALLOW: return "ALLOW";
    case LANYARD__V1__DECISION__DECISION_DENY: return "DENY";
    case LANYARD__V1__DECISION__DECISION_PENDING: return "PENDING";
    default: return "UNSPECIFIED";
    }
}
