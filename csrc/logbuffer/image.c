#include <string.h>

#include "concurrent/log_signal.h"
#include "concurrent/ls_atomic.h"
#include "logbuffer/fragment_assembler.h"
#include "logbuffer/image.h"
#include "logbuffer/term_reader.h"
#include "util/ls_bitutil.h"
#include "util/ls_error.h"

/* Receives each whole message found by ls_image_read; data_offset is -1 for a message in the
 * reassembly buffer. */
typedef void (*ls_image_sink_t)(
    void *clientd, const uint8_t *data, size_t length, int32_t partition, int32_t data_offset,
    const ls_frame_header_t *header);

static int ls_image_init_log(
    ls_image_t *image, void *memory, size_t length, int64_t *position_counter, int64_t position, bool tailed);

int ls_image_init(ls_image_t *image, void *memory, size_t length, int64_t *position_counter, int64_t position)
{
    return ls_image_init_log(image, memory, length, position_counter, position, true);
}

int ls_image_init_untailed(
    ls_image_t *image, void *memory, size_t length, int64_t *position_counter, int64_t position)
{
    return ls_image_init_log(image, memory, length, position_counter, position, false);
}

static int ls_image_init_log(
    ls_image_t *image, void *memory, size_t length, int64_t *position_counter, int64_t position, bool tailed)
{
    if (NULL == image || NULL == position_counter || ((uintptr_t)position_counter & (sizeof(int64_t) - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "image: image and an 8-byte aligned position counter are required");
        return -1;
    }
    memset(image, 0, sizeof(*image));
    if ((tailed ? ls_logbuffer_init(&image->log, memory, length) :
            ls_logbuffer_init_untailed(&image->log, memory, length)) < 0)
    {
        LS_APPEND_ERR("image of a log buffer of %zu bytes", length);
        return -1;
    }
    if (position < 0 || position > image->log.max_position || (position & (LS_FRAME_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(
            LS_EINVAL, "position: expected a multiple of %d in [0, %lld], found %lld",
            LS_FRAME_ALIGNMENT, (long long)image->log.max_position, (long long)position);
        return -1;
    }
    image->position = position_counter;
    image->current_position = position;
    image->owner_counters = NULL;
    image->owner_counter_id = -1;
    image->unverified_from = position;
    image->lap_checked = tailed;
    ls_fragment_assembler_init(&image->assembler, (size_t)image->log.max_message_length);
    ls_put_release_i64(position_counter, position);
    return 0;
}

int ls_image_set_owner(ls_image_t *image, const ls_counters_t *counters, int32_t counter_id, int64_t registration_id)
{
    if (NULL == image || NULL == counters || !ls_counters_is_owned(counters, counter_id, registration_id))
    {
        ls_set_error(
            LS_ESTATE, "image: position counter %d is not allocated to registration %lld",
            counter_id, (long long)registration_id);
        return -1;
    }
    image->owner_counters = counters;
    image->owner_counter_id = counter_id;
    image->owner_registration_id = registration_id;
    return 0;
}

bool ls_image_is_owner(const ls_image_t *image)
{
    return NULL == image->owner_counters ||
        ls_counters_is_owned(image->owner_counters, image->owner_counter_id, image->owner_registration_id);
}

/* Whether the writers may have cleaned (or rewritten) the partition holding `position`: the
 * rotation two terms on cleans it, and begins once the next term's tail is past its end (a
 * term filled exactly is intact until the rotation marks it so: publication.c). */
static bool ls_image_lapped_at(const ls_image_t *image, int64_t position)
{
    const ls_logbuffer_t *log = &image->log;
    const int64_t term_count = ls_logbuffer_term_count_by_position(position, log->position_bits_to_shift);
    const int64_t ahead = (int64_t)ls_logbuffer_active_term_count(log) - term_count;
    if (1 != ahead)
    {
        return ahead >= 2;
    }
    const int32_t next = ls_logbuffer_index_by_term_count(term_count + 1);
    return ls_logbuffer_tail_term_offset(ls_logbuffer_raw_tail(log, next)) > log->term_length;
}

bool ls_image_is_lapped(const ls_image_t *image)
{
    const int64_t position = ls_get_plain_i64(&image->current_position);
    const int64_t from = image->unverified_from < position ? image->unverified_from : position;
    if (!ls_image_lapped_at(image, from))
    {
        return false;
    }
    ls_set_error(
        LS_ESTATE, "session %d stream %d: lapped: the writers went two terms (2 x %d bytes) past position %lld "
        "(log tail %lld), so what follows it may be overwritten",
        image->log.session_id, image->log.stream_id, image->log.term_length, (long long)from,
        (long long)ls_logbuffer_tail_position(&image->log));
    return true;
}

/* 0 when the bytes from image->unverified_from on are still intact: while the position counter
 * is ours, the writers are held back by it; a private position has only the log to go by. */
static int ls_image_verify(const ls_image_t *image)
{
    if (NULL == image->owner_counters)
    {
        return image->lap_checked && ls_image_is_lapped(image) ? LS_IMAGE_LAPPED : 0;
    }
    if (ls_image_is_owner(image))
    {
        return 0;
    }
    ls_set_error(
        LS_ESTATE, "session %d stream %d: position counter %d is no longer this image's (freed by a publisher that "
        "took this subscriber for dead, or reused): position %lld not written",
        image->log.session_id, image->log.stream_id, image->owner_counter_id,
        (long long)ls_get_plain_i64(&image->current_position));
    return LS_IMAGE_NOT_OWNER;
}

int ls_image_check(ls_image_t *image)
{
    const int status = ls_image_verify(image);
    if (status < 0)
    {
        return status;
    }
    image->unverified_from = ls_get_plain_i64(&image->current_position);
    return 0;
}

/* Moves the position (release) after checking the counter is still ours. */
static int ls_image_store_position(ls_image_t *image, int64_t position)
{
    const int status = ls_image_verify(image);
    if (status < 0)
    {
        return status;
    }
    ls_put_plain_i64(&image->current_position, position);
    ls_put_release_i64(image->position, position);
    return 0;
}

void ls_image_close(ls_image_t *image)
{
    ls_fragment_assembler_close(&image->assembler);
}


/* Reads frames of the term at `position` (the term reader) and hands each whole message to
 * `sink` with the term's partition. Stops at the term end, an unwritten frame, `fragment_limit`
 * data frames, or (when asked) after a reassembled message. Returns data frames read;
 * *corrupt is set when it stopped at a bad frame (or could not grow the buffer). */
struct ls_image_read_adapter
{
    ls_image_sink_t sink;
    void *clientd;
    int32_t partition;
};

static void ls_image_read_sink(
    void *clientd, const uint8_t *data, size_t length, int32_t data_offset, const ls_frame_header_t *header)
{
    struct ls_image_read_adapter *adapter = clientd;
    adapter->sink(adapter->clientd, data, length, adapter->partition, data_offset, header);
}

static int32_t ls_image_read(
    ls_image_t *image,
    int64_t position,
    int32_t fragment_limit,
    bool stop_after_assembled,
    ls_image_sink_t sink,
    void *clientd,
    int64_t *end_position,
    bool *corrupt)
{
    const ls_logbuffer_t *log = &image->log;
    const int32_t partition = ls_logbuffer_partition_index(log, position);
    const int32_t offset = ls_logbuffer_term_offset(log, position);
    const ls_term_t term = {
        .buffer = log->terms[partition],
        .begin_position = position - offset,
        .term_length = log->term_length,
        .term_id = ls_logbuffer_term_id(log, position),
        .mtu_length = log->mtu_length,
        .recorded = false,
    };
    struct ls_image_read_adapter adapter = { sink, clientd, partition };
    int32_t end_offset = offset;
    const int32_t fragments = ls_term_read(&term, offset, log->term_length, fragment_limit, stop_after_assembled,
                                           &image->assembler, ls_image_read_sink, &adapter, &end_offset, corrupt);
    *end_position = term.begin_position + end_offset;
    return fragments;
}

struct ls_image_poll_adapter
{
    ls_fragment_handler_t handler;
    void *clientd;
};

static void ls_image_poll_sink(
    void *clientd, const uint8_t *data, size_t length, int32_t partition, int32_t data_offset,
    const ls_frame_header_t *header)
{
    (void)partition;
    (void)data_offset;
    struct ls_image_poll_adapter *adapter = clientd;
    adapter->handler(data, length, header, adapter->clientd);
}

int64_t ls_image_poll(ls_image_t *image, ls_fragment_handler_t handler, void *clientd, int32_t fragment_limit)
{
    struct ls_image_poll_adapter adapter = { handler, clientd };
    const int64_t position = ls_get_plain_i64(&image->current_position);
    int64_t end_position = position;
    bool corrupt = false;
    int status = ls_image_verify(image);
    if (status < 0)
    {
        return status;
    }
    image->unverified_from = position;
    const int32_t fragments = ls_image_read(
        image, position, fragment_limit, false, ls_image_poll_sink, &adapter, &end_position, &corrupt);
    atomic_thread_fence(memory_order_acquire); /* the handlers' reads before the check below */
    if (end_position != position && (status = ls_image_store_position(image, end_position)) < 0)
    {
        return status;
    }
    if (corrupt && 0 == fragments)
    {
        return ls_image_lapped_at(image, position) && ls_image_is_lapped(image) ? LS_IMAGE_LAPPED : -1;
    }
    return fragments;
}

struct ls_image_scan_adapter
{
    int32_t count;
    int32_t *partitions;
    int32_t *data_offsets;
    int32_t *lengths;
    ls_frame_header_t *headers;
};

static void ls_image_scan_sink(
    void *clientd, const uint8_t *data, size_t length, int32_t partition, int32_t data_offset,
    const ls_frame_header_t *header)
{
    (void)data;
    struct ls_image_scan_adapter *adapter = clientd;
    const int32_t i = adapter->count++;
    adapter->partitions[i] = partition;
    adapter->data_offsets[i] = data_offset;
    adapter->lengths[i] = (int32_t)length;
    adapter->headers[i] = *header;
}

int32_t ls_image_scan(
    ls_image_t *image,
    int32_t fragment_limit,
    int32_t *partitions,
    int32_t *data_offsets,
    int32_t *lengths,
    ls_frame_header_t *headers,
    int64_t *end_position)
{
    struct ls_image_scan_adapter adapter = { 0, partitions, data_offsets, lengths, headers };
    const int64_t position = ls_get_plain_i64(&image->current_position);
    bool corrupt = false;
    *end_position = position;
    const int status = ls_image_verify(image); /* the views the last scan handed out were intact */
    if (status < 0)
    {
        return status;
    }
    ls_image_read(image, position, fragment_limit, true, ls_image_scan_sink, &adapter, end_position, &corrupt);
    if (corrupt && 0 == adapter.count && *end_position == position)
    {
        /* A frame of another term or offset where ours should be: lapped, not corrupt. */
        return ls_image_lapped_at(image, position) && ls_image_is_lapped(image) ? LS_IMAGE_LAPPED : -1;
    }
    return adapter.count;
}

/* Scans into `scan` and moves the position past what it found: always (`commit_messages`),
 * or only when it found no message (padding, first fragments), a binding storing it later. */
static int32_t ls_image_scan_into(ls_image_t *image, ls_image_scan_t *scan, int32_t fragment_limit, bool commit_messages)
{
    if (fragment_limit > LS_IMAGE_SCAN_CAPACITY)
    {
        fragment_limit = LS_IMAGE_SCAN_CAPACITY;
    }
    const int64_t position = ls_get_plain_i64(&image->current_position);
    scan->count = ls_image_scan(
        image, fragment_limit, scan->partitions, scan->data_offsets, scan->lengths, scan->headers, &scan->end_position);
    if (scan->count < 0)
    {
        scan->end_position = position;
    }
    else if (scan->end_position != position && (commit_messages || 0 == scan->count))
    {
        const int status = ls_image_store_position(image, scan->end_position);
        if (status < 0)
        {
            scan->count = status;
            scan->end_position = position; /* nothing handed out */
        }
        else if (commit_messages)
        {
            image->unverified_from = position; /* the views of this scan: checked by the next */
        }
    }
    scan->end_length_index = ls_image_length_index(image, scan->end_position);
    return scan->count;
}

int32_t ls_image_scan_commit(ls_image_t *image, ls_image_scan_t *scan, int32_t fragment_limit)
{
    return ls_image_scan_into(image, scan, fragment_limit, true);
}

int32_t ls_image_scan_deferred(ls_image_t *image, ls_image_scan_t *scan, int32_t fragment_limit)
{
    return ls_image_scan_into(image, scan, fragment_limit, false);
}

static int32_t ls_image_poll_one_with(ls_image_t *image, ls_image_scan_t *scan, bool deferred)
{
    /* Read on past padding and the first fragments of a long message, to one whole message
     * or to where nothing more is written. */
    int32_t count;
    int64_t before;
    do
    {
        before = ls_get_plain_i64(&image->current_position);
        count = deferred ? ls_image_scan_deferred(image, scan, 1) : ls_image_scan_commit(image, scan, 1);
    }
    while (0 == count && scan->end_position != before);
    return count;
}

int32_t ls_image_poll_one(ls_image_t *image, ls_image_scan_t *scan)
{
    return ls_image_poll_one_with(image, scan, false);
}

int32_t ls_image_poll_one_deferred(ls_image_t *image, ls_image_scan_t *scan)
{
    return ls_image_poll_one_with(image, scan, true);
}

int32_t ls_image_length_index(const ls_image_t *image, int64_t position)
{
    const ls_logbuffer_t *log = &image->log;
    return (int32_t)(
        ((int64_t)ls_logbuffer_partition_index(log, position) * log->term_length +
         ls_logbuffer_term_offset(log, position)) / (int32_t)sizeof(int32_t));
}

const uint8_t *ls_image_peek_message(const ls_image_t *image, int32_t *length)
{
    const ls_logbuffer_t *log = &image->log;
    const int64_t position = ls_get_plain_i64(&image->current_position); /* only this reader moves it */
    const int32_t offset = ls_logbuffer_term_offset(log, position);
    const uint8_t *frame = log->terms[ls_logbuffer_partition_index(log, position)] + offset;
    const int32_t frame_length = ls_get_acquire_i32(frame + LS_FRAME_LENGTH_OFFSET);
    if (frame_length <= 0)
    {
        /* Nothing written yet, unless a private reader was lapped into a cleaned partition
         * (a counter we own holds the writers back: no need to look). */
        *length = NULL == image->owner_counters && ls_image_lapped_at(image, image->unverified_from) ? -1 : 0;
        return NULL;
    }
    if (!ls_frame_fits_term(frame_length, offset, log->term_length) || frame_length > log->mtu_length ||
        LS_FRAME_FLAGS_UNFRAGMENTED != frame[LS_FRAME_FLAGS_OFFSET] || LS_FRAME_TYPE_DATA != ls_frame_type(frame) ||
        !ls_frame_is_at(frame, offset, ls_logbuffer_term_id(log, position)))
    {
        /* Padding, a fragment, a frame of another term (lapped) or something to reject:
         * ls_image_poll_one's job (it tells lapped from corrupt). */
        *length = -1;
        return NULL;
    }
    *length = frame_length - LS_DATA_HEADER_LENGTH;
    return frame + LS_DATA_HEADER_LENGTH;
}

int64_t ls_image_consume_peeked(ls_image_t *image, int32_t length)
{
    const int64_t position =
        ls_get_plain_i64(&image->current_position) + LS_ALIGN(length + LS_DATA_HEADER_LENGTH, LS_FRAME_ALIGNMENT);
    atomic_thread_fence(memory_order_acquire); /* the copy's reads before the checks */
    const int status = ls_image_store_position(image, position);
    if (status < 0)
    {
        return status;
    }
    image->unverified_from = position; /* the copy was intact */
    return position;
}

int64_t ls_image_position(const ls_image_t *image)
{
    return ls_get_plain_i64(&image->current_position);
}

int ls_image_set_position(ls_image_t *image, int64_t position)
{
    const int status = ls_image_store_position(image, position);
    if (status < 0)
    {
        return status;
    }
    if (position < image->unverified_from)
    {
        image->unverified_from = position;
    }
    return 0;
}

int ls_image_wait(ls_image_t *image, int64_t timeout_ns)
{
    const ls_logbuffer_t *log = &image->log;
    const int64_t position = ls_get_plain_i64(&image->current_position);
    const uint8_t *frame = log->terms[ls_logbuffer_partition_index(log, position)] + ls_logbuffer_term_offset(log, position);
    return ls_log_await(log->metadata, frame, timeout_ns);
}
