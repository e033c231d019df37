/* Agrona `DistinctErrorLog` layout (spec/aeron-formats.md §6), as Aeron's
 * aeron_distinct_error_log.h: records from offset 0 of the error-log section, each aligned to 8. */
#ifndef LS_DISTINCT_ERROR_LOG_DESCRIPTOR_H
#define LS_DISTINCT_ERROR_LOG_DESCRIPTOR_H

/* Record: length of header + text (int32, released last; 0 = end of the log), observation
 * count (int32, atomic add), last observation timestamp ms (int64, release), first
 * observation timestamp ms (int64), then the error text (ASCII, not terminated). */
#define LS_ERROR_LOG_LENGTH_OFFSET 0
#define LS_ERROR_LOG_OBSERVATION_COUNT_OFFSET 4
#define LS_ERROR_LOG_LAST_OBSERVATION_TIMESTAMP_OFFSET 8
#define LS_ERROR_LOG_FIRST_OBSERVATION_TIMESTAMP_OFFSET 16
#define LS_ERROR_LOG_ENCODED_ERROR_OFFSET 24
#define LS_ERROR_LOG_RECORD_ALIGNMENT 8

/* lockstep's own, for writers in several processes (Agrona's writer is one process): a
 * writer claims the end of the log by CAS of the length word from 0 to -length, fills the
 * record, then releases +length. A negative length is a record being written (or left by a
 * writer that died while writing it): readers and writers step over it by its magnitude. */

#endif
