/* libFuzzer target: bytes a daemon (or an impostor on its socket) sends → the C client's
 * response path (frame header, length cap, protobuf-c unpack, id matching, accessors).
 * The input is written to one end of a socketpair, which is then closed; lanyard_call
 * reads from the other. Built and run by scripts/fuzz.sh. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lanyard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int sv[2];
    if (size > 60000 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
    int buf = 1 << 20;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    if (size && write(sv[0], data, size) != (ssize_t)size) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    shutdown(sv[0], SHUT_WR);

    lanyard_conn conn;
    memset(&conn, 0, sizeof conn);
    conn.fd = sv[1];
    conn.max_frame = LANYARD_DEFAULT_MAX_FRAME;
    conn.next_id = (data && size) ? data[0] : 1;

    Lanyard__V1__Response *resp = NULL;
    if (lanyard_hello(&conn, &resp) == 0) {
        (void)lanyard_status_code(resp);
        const char *msg = lanyard_status_message(resp);
        if (msg) (void)strlen(msg);
        if (resp->result_case == LANYARD__V1__RESPONSE__RESULT_AUTHORIZE)
            (void)strlen(lanyard_decision_name(resp->authorize->decision));
        lanyard_response_free(resp);
    }
    close(sv[0]);
    close(sv[1]);
    return 0;
}
