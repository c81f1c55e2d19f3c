/*
 * liblanyard — a small C client for lanyardd's agent socket.
 *
 * Frames are a 4-byte big-endian length plus one protobuf message (protobuf-c).
 * The daemon identifies the caller from the kernel; nothing here claims an identity.
 * Responses larger than the client's frame cap are refused before they are read.
 */
#ifndef LANYARD_H
#define LANYARD_H

#include <stddef.h>
#include <stdint.h>
#include "lanyard/v1/agent.pb-c.h"

#define LANYARD_DEFAULT_SOCKET "/run/lanyard/agent.sock"
#define LANYARD_DEFAULT_MAX_FRAME (64u * 1024u)

typedef struct lanyard_conn {
    int fd;
    uint64_t next_id;
    uint32_t max_frame;
} lanyard_conn;

/* Connects to `path` (NULL: $LANYARD_SOCKET, else the default). Returns 0 or -errno. */
int lanyard_connect(lanyard_conn *conn, const char *path);
void lanyard_close(lanyard_conn *conn);

/*
 * Sends `req` (its id is set here) and reads the response with the same id.
 * On success (return 0) *out is a response to free with lanyard_response_free().
 * Returns -errno on I/O errors, -EPROTO on a malformed or oversized frame.
 * A non-OK status is still a success here: check (*out)->status->code.
 */
int lanyard_call(lanyard_conn *conn, Lanyard__V1__Request *req, Lanyard__V1__Response **out);
void lanyard_response_free(Lanyard__V1__Response *resp);

/* Convenience calls. */
int lanyard_hello(lanyard_conn *conn, Lanyard__V1__Response **out);
int lanyard_authorize(lanyard_conn *conn, const char *capability, const char *resource,
                      Lanyard__V1__Response **out);

/* The status code of a response (0 = OK), and its message ("" when none). */
int lanyard_status_code(const Lanyard__V1__Response *resp);
const char *lanyard_status_message(const Lanyard__V1__Response *resp);
const char *lanyard_decision_name(Lanyard__V1__Decision d);

#endif
