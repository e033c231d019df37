/* Agrona-compatible ring buffers over caller-provided memory: one-to-one (a single producer
 * release-stores the tail: spsc_rb.c) and many-to-one (producers CAS the tail: mpsc_rb.c).
 * Consumers are single; records, the consumer side and the trailer are ring_buffer.c's,
 * shared by both. */
#ifndef LS_RING_BUFFER_H
#define LS_RING_BUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "concurrent/doorbell.h"
#include "concurrent/ring_buffer_descriptor.h"

typedef enum ls_rb_write_result
{
    LS_RB_SUCCESS = 0,
    LS_RB_ERROR = -1, /* bad argument; see ls_errmsg() */
    LS_RB_FULL = -2   /* not enough free space: back-pressure, nothing written */
} ls_rb_write_result_t;

typedef enum ls_rb_read_action
{
    LS_RB_ABORT = 1,    /* stop, do not consume this message */
    LS_RB_BREAK = 2,    /* consume this message and stop */
    LS_RB_COMMIT = 3,   /* consume up to here now and continue */
    LS_RB_CONTINUE = 4  /* continue; consume at the end of the read */
} ls_rb_read_action_t;

typedef struct ls_ring_buffer_stct
{
    uint8_t *buffer;
    uint8_t *trailer;
    int64_t capacity;
    int32_t max_message_length;
    bool many_producers;
} ls_ring_buffer_t;

typedef void (*ls_rb_handler_t)(int32_t msg_type_id, const uint8_t *data, size_t length, void *clientd);
typedef ls_rb_read_action_t (*ls_rb_controlled_handler_t)(
    int32_t msg_type_id, const uint8_t *data, size_t length, void *clientd);

/* Validates the layout of `length` bytes (capacity + trailer) and the trailer's positions. */
int ls_rb_init(ls_ring_buffer_t *rb, void *memory, size_t length, bool many_producers);

/* Producer side. */
int ls_rb_write(ls_ring_buffer_t *rb, int32_t msg_type_id, const uint8_t *data, size_t length);
/* Returns the index of the claimed payload (>= 0), LS_RB_FULL, or LS_RB_ERROR. */
int32_t ls_rb_try_claim(ls_ring_buffer_t *rb, int32_t msg_type_id, size_t length);
int ls_rb_commit(ls_ring_buffer_t *rb, int32_t index);
int ls_rb_abort(ls_ring_buffer_t *rb, int32_t index);

/* Consumer side. */
/* The consumer's doorbell at its head (doorbell.h): every commit, write and abort rings it. */
void ls_rb_doorbell(ls_ring_buffer_t *rb, ls_doorbell_t *bell);
/* Sleeps until a producer commits, at most timeout_ns, unless a record is committed at the
 * head already. Returns 1 when woken or something is there, 0 on timeout or a signal. */
int ls_rb_wait(ls_ring_buffer_t *rb, int64_t timeout_ns);
/* Reads return the number of messages handled, or -1 (LS_EFORMAT) when a record header is
 * corrupt; the records before it are consumed. */
int64_t ls_rb_read(ls_ring_buffer_t *rb, ls_rb_handler_t handler, void *clientd, int64_t limit);
int64_t ls_rb_controlled_read(
    ls_ring_buffer_t *rb, ls_rb_controlled_handler_t handler, void *clientd, int64_t limit);
/* Batch form for bindings: describes up to `limit` committed messages from the head, across
 * the buffer end, without
 * consuming them. consumed[i] is the byte count to consume through message i, and
 * *scanned the count through the last record seen (padding included). Returns the number
 * of messages, or -1 (LS_EFORMAT) for a corrupt record header before any message. */
int64_t ls_rb_scan(
    ls_ring_buffer_t *rb,
    int32_t *types,
    int32_t *offsets,
    int32_t *lengths,
    int64_t *consumed,
    int64_t limit,
    int64_t *scanned);
/* Zeroes `bytes` from the head (so 0 means "not written" on the next lap) and advances it. */
void ls_rb_consume(ls_ring_buffer_t *rb, size_t bytes);
bool ls_rb_unblock(ls_ring_buffer_t *rb);
/* For a consumer taking over from one that died (killed while zeroing what it had read):
 * pads from the head to the first record from which headers chain to the tail. Returns the
 * bytes padded (0: the ring was intact). Those records were consumed already; a consumer
 * that must not see a record twice dedups them (the sequencer does). */
int64_t ls_rb_recover(ls_ring_buffer_t *rb);

int64_t ls_rb_size(const ls_ring_buffer_t *rb);
int64_t ls_rb_producer_position(const ls_ring_buffer_t *rb);
int64_t ls_rb_consumer_position(const ls_ring_buffer_t *rb);
int64_t ls_rb_next_correlation_id(ls_ring_buffer_t *rb);
void ls_rb_consumer_heartbeat_time(ls_ring_buffer_t *rb, int64_t now_ms);
int64_t ls_rb_consumer_heartbeat_time_value(const ls_ring_buffer_t *rb);

#endif
