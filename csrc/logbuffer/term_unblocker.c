#include <string.h>

#include "concurrent/ls_atomic.h"
#include "logbuffer/term_unblocker.h"
#include "util/ls_bitutil.h"

/* True when the position is the start of the term after the active one and that term's tail
 * has passed its end: the writer that crossed it has not (yet) rotated. */
static bool ls_image_rotation_stalled(const ls_image_t *image, int64_t position, int32_t *term_count, int32_t *term_id)
{
    const ls_logbuffer_t *log = &image->log;
    if (0 != ls_logbuffer_term_offset(log, position))
    {
        return false;
    }
    const int32_t count = ls_logbuffer_active_term_count(log);
    const int64_t raw_tail = ls_logbuffer_raw_tail(log, ls_logbuffer_index_by_term_count(count));
    const int32_t active_term_id = ls_logbuffer_tail_term_id(raw_tail);
    if ((int32_t)((uint32_t)active_term_id + 1) != ls_logbuffer_term_id(log, position) ||
        ls_logbuffer_tail_term_offset(raw_tail) <= log->term_length)
    {
        return false;
    }
    *term_count = count;
    *term_id = active_term_id;
    return true;
}

bool ls_image_is_blocked(const ls_image_t *image)
{
    const ls_logbuffer_t *log = &image->log;
    const int64_t position = ls_get_plain_i64(&image->current_position);
    const uint8_t *frame = log->terms[ls_logbuffer_partition_index(log, position)] + ls_logbuffer_term_offset(log, position);
    if (ls_get_acquire_i32(frame + LS_FRAME_LENGTH_OFFSET) > 0)
    {
        return false;
    }
    int32_t term_count, term_id;
    return ls_logbuffer_tail_position(log) > position || ls_image_rotation_stalled(image, position, &term_count, &term_id);
}

static bool ls_image_confirm_zeroed(const uint8_t *term, int32_t from, int32_t down_to)
{
    for (int32_t i = from - LS_FRAME_ALIGNMENT; i >= down_to; i -= LS_FRAME_ALIGNMENT)
    {
        if (0 != ls_get_acquire_i32(term + i + LS_FRAME_LENGTH_OFFSET))
        {
            return false;
        }
    }
    return true;
}

bool ls_image_unblock(ls_image_t *image)
{
    ls_logbuffer_t *log = &image->log;
    const int64_t position = ls_get_plain_i64(&image->current_position);
    const int32_t term_length = log->term_length;
    const int32_t offset = ls_logbuffer_term_offset(log, position);
    const int32_t term_id = ls_logbuffer_term_id(log, position);
    uint8_t *term = log->terms[ls_logbuffer_partition_index(log, position)];
    uint8_t *frame = term + offset;
    int32_t stalled_count, stalled_term_id;

    const int32_t length = ls_get_acquire_i32(frame + LS_FRAME_LENGTH_OFFSET);
    if (length < 0)
    {
        /* Claimed and never committed: its writer died in between (or has stalled past the
         * timeout, Aeron's accepted risk). Pad exactly the claim; the CAS loses to a writer
         * that commits after all, though its type would then read PAD. */
        const int64_t claimed = -(int64_t)length;
        if (!ls_frame_fits_term(claimed, offset, term_length))
        {
            return false; /* no writer claims that (e.g. INT32_MIN): corruption, not a dead writer */
        }
        ls_frame_set_type(frame, LS_FRAME_TYPE_PAD);
        return ls_cas_i32(frame + LS_FRAME_LENGTH_OFFSET, length, (int32_t)claimed);
    }
    if (0 != length)
    {
        return false;
    }
    const int64_t tail_position = ls_logbuffer_tail_position(log);
    if (tail_position <= position)
    {
        /* Nothing claimed here yet, unless the writer that crossed the previous term's end
         * died before rotating: rotate for it. */
        return ls_image_rotation_stalled(image, position, &stalled_count, &stalled_term_id) &&
            ls_logbuffer_rotate(log, stalled_count, stalled_term_id, true);
    }

    /* The gap runs to the next written frame, else to the tail, else to the term end. */
    const int64_t term_end = position - offset + term_length;
    const int32_t limit = tail_position >= term_end ? term_length : (int32_t)(tail_position - (position - offset));
    int32_t next = offset + LS_FRAME_ALIGNMENT;
    while (next < limit && 0 == ls_get_acquire_i32(term + next + LS_FRAME_LENGTH_OFFSET))
    {
        next += LS_FRAME_ALIGNMENT;
    }
    if (next > limit)
    {
        next = limit;
    }
    if (!ls_image_confirm_zeroed(term, next, offset))
    {
        return false;
    }

    /* Fill only the fields a late writer would write identically, check it has not begun its
     * header (type still 0), then claim the frame by CAS on the length from 0: a writer that
     * commits first wins and the unblock is abandoned. */
    if (LS_FRAME_TYPE_PAD != ls_frame_type(frame))
    {
        return false;
    }
    frame[LS_FRAME_VERSION_OFFSET] = LS_FRAME_VERSION;
    ls_put_plain_i32(frame + LS_FRAME_TERM_OFFSET_OFFSET, offset);
    ls_put_plain_i32(frame + LS_FRAME_SESSION_ID_OFFSET, log->session_id);
    ls_put_plain_i32(frame + LS_FRAME_STREAM_ID_OFFSET, log->stream_id);
    ls_put_plain_i32(frame + LS_FRAME_TERM_ID_OFFSET, term_id);
    if (!ls_cas_i32(frame + LS_FRAME_LENGTH_OFFSET, 0, next - offset))
    {
        return false;
    }
    frame[LS_FRAME_FLAGS_OFFSET] = LS_FRAME_FLAGS_UNFRAGMENTED;

    if (next == term_length && ls_image_rotation_stalled(image, term_end, &stalled_count, &stalled_term_id))
    {
        /* The dead writer was the one that crossed the term end: rotate for it too. */
        ls_logbuffer_rotate(log, stalled_count, stalled_term_id, true);
    }
    return true;
}
