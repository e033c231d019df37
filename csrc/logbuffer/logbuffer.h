/* An Aeron log buffer over caller-provided memory: validation, formatting of a fresh log,
 * and position arithmetic (spec/aeron-formats.md §3). */
#ifndef LS_LOGBUFFER_H
#define LS_LOGBUFFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "logbuffer/logbuffer_descriptor.h"
#include "protocol/frame_descriptor.h"

typedef struct ls_logbuffer_stct
{
    uint8_t *terms[LS_LOG_PARTITION_COUNT];
    uint8_t *metadata;
    int32_t term_length;
    int32_t position_bits_to_shift;
    int32_t initial_term_id;
    int32_t mtu_length;
    int32_t max_payload_length; /* mtu - 32: the largest payload of one frame */
    int32_t max_message_length; /* min(term_length / 8, 16 MiB): the largest fragmented message */
    int32_t session_id;         /* from the default frame header */
    int32_t stream_id;
    int64_t max_position;       /* term_length * 2^31 */
} ls_logbuffer_t;

/* 3 x term_length + 4096 metadata, aligned to page_size; -1 when either length is invalid. */
int64_t ls_logbuffer_file_length(int32_t term_length, int32_t page_size);

/* Writes the metadata of a fresh log into zeroed memory of ls_logbuffer_file_length() bytes:
 * the active term is `active_term_id` (>= initial_term_id, wrapping) and its tail starts at
 * `term_offset` (a multiple of 32), as Aeron's term-id/term-offset channel parameters do.
 * Window = term_length / 2, end-of-stream = INT64_MAX, default header = DATA, flags 0xC0. */
int ls_logbuffer_format(
    void *memory,
    size_t length,
    int32_t term_length,
    int32_t page_size,
    int32_t mtu_length,
    int32_t initial_term_id,
    int32_t active_term_id,
    int32_t term_offset,
    int32_t session_id,
    int32_t stream_id,
    int64_t correlation_id);

/* Validates memory holding a log (ours or real Aeron's) before anything trusts it: length vs
 * term length and page size, term length / page size / mtu ranges, default header length
 * and version, active term count vs tail counters. -1 with LS_EFORMAT naming the field. */
int ls_logbuffer_init(ls_logbuffer_t *log, void *memory, size_t length);

/* ls_logbuffer_init for the log of a media driver's network image, whose tail counters and
 * active term count the receiver never maintains (all zero): everything else is validated. */
int ls_logbuffer_init_untailed(ls_logbuffer_t *log, void *memory, size_t length);

int64_t ls_logbuffer_position(const ls_logbuffer_t *log, int32_t term_id, int32_t term_offset);
int32_t ls_logbuffer_term_id(const ls_logbuffer_t *log, int64_t position);
int32_t ls_logbuffer_term_offset(const ls_logbuffer_t *log, int64_t position);
int32_t ls_logbuffer_partition_index(const ls_logbuffer_t *log, int64_t position);

int32_t ls_logbuffer_active_term_count(const ls_logbuffer_t *log);
int64_t ls_logbuffer_raw_tail(const ls_logbuffer_t *log, int32_t partition_index);
/* The position of the active term's tail (term offset capped at the term length). */
int64_t ls_logbuffer_tail_position(const ls_logbuffer_t *log);
int64_t ls_logbuffer_end_of_stream_position(const ls_logbuffer_t *log);
void ls_logbuffer_set_end_of_stream_position(ls_logbuffer_t *log, int64_t position);
/* The first position whose bytes are still intact: the start of the previous term (or of
 * the log's first written term), for a subscriber that starts from the retained log. */
int64_t ls_logbuffer_retained_start_position(const ls_logbuffer_t *log);
/* Moves the log from term `term_id` (count `term_count`) to the next: with `clean`, zeroes the
 * partition two terms ahead (it holds term_id - 1, which every subscriber has passed), then
 * sets the next partition's tail to (term_id + 1, 0) and CASes the active term count. Used by
 * publishers and, for a dead publisher, by the unblocker. A media driver's log is cleaned by
 * the driver (behind its sender, which may still have to send or resend term_id - 1): its
 * publisher rotates without `clean`, as Aeron's client does. True when this call advanced the
 * count. */
bool ls_logbuffer_rotate(ls_logbuffer_t *log, int32_t term_count, int32_t term_id, bool clean);

#endif
