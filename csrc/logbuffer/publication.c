#include <string.h>

#include "concurrent/log_signal.h"
#include "concurrent/ls_atomic.h"
#include "logbuffer/publication.h"
#include "util/ls_bitutil.h"
#include "util/ls_error.h"

/* Tries per offer: one to cross the term end (pad and rotate), one to append in the new
 * term, one spare for a shared writer that lost a race with another's rotation. */
#define LS_PUB_ATTEMPTS 3

/* Bytes a message takes in the term: Aeron's appendFragmentedMessage claims all frames at once. */
static int32_t ls_pub_required_length(const ls_logbuffer_t *log, int32_t length)
{
    if (length <= log->max_payload_length)
    {
        return LS_ALIGN(length + LS_DATA_HEADER_LENGTH, LS_FRAME_ALIGNMENT);
    }
    const int32_t full_frames = length / log->max_payload_length;
    const int32_t remaining = length % log->max_payload_length;
    return full_frames * log->mtu_length +
        (remaining > 0 ? LS_ALIGN(remaining + LS_DATA_HEADER_LENGTH, LS_FRAME_ALIGNMENT) : 0);
}

/* Marks the frame in progress with its negative length (as Aeron's header writer does: a
 * reader waits, and an unblocker knows exactly how much a dead writer claimed), then every
 * other header field. The caller releases the positive length last. */
static void ls_pub_write_header(
    const ls_logbuffer_t *log, uint8_t *frame, int32_t frame_length, uint8_t flags, int16_t type, int32_t term_offset,
    int32_t term_id)
{
    ls_put_release_i32(frame + LS_FRAME_LENGTH_OFFSET, -frame_length);
    frame[LS_FRAME_VERSION_OFFSET] = LS_FRAME_VERSION;
    frame[LS_FRAME_FLAGS_OFFSET] = flags;
    ls_frame_set_type(frame, type);
    ls_put_plain_i32(frame + LS_FRAME_TERM_OFFSET_OFFSET, term_offset);
    ls_put_plain_i32(frame + LS_FRAME_SESSION_ID_OFFSET, log->session_id);
    ls_put_plain_i32(frame + LS_FRAME_STREAM_ID_OFFSET, log->stream_id);
    ls_put_plain_i32(frame + LS_FRAME_TERM_ID_OFFSET, term_id);
}

/* A PAD frame over [offset, offset + length): readers skip it. Same bytes as Aeron's. */
static void ls_pub_write_padding(const ls_logbuffer_t *log, uint8_t *term, int32_t offset, int32_t length, int32_t term_id)
{
    uint8_t *frame = term + offset;
    ls_pub_write_header(log, frame, length, LS_FRAME_FLAGS_UNFRAGMENTED, LS_FRAME_TYPE_PAD, offset, term_id);
    ls_put_plain_i64(frame + LS_FRAME_RESERVED_VALUE_OFFSET, 0);
    ls_put_release_i32(frame + LS_FRAME_LENGTH_OFFSET, length);
}

/* Writes the message's frames into space already claimed at `offset`; each frame's length
 * is released after its header and payload. */
static void ls_pub_write_message(
    const ls_logbuffer_t *log,
    uint8_t *term,
    int32_t offset,
    int32_t term_id,
    const uint8_t *data,
    int32_t length,
    int64_t reserved_value)
{
    uint8_t flags = LS_FRAME_FLAG_BEGIN;
    int32_t remaining = length;
    do
    {
        const int32_t chunk = remaining < log->max_payload_length ? remaining : log->max_payload_length;
        const int32_t frame_length = chunk + LS_DATA_HEADER_LENGTH;
        uint8_t *frame = term + offset;
        if (remaining <= log->max_payload_length)
        {
            flags |= LS_FRAME_FLAG_END;
        }
        ls_pub_write_header(log, frame, frame_length, flags, LS_FRAME_TYPE_DATA, offset, term_id);
        ls_put_plain_i64(frame + LS_FRAME_RESERVED_VALUE_OFFSET, reserved_value);
        if (chunk > 0)
        {
            memcpy(frame + LS_DATA_HEADER_LENGTH, data + (length - remaining), (size_t)chunk);
        }
        ls_put_release_i32(frame + LS_FRAME_LENGTH_OFFSET, frame_length);

        flags = 0;
        offset += LS_ALIGN(frame_length, LS_FRAME_ALIGNMENT);
        remaining -= chunk;
    }
    while (remaining > 0);
}

static void ls_pub_write_claim(
    const ls_logbuffer_t *log, uint8_t *term, int32_t offset, int32_t term_id, int32_t length, ls_buffer_claim_t *claim)
{
    uint8_t *frame = term + offset;
    ls_pub_write_header(
        log, frame, length + LS_DATA_HEADER_LENGTH, LS_FRAME_FLAGS_UNFRAGMENTED, LS_FRAME_TYPE_DATA, offset, term_id);
    ls_put_plain_i64(frame + LS_FRAME_RESERVED_VALUE_OFFSET, 0);
    claim->frame = frame;
    claim->data = frame + LS_DATA_HEADER_LENGTH;
    claim->length = length;
    claim->log_metadata = log->metadata;
}

/* 0 when a message of `required` bytes may go at `position`, else the status. */
static int64_t ls_pub_check_limit(ls_publication_t *pub, int64_t position, int32_t required)
{
    if (position + required > pub->log.max_position)
    {
        return LS_PUBLICATION_MAX_POSITION_EXCEEDED;
    }
    if (NULL != pub->driver_limit)
    {
        if (position < ls_get_acquire_i64(pub->driver_limit))
        {
            return 0;
        }
        return 1 == ls_get_acquire_i32(pub->log.metadata + LS_LOG_IS_CONNECTED_OFFSET) ?
            LS_PUBLICATION_BACK_PRESSURED : LS_PUBLICATION_NOT_CONNECTED;
    }
    if (position < pub->position_limit)
    {
        return 0;
    }
    const int64_t limit = ls_publication_refresh_limit(pub);
    if (limit < 0)
    {
        return LS_PUBLICATION_NOT_CONNECTED;
    }
    return position < limit ? 0 : LS_PUBLICATION_BACK_PRESSURED;
}

/* The claim that took the tail past the term end pads the rest of the term and rotates. */
static int64_t ls_pub_end_of_term(ls_publication_t *pub, int32_t index, int32_t term_id, int64_t offset)
{
    ls_logbuffer_t *log = &pub->log;
    if (offset < log->term_length)
    {
        ls_pub_write_padding(log, log->terms[index], (int32_t)offset, log->term_length - (int32_t)offset, term_id);
    }
    const int32_t term_count = ls_logbuffer_compute_term_count(term_id, log->initial_term_id);
    if (INT32_MAX == term_count)
    {
        return LS_PUBLICATION_MAX_POSITION_EXCEEDED;
    }
    ls_logbuffer_rotate(log, term_count, term_id, NULL == pub->driver_limit); /* (a driver cleans its own logs) */
    return 0;
}

static int64_t ls_pub_append_shared(
    ls_publication_t *pub, const uint8_t *data, int32_t length, int64_t reserved_value, ls_buffer_claim_t *claim)
{
    ls_logbuffer_t *log = &pub->log;
    const int32_t required = ls_pub_required_length(log, length);

    for (int attempt = 0; attempt < LS_PUB_ATTEMPTS; attempt++)
    {
        const int32_t term_count = ls_logbuffer_active_term_count(log);
        const int32_t index = ls_logbuffer_index_by_term_count(term_count);
        const int64_t raw_tail = ls_logbuffer_raw_tail(log, index);
        const int32_t term_id = ls_logbuffer_tail_term_id(raw_tail);
        const int64_t tail_offset = ls_logbuffer_tail_term_offset(raw_tail);
        if (term_id != ls_logbuffer_compute_term_id(term_count, log->initial_term_id) ||
            tail_offset > log->term_length)
        {
            /* Another writer crossed the term end and is padding and rotating: adding more to
             * this tail would only push it further past the end. */
            continue;
        }
        const int64_t status = ls_pub_check_limit(pub, ls_logbuffer_position(log, term_id, (int32_t)tail_offset), required);
        if (status < 0)
        {
            return status;
        }

        const int64_t claimed = ls_get_and_add_i64(ls_logbuffer_tail_counter_addr(log->metadata, index), required);
        const int32_t claimed_term_id = ls_logbuffer_tail_term_id(claimed);
        const int64_t offset = ls_logbuffer_tail_term_offset(claimed);
        const int64_t end = offset + required;
        uint8_t *term = log->terms[index];

        if (end <= log->term_length)
        {
            if (claimed_term_id != term_id)
            {
                /* The partition was rotated into a later term since we read the count: the
                 * bytes are ours but in the wrong term, so hand them to readers as padding. */
                ls_pub_write_padding(log, term, (int32_t)offset, required, claimed_term_id);
                continue;
            }
            if (NULL != claim)
            {
                ls_pub_write_claim(log, term, (int32_t)offset, term_id, length, claim);
            }
            else
            {
                ls_pub_write_message(log, term, (int32_t)offset, term_id, data, length, reserved_value);
            }
            return ls_logbuffer_position(log, term_id, (int32_t)end);
        }
        if (offset <= log->term_length)
        {
            const int64_t rotated = ls_pub_end_of_term(pub, index, claimed_term_id, offset);
            if (rotated < 0)
            {
                return rotated;
            }
        }
    }
    return LS_PUBLICATION_ADMIN_ACTION;
}

static int64_t ls_pub_append_exclusive(
    ls_publication_t *pub, const uint8_t *data, int32_t length, int64_t reserved_value, ls_buffer_claim_t *claim)
{
    ls_logbuffer_t *log = &pub->log;
    const int32_t required = ls_pub_required_length(log, length);

    for (int attempt = 0; attempt < LS_PUB_ATTEMPTS; attempt++)
    {
        uint8_t *tail_addr = ls_logbuffer_tail_counter_addr(log->metadata, pub->partition_index);
        if (pub->term_offset >= log->term_length)
        {
            if (ls_logbuffer_tail_term_offset(ls_get_plain_i64(tail_addr)) == log->term_length)
            {
                /* Filled exactly by an earlier offer: this one goes at the next term's start,
                 * so check the limit there BEFORE the rotation cleans a partition (a subscriber
                 * that joined two terms back may still read it). Then mark the tail past the
                 * end, as a claim that crosses it does (a reader's lapped check sees it). */
                const int64_t status = ls_pub_check_limit(pub, pub->term_begin_position + log->term_length, required);
                if (status < 0)
                {
                    return status;
                }
                ls_put_release_i64(tail_addr, ls_logbuffer_pack_tail(pub->term_id, (int64_t)log->term_length + LS_FRAME_ALIGNMENT));
            }
            const int64_t rotated = ls_pub_end_of_term(pub, pub->partition_index, pub->term_id, pub->term_offset);
            if (rotated < 0)
            {
                return rotated;
            }
            pub->term_id = (int32_t)((uint32_t)pub->term_id + 1);
            pub->term_offset = 0;
            pub->partition_index = (pub->partition_index + 1) % LS_LOG_PARTITION_COUNT;
            pub->term_begin_position += log->term_length;
            continue;
        }
        const int64_t status = ls_pub_check_limit(pub, pub->term_begin_position + pub->term_offset, required);
        if (status < 0)
        {
            return status;
        }

        const int64_t end = (int64_t)pub->term_offset + required;
        /* The tail goes first (as a shared claim does), then the frames. */
        ls_put_release_i64(tail_addr, ls_logbuffer_pack_tail(pub->term_id, end));
        if (end > log->term_length)
        {
            /* Padded and rotated at the top of the next attempt; tail past the end marks it. */
            if (pub->term_offset < log->term_length)
            {
                ls_pub_write_padding(
                    log, log->terms[pub->partition_index], pub->term_offset, log->term_length - pub->term_offset,
                    pub->term_id);
            }
            pub->term_offset = log->term_length;
            continue;
        }

        uint8_t *term = log->terms[pub->partition_index];
        if (NULL != claim)
        {
            ls_pub_write_claim(log, term, pub->term_offset, pub->term_id, length, claim);
        }
        else
        {
            ls_pub_write_message(log, term, pub->term_offset, pub->term_id, data, length, reserved_value);
        }
        pub->term_offset = (int32_t)end;
        return pub->term_begin_position + end;
    }
    return LS_PUBLICATION_ADMIN_ACTION;
}

int ls_publication_init(
    ls_publication_t *pub, void *memory, size_t length, bool exclusive, ls_counters_t *counters)
{
    if (NULL == pub)
    {
        ls_set_error(LS_EINVAL, "publication: NULL");
        return -1;
    }
    memset(pub, 0, sizeof(*pub));
    if (ls_logbuffer_init(&pub->log, memory, length) < 0)
    {
        LS_APPEND_ERR("publication of a log buffer of %zu bytes", length);
        return -1;
    }
    ls_logbuffer_t *log = &pub->log;
    int32_t window;
    memcpy(&window, log->metadata + LS_LOG_PUBLICATION_WINDOW_LENGTH_OFFSET, sizeof(window));
    /* More than half a term would let the publisher reach a partition a subscriber still reads
     * (the rotation cleans two terms ahead). */
    if (window <= 0 || window > log->term_length / 2)
    {
        window = log->term_length / 2;
    }
    pub->exclusive = exclusive;
    pub->closed = false;
    pub->window_length = window;
    pub->position_limit = 0;
    pub->counters = counters;
    pub->subscriber_count = 0;
    pub->publisher_limit_id = -1;

    const int32_t term_count = ls_logbuffer_active_term_count(log);
    const int32_t index = ls_logbuffer_index_by_term_count(term_count);
    const int64_t raw_tail = ls_logbuffer_raw_tail(log, index);
    const int64_t offset = ls_logbuffer_tail_term_offset(raw_tail);
    pub->term_id = ls_logbuffer_tail_term_id(raw_tail);
    pub->term_offset = offset > log->term_length ? log->term_length : (int32_t)offset;
    pub->partition_index = index;
    pub->term_begin_position = ls_logbuffer_position(log, pub->term_id, 0);
    return 0;
}

static int64_t ls_pub_precheck(ls_publication_t *pub)
{
    if (pub->closed)
    {
        return LS_PUBLICATION_CLOSED;
    }
    return 0;
}

static int64_t ls_pub_append(
    ls_publication_t *pub, const uint8_t *data, int32_t length, int64_t reserved_value, ls_buffer_claim_t *claim)
{
    if (NULL == pub->driver_limit && pub->subscriber_count <= 0 && ls_publication_refresh_limit(pub) < 0)
    {
        return LS_PUBLICATION_NOT_CONNECTED;
    }
    return pub->exclusive ?
        ls_pub_append_exclusive(pub, data, length, reserved_value, claim) :
        ls_pub_append_shared(pub, data, length, reserved_value, claim);
}

static int64_t ls_pub_offer(ls_publication_t *pub, const uint8_t *data, size_t length, int64_t reserved_value)
{
    const int64_t closed = ls_pub_precheck(pub);
    if (closed < 0)
    {
        return closed;
    }
    if (length > (size_t)pub->log.max_message_length)
    {
        ls_set_error(
            LS_EINVAL, "length: expected at most %d (min(term length / 8, 16 MiB)), found %zu",
            pub->log.max_message_length, length);
        return LS_PUBLICATION_ERROR;
    }
    if (NULL == data && length > 0)
    {
        ls_set_error(LS_EINVAL, "data: NULL with length %zu", length);
        return LS_PUBLICATION_ERROR;
    }
    return ls_pub_append(pub, data, (int32_t)length, reserved_value, NULL);
}

int64_t ls_publication_offer(ls_publication_t *pub, const uint8_t *data, size_t length, int64_t reserved_value)
{
    const int64_t position = ls_pub_offer(pub, data, length, reserved_value);
    if (position > 0)
    {
        ls_log_signal(pub->log.metadata);
    }
    return position;
}

int64_t ls_publication_offer_batch(
    ls_publication_t *pub,
    const uint8_t *data,
    const int64_t *offsets,
    const int32_t *lengths,
    int32_t count,
    int32_t *accepted)
{
    int64_t position = ls_publication_position(pub);
    int32_t i = 0;
    for (; i < count; i++)
    {
        if (lengths[i] < 0 || offsets[i] < 0)
        {
            ls_set_error(
                LS_EINVAL, "batch message %d: expected non-negative offset and length, found %lld / %d",
                i, (long long)offsets[i], lengths[i]);
            if (0 == i)
            {
                position = LS_PUBLICATION_ERROR;
            }
            break;
        }
        const int64_t result = ls_pub_offer(pub, data + offsets[i], (size_t)lengths[i], 0);
        if (result < 0)
        {
            if (0 == i)
            {
                position = result;
            }
            break;
        }
        position = result;
    }
    if (NULL != accepted)
    {
        *accepted = i;
    }
    if (i > 0)
    {
        ls_log_signal(pub->log.metadata); /* once per batch: a woken reader reads them all */
    }
    return position;
}

int64_t ls_publication_try_claim(ls_publication_t *pub, int32_t length, ls_buffer_claim_t *claim)
{
    const int64_t closed = ls_pub_precheck(pub);
    if (closed < 0)
    {
        return closed;
    }
    if (length < 0 || length > pub->log.max_payload_length || NULL == claim)
    {
        ls_set_error(
            LS_EINVAL, "claim length: expected 0..%d (mtu - header), found %d", pub->log.max_payload_length, length);
        return LS_PUBLICATION_ERROR;
    }
    return ls_pub_append(pub, NULL, length, 0, claim);
}

static uint8_t *ls_buffer_claim_frame(ls_buffer_claim_t *claim)
{
    if (NULL == claim || NULL == claim->frame)
    {
        ls_set_error(LS_ESTATE, "claim: no frame claimed (already committed or aborted)");
        return NULL;
    }
    if (ls_get_acquire_i32(claim->frame + LS_FRAME_LENGTH_OFFSET) >= 0)
    {
        ls_set_error(LS_ESTATE, "claim: frame is not in progress (committed, aborted or unblocked)");
        return NULL;
    }
    return claim->frame;
}

int ls_buffer_claim_commit(ls_buffer_claim_t *claim)
{
    uint8_t *frame = ls_buffer_claim_frame(claim);
    if (NULL == frame)
    {
        return -1;
    }
    ls_put_release_i32(frame + LS_FRAME_LENGTH_OFFSET, claim->length + LS_DATA_HEADER_LENGTH);
    claim->frame = NULL;
    claim->data = NULL;
    ls_log_signal(claim->log_metadata);
    return 0;
}

int ls_buffer_claim_abort(ls_buffer_claim_t *claim)
{
    uint8_t *frame = ls_buffer_claim_frame(claim);
    if (NULL == frame)
    {
        return -1;
    }
    ls_frame_set_type(frame, LS_FRAME_TYPE_PAD);
    ls_put_release_i32(frame + LS_FRAME_LENGTH_OFFSET, claim->length + LS_DATA_HEADER_LENGTH);
    claim->frame = NULL;
    claim->data = NULL;
    ls_log_signal(claim->log_metadata);
    return 0;
}

int64_t ls_publication_position(const ls_publication_t *pub)
{
    if (pub->exclusive)
    {
        return pub->term_begin_position + pub->term_offset;
    }
    return ls_logbuffer_tail_position(&pub->log);
}

int64_t ls_publication_refresh_limit(ls_publication_t *pub)
{
    /* Subscribers announce themselves by allocating a position counter keyed by this log's
     * session and stream: discovery is a scan of the counters, done only when the cached
     * limit is reached or nobody was connected. */
    if (NULL != pub->driver_limit)
    {
        pub->position_limit = ls_get_acquire_i64(pub->driver_limit);
        return pub->position_limit;
    }
    int64_t min_position = INT64_MAX;
    pub->subscriber_count = 0;
    if (NULL != pub->counters)
    {
        /* Every subscriber counts, however many (no cap: one left out would be overrun). */
        min_position = ls_counters_min_stream_value(
            pub->counters, LS_COUNTER_TYPE_SUBSCRIBER_POSITION, pub->log.session_id, pub->log.stream_id,
            &pub->subscriber_count);
    }
    if (INT64_MAX == min_position)
    {
        pub->position_limit = 0;
        return LS_PUBLICATION_NOT_CONNECTED;
    }
    pub->position_limit = min_position + pub->window_length;
    if (NULL != pub->counters && pub->publisher_limit_id >= 0 && pub->publisher_limit_id < pub->counters->max_counter_id)
    {
        ls_counters_set(pub->counters, pub->publisher_limit_id, pub->position_limit);
    }
    return pub->position_limit;
}

int ls_publication_bind_driver(ls_publication_t *pub, const int64_t *publisher_limit)
{
    if (NULL == pub || NULL == publisher_limit || ((uintptr_t)publisher_limit & (sizeof(int64_t) - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "publication: a publication and an 8-byte aligned publisher limit are required");
        return -1;
    }
    pub->driver_limit = publisher_limit;
    pub->counters = NULL;
    pub->subscriber_count = 0;
    pub->publisher_limit_id = -1;
    return 0;
}

void ls_publication_close(ls_publication_t *pub)
{
    if (pub->closed)
    {
        return;
    }
    pub->closed = true;
    if (pub->exclusive && NULL == pub->driver_limit)
    {
        ls_logbuffer_set_end_of_stream_position(&pub->log, ls_publication_position(pub));
    }
    ls_log_signal(pub->log.metadata); /* a reader asleep at the end wakes to see it */
}
