#include <string.h>

#include "concurrent/doorbell.h"
#include "concurrent/mpsc_rb.h"
#include "concurrent/ring_buffer.h"
#include "concurrent/ring_buffer_internal.h"
#include "concurrent/spsc_rb.h"
#include "util/ls_bitutil.h"
#include "util/ls_error.h"

/* After a commit (or an abort, which may free a sleeping consumer to read past it). */
static inline void ls_rb_signal(ls_ring_buffer_t *rb)
{
    ls_doorbell_ring(LS_RB_AT(rb, LS_RB_CONSUMER_WAITING_OFFSET), LS_RB_AT(rb, LS_RB_WAKE_SEQUENCE_OFFSET));
}

/* Trailer bytes that no field uses; Agrona never writes them, so non-zero means garbage. */
static const int32_t ls_rb_field_offsets[] = {
    LS_RB_TAIL_POSITION_OFFSET,
    LS_RB_HEAD_CACHE_POSITION_OFFSET,
    LS_RB_HEAD_POSITION_OFFSET,
    LS_RB_CONSUME_TARGET_OFFSET,
    LS_RB_CORRELATION_COUNTER_OFFSET,
    LS_RB_CONSUMER_WAITING_OFFSET,
    LS_RB_WAKE_SEQUENCE_OFFSET,
    LS_RB_CONSUMER_HEARTBEAT_OFFSET,
};

static int ls_rb_check_trailer_padding(const ls_ring_buffer_t *rb)
{
    int32_t start = 0;
    for (size_t f = 0; f <= sizeof(ls_rb_field_offsets) / sizeof(ls_rb_field_offsets[0]); f++)
    {
        int32_t end = f < sizeof(ls_rb_field_offsets) / sizeof(ls_rb_field_offsets[0]) ?
            ls_rb_field_offsets[f] : LS_RB_TRAILER_LENGTH;
        for (int32_t i = start; i < end; i++)
        {
            if (rb->trailer[i] != 0)
            {
                ls_set_error(
                    LS_EFORMAT, "trailer: expected zero padding at trailer offset %d, found 0x%02x",
                    i, rb->trailer[i]);
                return -1;
            }
        }
        start = end + (int32_t)sizeof(int64_t);
    }
    return 0;
}

static int ls_rb_check_positions(const ls_ring_buffer_t *rb)
{
    int64_t head_cache, head, tail, head_after;
    int attempts = 0;
    /* Positions move under live producers/consumers: take a snapshot during which head held. */
    do
    {
        head_cache = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_CACHE_POSITION_OFFSET));
        head = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
        tail = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_TAIL_POSITION_OFFSET));
        head_after = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    }
    while (head != head_after && ++attempts < 1000);

    if (head < 0 || (head & (LS_RB_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(LS_EFORMAT, "head position: expected a non-negative multiple of 8, found %lld", (long long)head);
        return -1;
    }
    if (tail < head || (tail & (LS_RB_ALIGNMENT - 1)) != 0 || (head == head_after && tail - head > rb->capacity))
    {
        ls_set_error(
            LS_EFORMAT, "tail position: expected a multiple of 8 in [head %lld, head + capacity %lld], found %lld",
            (long long)head, (long long)rb->capacity, (long long)tail);
        return -1;
    }
    if (head_cache < 0 || head_cache > head_after)
    {
        ls_set_error(
            LS_EFORMAT, "head cache position: expected 0..head (%lld), found %lld",
            (long long)head_after, (long long)head_cache);
        return -1;
    }
    return 0;
}

int ls_rb_init(ls_ring_buffer_t *rb, void *memory, size_t length, bool many_producers)
{
    if (NULL == rb || NULL == memory)
    {
        ls_set_error(LS_EINVAL, "ring buffer: memory is NULL");
        return -1;
    }
    if (((uintptr_t)memory & (LS_RB_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "ring buffer: memory must be 8-byte aligned");
        return -1;
    }
    if (length < LS_RB_TRAILER_LENGTH + LS_RB_MIN_CAPACITY)
    {
        ls_set_error(
            LS_EFORMAT, "length: expected at least %d bytes (capacity %d + trailer %d), found %zu",
            LS_RB_TRAILER_LENGTH + LS_RB_MIN_CAPACITY, LS_RB_MIN_CAPACITY, LS_RB_TRAILER_LENGTH, length);
        return -1;
    }
    const uint64_t capacity = length - LS_RB_TRAILER_LENGTH;
    if (!ls_is_power_of_two(capacity) || capacity > (UINT64_C(1) << 30))
    {
        ls_set_error(
            LS_EFORMAT, "capacity: expected a power of two up to 1 GiB (length - %d trailer), found %llu",
            LS_RB_TRAILER_LENGTH, (unsigned long long)capacity);
        return -1;
    }

    rb->buffer = memory;
    rb->capacity = (int64_t)capacity;
    rb->trailer = rb->buffer + capacity;
    rb->max_message_length = (int32_t)LS_RB_MAX_MESSAGE_LENGTH(capacity);
    rb->many_producers = many_producers;

    if (ls_rb_check_trailer_padding(rb) < 0 || ls_rb_check_positions(rb) < 0)
    {
        LS_APPEND_ERR("ring buffer of capacity %lld", (long long)rb->capacity);
        return -1;
    }
    return 0;
}

int32_t ls_rb_try_claim(ls_ring_buffer_t *rb, int32_t msg_type_id, size_t length)
{
    if (msg_type_id < 1)
    {
        ls_set_error(LS_EINVAL, "msg_type_id: expected >= 1, found %d", msg_type_id);
        return LS_RB_ERROR;
    }
    if (length > (size_t)rb->max_message_length)
    {
        ls_set_error(
            LS_EINVAL, "length: expected at most %d (capacity / 8), found %zu", rb->max_message_length, length);
        return LS_RB_ERROR;
    }
    const int32_t record_length = (int32_t)length + LS_RB_RECORD_HEADER_LENGTH;
    const int32_t required = LS_ALIGN(record_length, LS_RB_ALIGNMENT);
    const int32_t index =
        rb->many_producers ? ls_mpsc_rb_claim_capacity(rb, required) : ls_spsc_rb_claim_capacity(rb, required);
    if (index < 0)
    {
        return index;
    }
    uint8_t *record = rb->buffer + index;
    ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, -record_length);
    ls_put_plain_i32(record + LS_RB_TYPE_OFFSET, msg_type_id);
    return index + LS_RB_RECORD_HEADER_LENGTH;
}

/* Returns the record header for a claimed payload index, or NULL when it holds no claim. */
static uint8_t *ls_rb_claimed_record(ls_ring_buffer_t *rb, int32_t index)
{
    if (index < LS_RB_RECORD_HEADER_LENGTH || index > rb->capacity ||
        ((index - LS_RB_RECORD_HEADER_LENGTH) & (LS_RB_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "index: %d is not a claimed record's payload index", index);
        return NULL;
    }
    uint8_t *record = rb->buffer + index - LS_RB_RECORD_HEADER_LENGTH;
    if (ls_get_plain_i32(record + LS_RB_LENGTH_OFFSET) >= 0)
    {
        ls_set_error(LS_ESTATE, "index: record at %d is not claimed (already committed or aborted)", index);
        return NULL;
    }
    return record;
}

int ls_rb_commit(ls_ring_buffer_t *rb, int32_t index)
{
    uint8_t *record = ls_rb_claimed_record(rb, index);
    if (NULL == record)
    {
        return -1;
    }
    ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, -ls_get_plain_i32(record + LS_RB_LENGTH_OFFSET));
    ls_rb_signal(rb);
    return 0;
}

int ls_rb_abort(ls_ring_buffer_t *rb, int32_t index)
{
    uint8_t *record = ls_rb_claimed_record(rb, index);
    if (NULL == record)
    {
        return -1;
    }
    ls_put_plain_i32(record + LS_RB_TYPE_OFFSET, LS_RB_PADDING_MSG_TYPE_ID);
    ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, -ls_get_plain_i32(record + LS_RB_LENGTH_OFFSET));
    ls_rb_signal(rb);
    return 0;
}

int ls_rb_write(ls_ring_buffer_t *rb, int32_t msg_type_id, const uint8_t *data, size_t length)
{
    const int32_t index = ls_rb_try_claim(rb, msg_type_id, length);
    if (index < 0)
    {
        return index;
    }
    if (length > 0)
    {
        memcpy(rb->buffer + index, data, length);
    }
    uint8_t *record = rb->buffer + index - LS_RB_RECORD_HEADER_LENGTH;
    ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, (int32_t)(length + LS_RB_RECORD_HEADER_LENGTH));
    ls_rb_signal(rb);
    return LS_RB_SUCCESS;
}

void ls_rb_doorbell(ls_ring_buffer_t *rb, ls_doorbell_t *bell)
{
    const int64_t head = ls_get_plain_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET)); /* only the consumer moves it */
    bell->flag = LS_RB_AT(rb, LS_RB_CONSUMER_WAITING_OFFSET);
    bell->sequence = LS_RB_AT(rb, LS_RB_WAKE_SEQUENCE_OFFSET);
    bell->probe = rb->buffer + (head & (rb->capacity - 1)) + LS_RB_LENGTH_OFFSET;
}

int ls_rb_wait(ls_ring_buffer_t *rb, int64_t timeout_ns)
{
    ls_doorbell_t bell;
    ls_rb_doorbell(rb, &bell);
    return ls_doorbell_wait(&bell, 1, timeout_ns);
}

/* Looks at the record at `index` with `remaining` contiguous bytes after it. Returns its
 * aligned length, 0 when it is not committed yet, or -1 when the header is corrupt. */
static int64_t ls_rb_record_at(const ls_ring_buffer_t *rb, int64_t index, int64_t remaining, int32_t *type)
{
    const uint8_t *record = rb->buffer + index;
    const int32_t length = ls_get_acquire_i32(record + LS_RB_LENGTH_OFFSET);
    if (length <= 0)
    {
        return 0;
    }
    const int64_t aligned = LS_ALIGN((int64_t)length, LS_RB_ALIGNMENT);
    *type = ls_get_plain_i32(record + LS_RB_TYPE_OFFSET);
    if (aligned > remaining || (*type != LS_RB_PADDING_MSG_TYPE_ID &&
        (*type < 1 || length < LS_RB_RECORD_HEADER_LENGTH || length - LS_RB_RECORD_HEADER_LENGTH > rb->max_message_length)))
    {
        ls_set_error(
            LS_EFORMAT, "record at index %lld: length %d / msg_type_id %d invalid (%lld bytes to the buffer end)",
            (long long)index, length, *type, (long long)remaining);
        return -1;
    }
    return aligned;
}

/* Zeroes [head, head + bytes) — record lengths first, then the rest — and moves the head. */
static void ls_rb_zero_and_advance(ls_ring_buffer_t *rb, int64_t head, size_t bytes)
{
    const int64_t mask = rb->capacity - 1;
    /* Lengths first: a consumer killed while zeroing never leaves a committed length whose
     * type memset already cleared (memset may store in any order). */
    for (size_t done = 0; done < bytes;)
    {
        uint8_t *length_addr = rb->buffer + ((head + (int64_t)done) & mask) + LS_RB_LENGTH_OFFSET;
        const int32_t length = ls_get_plain_i32(length_addr);
        ls_put_plain_i32(length_addr, 0);
        if (length <= 0)
        {
            break;
        }
        done += (size_t)LS_ALIGN((int64_t)length, LS_RB_ALIGNMENT);
    }
    atomic_thread_fence(memory_order_release);
    const int64_t index = head & mask;
    const size_t to_end = (size_t)(rb->capacity - index);
    memset(rb->buffer + index, 0, bytes < to_end ? bytes : to_end);
    if (bytes > to_end)
    {
        memset(rb->buffer, 0, bytes - to_end);
    }
    ls_put_release_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET), head + (int64_t)bytes);
}

void ls_rb_consume(ls_ring_buffer_t *rb, size_t bytes)
{
    if (0 == bytes)
    {
        return;
    }
    const int64_t head = ls_get_plain_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    /* The intent first: what a killed consumer leaves half done, ls_rb_recover() finishes. */
    ls_put_plain_i64(LS_RB_AT(rb, LS_RB_CONSUME_TARGET_OFFSET), head + (int64_t)bytes);
    atomic_thread_fence(memory_order_release);
    ls_rb_zero_and_advance(rb, head, bytes);
}

int64_t ls_rb_recover(ls_ring_buffer_t *rb)
{
    /* Only the consume a dead consumer had begun is finished: records it had read (and so
     * handled once) are skipped, nothing else. Guessing the damaged region from the records
     * (as this once did) could take a producer's claim in progress for damage and skip
     * committed records with it. */
    const int64_t head = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    const int64_t tail = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_TAIL_POSITION_OFFSET));
    const int64_t target = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_CONSUME_TARGET_OFFSET));
    if (target <= head || target > tail || target - head > rb->capacity)
    {
        return 0; /* nothing in progress (or a value no consumer wrote: leave the ring alone) */
    }
    ls_rb_zero_and_advance(rb, head, (size_t)(target - head));
    return target - head;
}

int64_t ls_rb_controlled_read(
    ls_ring_buffer_t *rb, ls_rb_controlled_handler_t handler, void *clientd, int64_t limit)
{
    const int64_t head = ls_get_plain_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    const int64_t head_index = head & (rb->capacity - 1);
    const int64_t contiguous = rb->capacity - head_index;
    int64_t consumed = 0; /* committed to be consumed */
    int64_t bytes_read = 0;
    int64_t messages = 0;
    int corrupt = 0;

    while (bytes_read < contiguous && messages < limit)
    {
        const int64_t index = head_index + bytes_read;
        int32_t type = 0;
        const int64_t aligned = ls_rb_record_at(rb, index, contiguous - bytes_read, &type);
        if (aligned <= 0)
        {
            corrupt = aligned < 0;
            break;
        }
        bytes_read += aligned;
        if (LS_RB_PADDING_MSG_TYPE_ID == type)
        {
            continue;
        }
        const int32_t length = ls_get_plain_i32(rb->buffer + index + LS_RB_LENGTH_OFFSET);
        const ls_rb_read_action_t action = handler(
            type, rb->buffer + index + LS_RB_RECORD_HEADER_LENGTH,
            (size_t)(length - LS_RB_RECORD_HEADER_LENGTH), clientd);
        if (LS_RB_ABORT == action)
        {
            bytes_read -= aligned;
            break;
        }
        ++messages;
        if (LS_RB_BREAK == action)
        {
            break;
        }
        if (LS_RB_COMMIT == action)
        {
            ls_rb_consume(rb, (size_t)(bytes_read - consumed));
            consumed = bytes_read;
        }
    }

    ls_rb_consume(rb, (size_t)(bytes_read - consumed));
    return corrupt && 0 == messages ? -1 : messages;
}

struct ls_rb_read_adapter
{
    ls_rb_handler_t handler;
    void *clientd;
};

static ls_rb_read_action_t ls_rb_read_continue(
    int32_t msg_type_id, const uint8_t *data, size_t length, void *clientd)
{
    struct ls_rb_read_adapter *adapter = clientd;
    adapter->handler(msg_type_id, data, length, adapter->clientd);
    return LS_RB_CONTINUE;
}

int64_t ls_rb_read(ls_ring_buffer_t *rb, ls_rb_handler_t handler, void *clientd, int64_t limit)
{
    struct ls_rb_read_adapter adapter = { handler, clientd };
    return ls_rb_controlled_read(rb, ls_rb_read_continue, &adapter, limit);
}

int64_t ls_rb_scan(
    ls_ring_buffer_t *rb,
    int32_t *types,
    int32_t *offsets,
    int32_t *lengths,
    int64_t *consumed,
    int64_t limit,
    int64_t *scanned)
{
    /* Unlike read, a scan continues across the buffer end: bindings pay one call per batch. */
    const int64_t head = ls_get_plain_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    const int64_t mask = rb->capacity - 1;
    int64_t bytes_read = 0;
    int64_t messages = 0;
    int corrupt = 0;

    while (bytes_read < rb->capacity && messages < limit)
    {
        const int64_t index = (head + bytes_read) & mask;
        int32_t type = 0;
        const int64_t aligned = ls_rb_record_at(rb, index, rb->capacity - index, &type);
        if (aligned <= 0)
        {
            corrupt = aligned < 0;
            break;
        }
        bytes_read += aligned;
        if (LS_RB_PADDING_MSG_TYPE_ID == type)
        {
            continue;
        }
        types[messages] = type;
        offsets[messages] = (int32_t)index + LS_RB_RECORD_HEADER_LENGTH;
        lengths[messages] = ls_get_plain_i32(rb->buffer + index + LS_RB_LENGTH_OFFSET) - LS_RB_RECORD_HEADER_LENGTH;
        consumed[messages] = bytes_read;
        ++messages;
    }
    *scanned = bytes_read;
    return corrupt && 0 == messages ? -1 : messages;
}

static bool ls_rb_still_zeroed(const uint8_t *buffer, int64_t from, int64_t down_to)
{
    for (int64_t i = from - LS_RB_ALIGNMENT; i >= down_to; i -= LS_RB_ALIGNMENT)
    {
        if (0 != ls_get_acquire_i32(buffer + i + LS_RB_LENGTH_OFFSET))
        {
            return false;
        }
    }
    return true;
}

bool ls_rb_unblock(ls_ring_buffer_t *rb)
{
    const int64_t head = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    const int64_t tail = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_TAIL_POSITION_OFFSET));
    if (head == tail)
    {
        return false;
    }

    const int64_t mask = rb->capacity - 1;
    const int64_t consumer_index = head & mask;
    const int64_t producer_index = tail & mask;
    uint8_t *record = rb->buffer + consumer_index;
    const int32_t length = ls_get_acquire_i32(record + LS_RB_LENGTH_OFFSET);

    if (length < 0)
    {
        /* Claimed and never committed: the producer died in between. */
        const int64_t claimed = -(int64_t)length;
        if (claimed < LS_RB_RECORD_HEADER_LENGTH || LS_ALIGN(claimed, LS_RB_ALIGNMENT) > rb->capacity - consumer_index)
        {
            return false; /* no producer claims that (e.g. INT32_MIN): corruption, not a dead producer */
        }
        ls_put_plain_i32(record + LS_RB_TYPE_OFFSET, LS_RB_PADDING_MSG_TYPE_ID);
        ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, (int32_t)claimed);
        return true;
    }
    if (0 != length)
    {
        return false;
    }

    /* Tail moved past a record nobody wrote: pad up to the next written one. When the tail
     * has wrapped and the rest of the buffer is unwritten, pad to the end (Agrona stops
     * there and would leave the consumer stuck). */
    const int64_t limit = producer_index > consumer_index ? producer_index : rb->capacity;
    int64_t i = consumer_index + LS_RB_ALIGNMENT;
    for (; i < limit; i += LS_RB_ALIGNMENT)
    {
        if (0 != ls_get_acquire_i32(rb->buffer + i + LS_RB_LENGTH_OFFSET))
        {
            break;
        }
    }
    if (i == limit && limit != rb->capacity)
    {
        return false;
    }
    if (!ls_rb_still_zeroed(rb->buffer, i, consumer_index))
    {
        return false;
    }
    /* Mark in progress by CAS so a producer that committed meanwhile is never overwritten. */
    const int32_t gap = (int32_t)(i - consumer_index);
    if (!ls_cas_i32(record + LS_RB_LENGTH_OFFSET, 0, -gap))
    {
        return false;
    }
    ls_put_plain_i32(record + LS_RB_TYPE_OFFSET, LS_RB_PADDING_MSG_TYPE_ID);
    ls_put_release_i32(record + LS_RB_LENGTH_OFFSET, gap);
    return true;
}

int64_t ls_rb_size(const ls_ring_buffer_t *rb)
{
    int64_t head_before, tail, head_after = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    do
    {
        head_before = head_after;
        tail = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_TAIL_POSITION_OFFSET));
        head_after = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
    }
    while (head_after != head_before);

    const int64_t size = tail - head_after;
    return size < 0 ? 0 : (size > rb->capacity ? rb->capacity : size);
}

int64_t ls_rb_producer_position(const ls_ring_buffer_t *rb)
{
    return ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_TAIL_POSITION_OFFSET));
}

int64_t ls_rb_consumer_position(const ls_ring_buffer_t *rb)
{
    return ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_POSITION_OFFSET));
}

int64_t ls_rb_next_correlation_id(ls_ring_buffer_t *rb)
{
    return ls_get_and_add_i64(LS_RB_AT(rb, LS_RB_CORRELATION_COUNTER_OFFSET), 1);
}

void ls_rb_consumer_heartbeat_time(ls_ring_buffer_t *rb, int64_t now_ms)
{
    ls_put_release_i64(LS_RB_AT(rb, LS_RB_CONSUMER_HEARTBEAT_OFFSET), now_ms);
}

int64_t ls_rb_consumer_heartbeat_time_value(const ls_ring_buffer_t *rb)
{
    return ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_CONSUMER_HEARTBEAT_OFFSET));
}
