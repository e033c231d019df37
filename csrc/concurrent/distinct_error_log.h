/* Distinct error log in Agrona's format, written by many processes at once: an error text
 * seen before only bumps its record's observation count and last timestamp; a new text gets
 * a record claimed at the end of the log by CAS on its length word (see the descriptor). */
#ifndef LS_DISTINCT_ERROR_LOG_H
#define LS_DISTINCT_ERROR_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "concurrent/distinct_error_log_descriptor.h"

typedef struct ls_distinct_error_log_stct
{
    uint8_t *buffer;
    int32_t capacity;
} ls_distinct_error_log_t;

/* One record as read (a snapshot; `text` points into the log's memory). */
typedef struct ls_error_record_stct
{
    int32_t offset;
    int32_t observation_count;
    int64_t last_observation_timestamp_ms;
    int64_t first_observation_timestamp_ms;
    const char *text;
    int32_t text_length;
} ls_error_record_t;

/* The buffer must be 8-byte aligned, its capacity a multiple of 8 (0 allowed: nothing fits). */
int ls_distinct_error_log_init(ls_distinct_error_log_t *log, void *buffer, size_t capacity);

/* Records one observation of `text` at `timestamp_ms`. Returns 1 when a new record was made,
 * 0 when an existing record of the same text counted it, -1 on error: LS_ESTATE when the
 * log has no room for a new record, LS_EFORMAT when a record header is corrupt, LS_EINVAL
 * for an empty or too long text. */
int ls_distinct_error_log_record(ls_distinct_error_log_t *log, int64_t timestamp_ms, const char *text, size_t length);

/* Reads the first complete record at or after *offset into `record` and moves *offset past
 * it. Returns 1 with a record, 0 at the end of the log, -1 (LS_EFORMAT) on a corrupt header. */
int ls_distinct_error_log_read(const ls_distinct_error_log_t *log, int32_t *offset, ls_error_record_t *record);

#endif
