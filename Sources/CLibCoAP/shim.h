#ifndef SOTTO_CLIBCOAP_SHIM_H
#define SOTTO_CLIBCOAP_SHIM_H

// Debian's libcoap3 4.3.1, OpenSSL variant (pkg-config libcoap-3-openssl).
// It has no thread-safe mode: SottoCoAP makes every coap_* call on one thread.
#include <coap3/coap.h>

#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>

// coap_address_t holds a union of sockaddr types that Swift sees as an anonymous member;
// copying the bytes here keeps the Swift side free of that layout.
static inline int sotto_coap_address_set(coap_address_t *out, const struct sockaddr *address,
                                         socklen_t length) {
    coap_address_init(out);
    if (length > sizeof(out->addr)) return 0;
    memcpy(&out->addr, address, length);
    out->size = length;
    return 1;
}

// A non-blocking eventfd that other threads write to so that the libcoap thread wakes up.
static inline int sotto_coap_new_wake_fd(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

// Puts `wake_fd` into the epoll set libcoap waits on, so that a write to it ends
// coap_io_process() early. libcoap's epoll loop skips events whose data.ptr is NULL (that is how
// it marks its own timer), so it leaves this fd to us. Returns 1 when added, 0 when this libcoap
// was built without epoll (then use sotto_coap_io_process_waking's select path), -1 on error.
static inline int sotto_coap_watch_wake_fd(coap_context_t *context, int wake_fd) {
    int epoll_fd = coap_context_get_coap_fd(context);
    if (epoll_fd < 0) return 0;
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = EPOLLIN;
    event.data.ptr = NULL;
    return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &event) == 0 ? 1 : -1;
}

// One turn of libcoap's I/O loop that also ends when `wake_fd` becomes readable.
static inline int sotto_coap_io_process_waking(coap_context_t *context, uint32_t timeout_ms,
                                               int wake_fd, int wake_fd_in_epoll) {
    if (wake_fd_in_epoll) return coap_io_process(context, timeout_ms);
    fd_set read_fds;
    FD_ZERO(&read_fds);
    FD_SET(wake_fd, &read_fds);
    return coap_io_process_with_fds(context, timeout_ms, wake_fd + 1, &read_fds, NULL, NULL);
}

#endif
