/*
 * Example: ask lanyardd who we are, then whether we may use capabilities.
 *   whoami_authorize [CAPABILITY...]      (socket: $LANYARD_SOCKET)
 * Prints one line per call; exits 0 when every call got an answer.
 */
#include <stdio.h>
#include <string.h>

#include "lanyard.h"

int main(int argc, char **argv) {
    lanyard_conn conn;
    int rc = lanyard_connect(&conn, NULL);
    if (rc) {
        fprintf(stderr, "whoami_authorize: cannot connect to lanyardd: %s\n", strerror(-rc));
        return 1;
    }
    Lanyard__V1__Response *resp = NULL;
    rc = lanyard_hello(&conn, &resp);
    if (rc) {
        fprintf(stderr, "whoami_authorize: hello failed: %s\n", strerror(-rc));
        lanyard_close(&conn);
        return 1;
    }
    if (lanyard_status_code(resp) != 0) {
        printf("whoami: status %d: %s\n", lanyard_status_code(resp), lanyard_status_message(resp));
    } else if (resp->result_case == LANYARD__V1__RESPONSE__RESULT_HELLO && resp->hello->caller) {
        const Lanyard__V1__Identity *id = resp->hello->caller;
        printf("whoami: agent=%s uri=%s uid=%u pid=%d\n", id->agent, id->uri, id->uid, id->pid);
    }
    lanyard_response_free(resp);

    for (int i = 1; i < argc; i++) {
        resp = NULL;
        rc = lanyard_authorize(&conn, argv[i], NULL, &resp);
        if (rc) {
            fprintf(stderr, "whoami_authorize: authorize failed: %s\n", strerror(-rc));
            lanyard_close(&conn);
            return 1;
        }
        if (lanyard_status_code(resp) != 0) {
            printf("authorize %s: status %d: %s\n", argv[i], lanyard_status_code(resp), lanyard_status_message(resp));
        } else {
            const Lanyard__V1__AuthorizeResponse *a = resp->authorize;
            printf("authorize %s: %s (%s)%s%s\n", argv[i], lanyard_decision_name(a->decision), a->reason,
                   a->approval_id[0] ? " approval=" : "", a->approval_id);
        }
        lanyard_response_free(resp);
    }
    lanyard_close(&conn);
    return 0;
}
