/* Publishing into a log buffer: shared (many writers in many processes claim space with an
 * atomic add on the raw tail) or exclusive (one writer keeps the tail locally and releases
 * it). The publisher limit comes from the subscribers' position counters (Aeron's IPC rule:
 * slowest live subscriber + window). Return values are Aeron's. */
#ifndef LS_PUBLICATION_H
#define LS_PUBLICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "concurrent/counters.h"
#include "logbuffer/logbuffer.h"

#define LS_PUBLICATION_NOT_CONNECTED (-1)
#define LS_PUBLICATION_BACK_PRESSURED (-2)
#define LS_PUBLICATION_ADMIN_ACTION (-3)
#define LS_PUBLICATION_CLOSED (-4)
#define LS_PUBLICATION_MAX_POSITION_EXCEEDED (-5)
#define LS_PUBLICATION_ERROR (-6) /* bad argument; see ls_errmsg() */

typedef struct ls_publication_stct
{
    ls_logbuffer_t log;
    bool exclusive;
    bool closed;
    int64_t window_length;
    int64_t position_limit; /* cached; recomputed from the subscribers when reached */
    /* Where the subscriber position counters that bound this publisher are (all of them, found
     * by ls_publication_refresh_limit; the binding frees dead subscribers' counters). */
    ls_counters_t *counters;
    int32_t subscriber_count; /* as of the last refresh */
    int32_t publisher_limit_id; /* counter mirroring position_limit, or -1 */
    /* Exclusive writer state (unused when shared). */
    int32_t term_id;
    int32_t term_offset;
    int32_t partition_index;
    int64_t term_begin_position;
    /* A media driver's publisher-limit counter when the driver owns the log
     * (ls_publication_bind_driver), else NULL. */
    const int64_t *driver_limit;
} ls_publication_t;

typedef struct ls_buffer_claim_stct
{
    uint8_t *frame;  /* the frame header of the claim */
    uint8_t *data;   /* where the payload goes */
    int32_t length;  /* payload length */
    uint8_t *log_metadata; /* to wake blocked readers on commit */
} ls_buffer_claim_t;

/* Validates the log (ls_logbuffer_init) and takes the exclusive writer state from its tail.
 * `counters` may be NULL (then no subscriber can connect). */
int ls_publication_init(
    ls_publication_t *pub, void *memory, size_t length, bool exclusive, ls_counters_t *counters);

/* Appends one message, fragmenting it into frames of at most mtu when it is longer than
 * max_payload_length (flags BEGIN..END). Returns the new position (> 0) or a status above.
 * A term rotation is retried internally, so ADMIN_ACTION is rare (another shared writer
 * still rotating). Messages longer than max_message_length return LS_PUBLICATION_ERROR. */
int64_t ls_publication_offer(ls_publication_t *pub, const uint8_t *data, size_t length, int64_t reserved_value);

/* Offers data[offsets[i] .. offsets[i] + lengths[i]) for i < count, in order, stopping at
 * the first that cannot go. *accepted = how many went. Returns the position after the
 * last one accepted, or the status that stopped the first. */
int64_t ls_publication_offer_batch(
    ls_publication_t *pub,
    const uint8_t *data,
    const int64_t *offsets,
    const int32_t *lengths,
    int32_t count,
    int32_t *accepted);

/* Claims one unfragmented frame of `length` (<= max_payload_length) to fill in place; the
 * claim is published by ls_buffer_claim_commit or turned into padding by ..._abort. */
int64_t ls_publication_try_claim(ls_publication_t *pub, int32_t length, ls_buffer_claim_t *claim);
int ls_buffer_claim_commit(ls_buffer_claim_t *claim);
int ls_buffer_claim_abort(ls_buffer_claim_t *claim);

/* Current position (exclusive: local; shared: from the raw tail). */
int64_t ls_publication_position(const ls_publication_t *pub);
/* Finds this log's subscriber position counters (type SUBSCRIBER_POSITION, stream key =
 * this session and stream), recomputes position_limit = min(their positions) + window and
 * mirrors it to the publisher limit counter; returns it (LS_PUBLICATION_NOT_CONNECTED with none). */
int64_t ls_publication_refresh_limit(ls_publication_t *pub);
/* Binds the publication to the media driver that owns its log (lockstep.aeron): the limit is
 * the driver's publisher-limit counter, read with acquire on every offer; at the limit the
 * result is BACK_PRESSURED while the driver marks the log connected (is_connected), else
 * NOT_CONNECTED; and close leaves the end-of-stream position, the driver's field, alone. */
int ls_publication_bind_driver(ls_publication_t *pub, const int64_t *publisher_limit);

/* Marks closed; an exclusive publication also sets the end-of-stream position. */
void ls_publication_close(ls_publication_t *pub);

#endif
