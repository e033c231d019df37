/* What ring_buffer.c and the two producer sides (spsc_rb.c, mpsc_rb.c) share inside the
 * library: the trailer address and the claim arithmetic both producers run before they
 * advance the tail their own way. Not part of the API. */
#ifndef LS_RING_BUFFER_INTERNAL_H
#define LS_RING_BUFFER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "concurrent/ls_atomic.h"
#include "concurrent/ring_buffer.h"

#define LS_RB_AT(rb, offset) ((rb)->trailer + (offset))

/* Whether a record of `required` (aligned) bytes fits at `tail`, refreshing the cached head
 * (*head, in and out) only when it seems not to; then *tail_index is where the tail is and
 * *padding the bytes to the buffer end that a record going to index 0 skips (0 when it goes
 * at the tail). False: not enough free space (LS_RB_FULL). */
static inline bool ls_rb_claim_fits(
    ls_ring_buffer_t *rb, int32_t required, int64_t tail, int64_t *head, int64_t *tail_index, int64_t *padding)
{
    const int64_t mask = rb->capacity - 1;
    if (required > rb->capacity - (tail - *head))
    {
        *head = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
        if (required > rb->capacity - (tail - *head))
        {
            return false;
        }
        ls_put_release_i64(LS_RB_AT(rb, LS_RB_HEAD_CACHE_POSITION_OFFSET), *head);
    }

    *padding = 0;
    *tail_index = tail & mask;
    const int64_t to_buffer_end = rb->capacity - *tail_index;
    if (required > to_buffer_end)
    {
        /* The record goes to index 0; the head must have passed `required` bytes there. */
        int64_t head_index = *head & mask;
        if (required > head_index)
        {
            *head = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
            head_index = *head & mask;
            if (required > head_index)
            {
                return false;
            }
            ls_put_release_i64(LS_RB_AT(rb, LS_RB_HEAD_CACHE_POSITION_OFFSET), *head);
        }
        *padding = to_buffer_end;
    }
    return true;
}

/* After the tail moved past the claim: writes the padding record a wrapping claim leaves at
 * the buffer end, and returns the claimed record's index. */
static inline int32_t ls_rb_claimed_index(ls_ring_buffer_t *rb, int64_t tail_index, int64_t padding)
{
    if (0 != padding)
    {
        uint8_t *record = rb->buffer + tail_index;
        ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, (int32_t)-padding);
        ls_put_plain_i32(record + LS_RB_TYPE_OFFSET, LS_RB_PADDING_MSG_TYPE_ID);
        ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, (int32_t)padding);
        return 0;
    }
    return (int32_t)tail_index;
}

#endif
