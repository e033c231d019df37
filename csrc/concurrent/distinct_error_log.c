#include <sched.h>
#include <string.h>

#include "concurrent/distinct_error_log.h"
#include "concurrent/ls_atomic.h"
#include "util/ls_bitutil.h"
#include "util/ls_error.h"

/* How long a writer waits for a record of its text's length that another writer is still
 * filling, before stepping over it (then the same text may get a second record: the counts
 * of both add up; only a writer that died mid-record makes this happen more than briefly). */
#define LS_ERROR_LOG_PENDING_YIELDS 10000

#define LS_ERROR_LOG_AT(log, offset) ((log)->buffer + (offset))

int ls_distinct_error_log_init(ls_distinct_error_log_t *log, void *buffer, size_t capacity)
{
    if (NULL == buffer || ((uintptr_t)buffer & (LS_ERROR_LOG_RECORD_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "error log: buffer must be non-NULL and 8-byte aligned");
        return -1;
    }
    if (capacity % LS_ERROR_LOG_RECORD_ALIGNMENT != 0 || capacity > INT32_MAX)
    {
        ls_set_error(
            LS_EFORMAT, "error log length: expected a multiple of %d up to %d, found %zu", LS_ERROR_LOG_RECORD_ALIGNMENT,
            INT32_MAX - (LS_ERROR_LOG_RECORD_ALIGNMENT - 1), capacity);
        return -1;
    }
    log->buffer = buffer;
    log->capacity = (int32_t)capacity;
    return 0;
}

/* The magnitude of the length word `length` read at `offset`, or -1 (LS_EFORMAT) when it
 * cannot be a record there: shorter than a header or running past the end of the log. */
static int32_t ls_error_log_magnitude(const ls_distinct_error_log_t *log, int32_t offset, int32_t length)
{
    const int64_t magnitude = length < 0 ? -(int64_t)length : (int64_t)length;
    if (magnitude < LS_ERROR_LOG_ENCODED_ERROR_OFFSET || offset + magnitude > log->capacity)
    {
        ls_set_error(
            LS_EFORMAT, "error log record at offset %d: length expected %d..%d, found %d", offset,
            LS_ERROR_LOG_ENCODED_ERROR_OFFSET, log->capacity - offset, length);
        return -1;
    }
    return (int32_t)magnitude;
}

static void ls_error_log_observe(uint8_t *record, int64_t timestamp_ms)
{
    ls_get_and_add_i32(record + LS_ERROR_LOG_OBSERVATION_COUNT_OFFSET, 1);
    /* Writers race here: the latest timestamp wins (a CAS, released like Agrona's putLongOrdered). */
    uint8_t *last = record + LS_ERROR_LOG_LAST_OBSERVATION_TIMESTAMP_OFFSET;
    int64_t current = ls_get_acquire_i64(last);
    while (current < timestamp_ms && !ls_cas_i64(last, current, timestamp_ms))
    {
        current = ls_get_acquire_i64(last);
    }
}

static int32_t ls_error_log_await_commit(uint8_t *record, int32_t length)
{
    for (int i = 0; i < LS_ERROR_LOG_PENDING_YIELDS && length < 0; i++)
    {
        sched_yield();
        length = ls_get_acquire_i32(record + LS_ERROR_LOG_LENGTH_OFFSET);
    }
    return length;
}

int ls_distinct_error_log_record(ls_distinct_error_log_t *log, int64_t timestamp_ms, const char *text, size_t length)
{
    const int32_t max_text = log->capacity - LS_ERROR_LOG_ENCODED_ERROR_OFFSET;
    if (NULL == text || 0 == length || max_text <= 0 || length > (size_t)max_text)
    {
        ls_set_error(LS_EINVAL, "error text length: expected 1..%d, found %zu", max_text > 0 ? max_text : 0, length);
        return -1;
    }
    const int32_t record_length = LS_ERROR_LOG_ENCODED_ERROR_OFFSET + (int32_t)length;
    int32_t offset = 0;
    while (offset < log->capacity)
    {
        uint8_t *record = LS_ERROR_LOG_AT(log, offset);
        int32_t word = ls_get_acquire_i32(record + LS_ERROR_LOG_LENGTH_OFFSET);
        if (0 == word)
        {
            if ((int64_t)offset + record_length > log->capacity)
            {
                break;
            }
            if (!ls_cas_i32(record + LS_ERROR_LOG_LENGTH_OFFSET, 0, -record_length))
            {
                continue; /* another writer claimed it first: look at its record */
            }
            memcpy(record + LS_ERROR_LOG_ENCODED_ERROR_OFFSET, text, length);
            ls_put_plain_i64(record + LS_ERROR_LOG_FIRST_OBSERVATION_TIMESTAMP_OFFSET, timestamp_ms);
            ls_put_plain_i64(record + LS_ERROR_LOG_LAST_OBSERVATION_TIMESTAMP_OFFSET, timestamp_ms);
            ls_put_plain_i32(record + LS_ERROR_LOG_OBSERVATION_COUNT_OFFSET, 1);
            ls_put_release_i32(record + LS_ERROR_LOG_LENGTH_OFFSET, record_length);
            return 1;
        }
        const int32_t magnitude = ls_error_log_magnitude(log, offset, word);
        if (magnitude < 0)
        {
            return -1;
        }
        if (word < 0 && magnitude == record_length)
        {
            word = ls_error_log_await_commit(record, word); /* maybe the same text */
        }
        if (word == record_length && 0 == memcmp(record + LS_ERROR_LOG_ENCODED_ERROR_OFFSET, text, length))
        {
            ls_error_log_observe(record, timestamp_ms);
            return 0;
        }
        offset += LS_ALIGN(magnitude, LS_ERROR_LOG_RECORD_ALIGNMENT);
    }
    ls_set_error(
        LS_ESTATE, "error log full: no room for a record of %d bytes in %d bytes", record_length, log->capacity);
    return -1;
}

int ls_distinct_error_log_read(const ls_distinct_error_log_t *log, int32_t *offset, ls_error_record_t *out)
{
    int32_t at = *offset;
    if (at < 0 || (at & (LS_ERROR_LOG_RECORD_ALIGNMENT - 1)) != 0)
    {
        ls_set_error(LS_EINVAL, "error log offset: expected a non-negative multiple of 8, found %d", at);
        return -1;
    }
    while (at < log->capacity)
    {
        const uint8_t *record = LS_ERROR_LOG_AT(log, at);
        const int32_t length = ls_get_acquire_i32(record + LS_ERROR_LOG_LENGTH_OFFSET);
        if (0 == length)
        {
            break;
        }
        const int32_t magnitude = ls_error_log_magnitude(log, at, length);
        if (magnitude < 0)
        {
            *offset = at;
            return -1;
        }
        if (length > 0)
        {
            out->offset = at;
            out->observation_count = ls_get_acquire_i32(record + LS_ERROR_LOG_OBSERVATION_COUNT_OFFSET);
            out->last_observation_timestamp_ms = ls_get_acquire_i64(record + LS_ERROR_LOG_LAST_OBSERVATION_TIMESTAMP_OFFSET);
            out->first_observation_timestamp_ms = ls_get_plain_i64(record + LS_ERROR_LOG_FIRST_OBSERVATION_TIMESTAMP_OFFSET);
            out->text = (const char *)(record + LS_ERROR_LOG_ENCODED_ERROR_OFFSET);
            out->text_length = length - LS_ERROR_LOG_ENCODED_ERROR_OFFSET;
            *offset = at + LS_ALIGN(magnitude, LS_ERROR_LOG_RECORD_ALIGNMENT);
            return 1;
        }
        at += LS_ALIGN(magnitude, LS_ERROR_LOG_RECORD_ALIGNMENT); /* being written, or its writer died */
    }
    *offset = at;
    return 0;
}
