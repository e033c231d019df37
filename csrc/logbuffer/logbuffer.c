#include <string.h>

#include "concurrent/ls_atomic.h"
#include "logbuffer/logbuffer.h"
#include "util/ls_bitutil.h"
#include "util/ls_error.h"

#define LS_META_AT(log, offset) ((log)->metadata + (offset))

static inline int32_t ls_log_read_i32(const uint8_t *metadata, int32_t offset)
{
    int32_t value;
    memcpy(&value, metadata + offset, sizeof(value));
    return value;
}

static int32_t ls_log_log2(int32_t value)
{
    int32_t shift = 0;
    while ((INT32_C(1) << shift) < value)
    {
        shift++;
    }
    return shift;
}

int64_t ls_logbuffer_file_length(int32_t term_length, int32_t page_size)
{
    if (term_length < LS_LOG_TERM_MIN_LENGTH || term_length > LS_LOG_TERM_MAX_LENGTH ||
        !ls_is_power_of_two((uint64_t)term_length) ||
        page_size < LS_LOG_PAGE_MIN_SIZE || page_size > LS_LOG_PAGE_MAX_SIZE ||
        !ls_is_power_of_two((uint64_t)page_size))
    {
        LS_SET_ERR(
            LS_EINVAL, "term length / page size: expected powers of two in [%d, %d] / [%d, %d], found %d / %d",
            LS_LOG_TERM_MIN_LENGTH, LS_LOG_TERM_MAX_LENGTH, LS_LOG_PAGE_MIN_SIZE, LS_LOG_PAGE_MAX_SIZE,
            term_length, page_size);
        return -1;
    }
    const int64_t raw = (int64_t)LS_LOG_PARTITION_COUNT * term_length + LS_LOG_META_DATA_LENGTH;
    return LS_ALIGN(raw, (int64_t)page_size);
}

static int ls_log_check_mtu(int32_t mtu_length, int error_code)
{
    if (mtu_length <= LS_DATA_HEADER_LENGTH || mtu_length > LS_LOG_MAX_MTU_LENGTH ||
        (mtu_length & (LS_FRAME_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(
            error_code, "mtu length: expected a multiple of %d in [%d, %d], found %d",
            LS_FRAME_ALIGNMENT, LS_DATA_HEADER_LENGTH + LS_FRAME_ALIGNMENT, LS_LOG_MAX_MTU_LENGTH, mtu_length);
        return -1;
    }
    return 0;
}

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
    int64_t correlation_id)
{
    if (NULL == memory || ((uintptr_t)memory & (sizeof(int64_t) - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "log buffer: memory must be non-NULL and 8-byte aligned");
        return -1;
    }
    const int64_t file_length = ls_logbuffer_file_length(term_length, page_size);
    if (file_length < 0)
    {
        ls_set_error(
            LS_EINVAL, "term length / page size: expected powers of two in [%d, %d] / [%d, %d], found %d / %d",
            LS_LOG_TERM_MIN_LENGTH, LS_LOG_TERM_MAX_LENGTH, LS_LOG_PAGE_MIN_SIZE, LS_LOG_PAGE_MAX_SIZE,
            term_length, page_size);
        return -1;
    }
    if ((uint64_t)file_length != (uint64_t)length)
    {
        ls_set_error(LS_EINVAL, "length: expected %lld, found %zu", (long long)file_length, length);
        return -1;
    }
    if (ls_log_check_mtu(mtu_length, LS_EINVAL) < 0)
    {
        LS_APPEND_ERR("formatting a log buffer");
        return -1;
    }
    if (term_offset < 0 || term_offset > term_length || (term_offset & (LS_FRAME_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(
            LS_EINVAL, "term offset: expected a multiple of %d in [0, %d], found %d",
            LS_FRAME_ALIGNMENT, term_length, term_offset);
        return -1;
    }
    const int32_t term_count = ls_logbuffer_compute_term_count(active_term_id, initial_term_id);
    if (term_count < 0)
    {
        ls_set_error(
            LS_EINVAL, "active term id: expected initial term id %d + [0, 2^31), found %d",
            initial_term_id, active_term_id);
        return -1;
    }

    uint8_t *metadata = (uint8_t *)memory + (size_t)LS_LOG_PARTITION_COUNT * (size_t)term_length;
    memset(metadata, 0, LS_LOG_META_DATA_LENGTH);

    /* As Aeron's driver initialises a log at a given term: the other partitions hold the
     * two terms before the active one, so each partition's term id is congruent to it. */
    const int32_t active_index = ls_logbuffer_index_by_term_count(term_count);
    int64_t *tails = (int64_t *)(metadata + LS_LOG_TERM_TAIL_COUNTERS_OFFSET);
    tails[active_index] = ls_logbuffer_pack_tail(active_term_id, term_offset);
    for (int32_t i = 1; i < LS_LOG_PARTITION_COUNT; i++)
    {
        const int32_t expected_term_id = (int32_t)((uint32_t)active_term_id + (uint32_t)i - LS_LOG_PARTITION_COUNT);
        tails[(active_index + i) % LS_LOG_PARTITION_COUNT] = ls_logbuffer_pack_tail(expected_term_id, 0);
    }

    const int64_t end_of_stream = INT64_MAX;
    const int64_t unset = -1;
    const int32_t header_length = LS_DATA_HEADER_LENGTH;
    const int32_t window = term_length / 2;
    memcpy(metadata + LS_LOG_END_OF_STREAM_POSITION_OFFSET, &end_of_stream, sizeof(end_of_stream));
    memcpy(metadata + LS_LOG_CORRELATION_ID_OFFSET, &correlation_id, sizeof(correlation_id));
    memcpy(metadata + LS_LOG_INITIAL_TERM_ID_OFFSET, &initial_term_id, sizeof(int32_t));
    memcpy(metadata + LS_LOG_DEFAULT_FRAME_HEADER_LENGTH_OFFSET, &header_length, sizeof(int32_t));
    memcpy(metadata + LS_LOG_MTU_LENGTH_OFFSET, &mtu_length, sizeof(int32_t));
    memcpy(metadata + LS_LOG_TERM_LENGTH_OFFSET, &term_length, sizeof(int32_t));
    memcpy(metadata + LS_LOG_PAGE_SIZE_OFFSET, &page_size, sizeof(int32_t));
    memcpy(metadata + LS_LOG_PUBLICATION_WINDOW_LENGTH_OFFSET, &window, sizeof(int32_t));
    memcpy(metadata + LS_LOG_ENTITY_TAG_OFFSET, &unset, sizeof(unset));
    memcpy(metadata + LS_LOG_RESPONSE_CORRELATION_ID_OFFSET, &unset, sizeof(unset));

    /* Default header: a DATA template, term id = initial term id (as Aeron writes it). */
    uint8_t *header = metadata + LS_LOG_DEFAULT_FRAME_HEADER_OFFSET;
    header[LS_FRAME_VERSION_OFFSET] = LS_FRAME_VERSION;
    header[LS_FRAME_FLAGS_OFFSET] = LS_FRAME_FLAGS_UNFRAGMENTED;
    ls_frame_set_type(header, LS_FRAME_TYPE_DATA);
    memcpy(header + LS_FRAME_SESSION_ID_OFFSET, &session_id, sizeof(int32_t));
    memcpy(header + LS_FRAME_STREAM_ID_OFFSET, &stream_id, sizeof(int32_t));
    memcpy(header + LS_FRAME_TERM_ID_OFFSET, &initial_term_id, sizeof(int32_t));

    /* Published last: a reader that sees the count sees the tails above. */
    ls_put_release_i32(metadata + LS_LOG_ACTIVE_TERM_COUNT_OFFSET, term_count);
    return 0;
}

/* The term length is only known from the metadata, which sits after 3 terms: try each
 * power of two that fits and keep the one whose metadata agrees. */
static int32_t ls_log_find_term_length(const uint8_t *memory, size_t length)
{
    int32_t fallback = 0;
    for (int64_t term_length = LS_LOG_TERM_MAX_LENGTH; term_length >= LS_LOG_TERM_MIN_LENGTH; term_length >>= 1)
    {
        const uint64_t metadata_offset = (uint64_t)LS_LOG_PARTITION_COUNT * (uint64_t)term_length;
        if (metadata_offset + LS_LOG_META_DATA_LENGTH > length)
        {
            continue;
        }
        const int32_t found = ls_log_read_i32(memory + metadata_offset, LS_LOG_TERM_LENGTH_OFFSET);
        if (found == term_length)
        {
            return (int32_t)term_length;
        }
        if (0 == fallback)
        {
            ls_set_error(
                LS_EFORMAT,
                "term length: expected a power of two in [%d, %d] matching file length %zu (%lld at metadata "
                "offset %llu), found %d",
                LS_LOG_TERM_MIN_LENGTH, LS_LOG_TERM_MAX_LENGTH, length, (long long)term_length,
                (unsigned long long)metadata_offset, found);
            fallback = -1;
        }
    }
    if (0 == fallback)
    {
        ls_set_error(
            LS_EFORMAT, "length: expected at least %d (3 x %d term + %d metadata), found %zu",
            LS_LOG_PARTITION_COUNT * LS_LOG_TERM_MIN_LENGTH + LS_LOG_META_DATA_LENGTH, LS_LOG_TERM_MIN_LENGTH,
            LS_LOG_META_DATA_LENGTH, length);
    }
    return -1;
}

static int ls_log_check_tails(const ls_logbuffer_t *log)
{
    const int32_t term_count = ls_get_acquire_i32(LS_META_AT(log, LS_LOG_ACTIVE_TERM_COUNT_OFFSET));
    if (term_count < 0)
    {
        ls_set_error(LS_EFORMAT, "active term count: expected >= 0, found %d", term_count);
        return -1;
    }
    const int32_t active_index = ls_logbuffer_index_by_term_count(term_count);
    for (int32_t i = 0; i < LS_LOG_PARTITION_COUNT; i++)
    {
        const int64_t raw_tail = ls_get_acquire_i64(ls_logbuffer_tail_counter_addr((log)->metadata, i));
        const int32_t term_id = ls_logbuffer_tail_term_id(raw_tail);
        const int64_t offset = ls_logbuffer_tail_term_offset(raw_tail);
        if ((offset & (LS_FRAME_ALIGNMENT - 1)) != 0)
        {
            ls_set_error(
                LS_EFORMAT, "term tail counter %d: expected a term offset that is a multiple of %d, found %lld",
                i, LS_FRAME_ALIGNMENT, (long long)offset);
            return -1;
        }
        if (i == active_index)
        {
            const int32_t expected = ls_logbuffer_compute_term_id(term_count, log->initial_term_id);
            if (term_id != expected)
            {
                ls_set_error(
                    LS_EFORMAT,
                    "term tail counter %d: expected term id %d (initial term id %d + active term count %d), found %d",
                    i, expected, log->initial_term_id, term_count, term_id);
                return -1;
            }
        }
        else if (ls_logbuffer_index_by_term_count(ls_logbuffer_compute_term_count(term_id, log->initial_term_id)) != i)
        {
            ls_set_error(
                LS_EFORMAT, "term tail counter %d: expected a term id whose term count %% 3 == %d, found %d",
                i, i, term_id);
            return -1;
        }
    }
    return 0;
}

static int ls_log_init(ls_logbuffer_t *log, void *memory, size_t length, bool tailed);

int ls_logbuffer_init(ls_logbuffer_t *log, void *memory, size_t length)
{
    return ls_log_init(log, memory, length, true);
}

int ls_logbuffer_init_untailed(ls_logbuffer_t *log, void *memory, size_t length)
{
    return ls_log_init(log, memory, length, false);
}

static int ls_log_init(ls_logbuffer_t *log, void *memory, size_t length, bool tailed)
{
    if (NULL == log || NULL == memory || ((uintptr_t)memory & (sizeof(int64_t) - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "log buffer: memory must be non-NULL and 8-byte aligned");
        return -1;
    }
    uint8_t *base = memory;
    const int32_t term_length = ls_log_find_term_length(base, length);
    if (term_length < 0)
    {
        LS_APPEND_ERR("log buffer of %zu bytes", length);
        return -1;
    }
    uint8_t *metadata = base + (size_t)LS_LOG_PARTITION_COUNT * (size_t)term_length;

    const int32_t page_size = ls_log_read_i32(metadata, LS_LOG_PAGE_SIZE_OFFSET);
    if (page_size < LS_LOG_PAGE_MIN_SIZE || page_size > LS_LOG_PAGE_MAX_SIZE || !ls_is_power_of_two((uint64_t)page_size))
    {
        ls_set_error(
            LS_EFORMAT, "page size: expected a power of two in [%d, %d], found %d",
            LS_LOG_PAGE_MIN_SIZE, LS_LOG_PAGE_MAX_SIZE, page_size);
        return -1;
    }
    const int64_t file_length = ls_logbuffer_file_length(term_length, page_size);
    if ((uint64_t)file_length != (uint64_t)length)
    {
        ls_set_error(
            LS_EFORMAT, "length: expected %lld (3 x term length %d + %d, aligned to page size %d), found %zu",
            (long long)file_length, term_length, LS_LOG_META_DATA_LENGTH, page_size, length);
        return -1;
    }
    const int32_t mtu_length = ls_log_read_i32(metadata, LS_LOG_MTU_LENGTH_OFFSET);
    if (ls_log_check_mtu(mtu_length, LS_EFORMAT) < 0)
    {
        LS_APPEND_ERR("log buffer metadata");
        return -1;
    }
    const int32_t header_length = ls_log_read_i32(metadata, LS_LOG_DEFAULT_FRAME_HEADER_LENGTH_OFFSET);
    if (LS_DATA_HEADER_LENGTH != header_length)
    {
        ls_set_error(
            LS_EFORMAT, "default frame header length: expected %d, found %d", LS_DATA_HEADER_LENGTH, header_length);
        return -1;
    }
    const uint8_t *header = metadata + LS_LOG_DEFAULT_FRAME_HEADER_OFFSET;
    const int16_t header_type = ls_frame_type(header);
    if (LS_FRAME_VERSION != header[LS_FRAME_VERSION_OFFSET] || LS_FRAME_TYPE_DATA != header_type)
    {
        ls_set_error(
            LS_EFORMAT, "default frame header: expected version %d type %d (DATA), found version %d type %d",
            LS_FRAME_VERSION, LS_FRAME_TYPE_DATA, header[LS_FRAME_VERSION_OFFSET], header_type);
        return -1;
    }

    for (int32_t i = 0; i < LS_LOG_PARTITION_COUNT; i++)
    {
        log->terms[i] = base + (size_t)i * (size_t)term_length;
    }
    log->metadata = metadata;
    log->term_length = term_length;
    log->position_bits_to_shift = ls_log_log2(term_length);
    log->initial_term_id = ls_log_read_i32(metadata, LS_LOG_INITIAL_TERM_ID_OFFSET);
    log->mtu_length = mtu_length;
    log->max_payload_length = mtu_length - LS_DATA_HEADER_LENGTH;
    log->max_message_length = term_length / 8 < LS_LOG_MAX_MESSAGE_LENGTH_CAP ?
        term_length / 8 : LS_LOG_MAX_MESSAGE_LENGTH_CAP;
    log->session_id = ls_log_read_i32(header, LS_FRAME_SESSION_ID_OFFSET);
    log->stream_id = ls_log_read_i32(header, LS_FRAME_STREAM_ID_OFFSET);
    log->max_position = (int64_t)term_length << 31;

    return tailed ? ls_log_check_tails(log) : 0;
}

int64_t ls_logbuffer_position(const ls_logbuffer_t *log, int32_t term_id, int32_t term_offset)
{
    return ls_logbuffer_compute_position(term_id, term_offset, log->term_length, log->initial_term_id);
}

int32_t ls_logbuffer_term_id(const ls_logbuffer_t *log, int64_t position)
{
    return ls_logbuffer_compute_term_id_from_position(position, log->position_bits_to_shift, log->initial_term_id);
}

int32_t ls_logbuffer_term_offset(const ls_logbuffer_t *log, int64_t position)
{
    return ls_logbuffer_compute_term_offset_from_position(position, log->term_length);
}

int32_t ls_logbuffer_partition_index(const ls_logbuffer_t *log, int64_t position)
{
    return ls_logbuffer_index_by_position(position, log->position_bits_to_shift);
}

int32_t ls_logbuffer_active_term_count(const ls_logbuffer_t *log)
{
    return ls_get_acquire_i32(LS_META_AT(log, LS_LOG_ACTIVE_TERM_COUNT_OFFSET));
}

int64_t ls_logbuffer_raw_tail(const ls_logbuffer_t *log, int32_t partition_index)
{
    return ls_get_acquire_i64(ls_logbuffer_tail_counter_addr((log)->metadata, partition_index));
}

int64_t ls_logbuffer_tail_position(const ls_logbuffer_t *log)
{
    int32_t term_count, term_count_after = ls_logbuffer_active_term_count(log);
    int64_t raw_tail;
    /* The count and the tail change together on rotation: read until they agree. */
    do
    {
        term_count = term_count_after;
        raw_tail = ls_logbuffer_raw_tail(log, ls_logbuffer_index_by_term_count(term_count));
        term_count_after = ls_logbuffer_active_term_count(log);
    }
    while (term_count != term_count_after);

    int64_t offset = ls_logbuffer_tail_term_offset(raw_tail);
    if (offset > log->term_length)
    {
        offset = log->term_length;
    }
    return ls_logbuffer_position(log, ls_logbuffer_tail_term_id(raw_tail), (int32_t)offset);
}

int64_t ls_logbuffer_end_of_stream_position(const ls_logbuffer_t *log)
{
    return ls_get_acquire_i64(LS_META_AT(log, LS_LOG_END_OF_STREAM_POSITION_OFFSET));
}

void ls_logbuffer_set_end_of_stream_position(ls_logbuffer_t *log, int64_t position)
{
    ls_put_release_i64(LS_META_AT(log, LS_LOG_END_OF_STREAM_POSITION_OFFSET), position);
}

int64_t ls_logbuffer_retained_start_position(const ls_logbuffer_t *log)
{
    const int32_t term_count = ls_logbuffer_active_term_count(log);
    const int32_t active_term_id = ls_logbuffer_compute_term_id(term_count, log->initial_term_id);
    int32_t term_id = active_term_id;
    int64_t limit = ls_logbuffer_tail_term_offset(ls_logbuffer_raw_tail(log, ls_logbuffer_index_by_term_count(term_count)));

    /* The previous term is intact once it was filled and rotated out of (its partition is
     * only cleaned on the next rotation). */
    if (term_count > 0)
    {
        const int64_t previous = ls_logbuffer_raw_tail(log, ls_logbuffer_index_by_term_count(term_count - 1));
        if (ls_logbuffer_tail_term_id(previous) == (int32_t)((uint32_t)active_term_id - 1) &&
            ls_logbuffer_tail_term_offset(previous) >= log->term_length)
        {
            term_id = ls_logbuffer_tail_term_id(previous);
            limit = log->term_length;
        }
    }
    if (limit > log->term_length)
    {
        limit = log->term_length;
    }

    /* A log formatted at a term offset (Aeron's term-offset parameter) starts mid-term with
     * zeros before: skip them up to its first frame. */
    const uint8_t *term = log->terms[ls_logbuffer_index_by_term_count(ls_logbuffer_compute_term_count(term_id, log->initial_term_id))];
    for (int32_t offset = 0; offset < limit; offset += LS_FRAME_ALIGNMENT)
    {
        if (0 != ls_get_acquire_i32(term + offset + LS_FRAME_LENGTH_OFFSET))
        {
            return ls_logbuffer_position(log, term_id, offset);
        }
    }
    return ls_logbuffer_position(log, term_id, 0);
}

bool ls_logbuffer_rotate(ls_logbuffer_t *log, int32_t term_count, int32_t term_id, bool clean)
{
    if (INT32_MAX == term_count)
    {
        return false; /* the next term would start at max_position */
    }
    const int32_t next_term_id = (int32_t)((uint32_t)term_id + 1);
    const int32_t next_term_count = term_count + 1;

    /* Clean two terms ahead rather than the partition being rotated into: a subscriber may
     * enter term_id + 1 as soon as term_id's last frame is committed, so that partition must
     * already be zero. The one cleaned now held term_id - 1, which the window guarantees
     * every subscriber has left; skip it if someone already rotated past (a late caller). */
    const int32_t clean_index = ls_logbuffer_index_by_term_count((int64_t)term_count + 2);
    const int32_t clean_held = ls_logbuffer_tail_term_id(ls_logbuffer_raw_tail(log, clean_index));
    if (clean && clean_held == (int32_t)((uint32_t)term_id - 1))
    {
        /* The tail past the end (stored before) is seen before any zero: a reader that finds
         * it unchanged after copying a frame knows the copy is intact (image.c, lapped). */
        atomic_thread_fence(memory_order_release);
        memset(log->terms[clean_index], 0, (size_t)log->term_length);
    }

    /* Writers holding a stale count may still add to the next partition's old tail, so
     * retry the CAS while it holds the term three back. */
    const int32_t next_index = ls_logbuffer_index_by_term_count(next_term_count);
    const int32_t expected_term_id = (int32_t)((uint32_t)next_term_id - LS_LOG_PARTITION_COUNT);
    const int64_t new_raw_tail = ls_logbuffer_pack_tail(next_term_id, 0);
    int64_t raw_tail;
    do
    {
        raw_tail = ls_logbuffer_raw_tail(log, next_index);
        if (ls_logbuffer_tail_term_id(raw_tail) != expected_term_id)
        {
            break;
        }
    }
    while (!ls_cas_i64(ls_logbuffer_tail_counter_addr((log)->metadata, next_index), raw_tail, new_raw_tail));

    return ls_cas_i32(LS_META_AT(log, LS_LOG_ACTIVE_TERM_COUNT_OFFSET), term_count, next_term_count);
}
