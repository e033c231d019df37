/* Agrona counters layout (spec/aeron-formats.md §4): a values buffer of 128-byte records and
 * a metadata buffer of 512-byte records, metadata = 4 x values in length. */
#ifndef LS_COUNTERS_DESCRIPTOR_H
#define LS_COUNTERS_DESCRIPTOR_H

#include <stdint.h>

/* Value record. */
#define LS_COUNTER_VALUE_LENGTH 128
#define LS_COUNTER_VALUE_OFFSET 0
#define LS_COUNTER_REGISTRATION_ID_OFFSET 8
#define LS_COUNTER_OWNER_ID_OFFSET 16
#define LS_COUNTER_REFERENCE_ID_OFFSET 24

/* Metadata record. */
#define LS_COUNTER_METADATA_LENGTH 512
#define LS_COUNTER_STATE_OFFSET 0
#define LS_COUNTER_TYPE_ID_OFFSET 4
#define LS_COUNTER_FREE_FOR_REUSE_DEADLINE_OFFSET 8
#define LS_COUNTER_KEY_OFFSET 16
#define LS_COUNTER_MAX_KEY_LENGTH 112
#define LS_COUNTER_LABEL_LENGTH_OFFSET 128
#define LS_COUNTER_LABEL_OFFSET 132
#define LS_COUNTER_MAX_LABEL_LENGTH 380

/* Record states. RESERVING is lockstep's own: the allocator that won the CAS from UNUSED or
 * RECLAIMED fills the record and then releases ALLOCATED. */
#define LS_COUNTER_RECORD_UNUSED 0
#define LS_COUNTER_RECORD_ALLOCATED 1
#define LS_COUNTER_RECORD_RECLAIMED (-1)
#define LS_COUNTER_RECORD_RESERVING 2

#define LS_COUNTER_NOT_FREE_TO_REUSE INT64_MAX

/* Type ids, Aeron's where the meaning is Aeron's (spec §4); lockstep's own are above 1000. */
#define LS_COUNTER_TYPE_PUBLISHER_LIMIT 1
#define LS_COUNTER_TYPE_SUBSCRIBER_POSITION 4
#define LS_COUNTER_TYPE_CLIENT_HEARTBEAT 11

/* Key of a stream's counters (publisher limit, subscriber position): which log they bound. */
#define LS_STREAM_KEY_REGISTRATION_ID_OFFSET 0
#define LS_STREAM_KEY_SESSION_ID_OFFSET 8
#define LS_STREAM_KEY_STREAM_ID_OFFSET 12
#define LS_STREAM_KEY_LENGTH 16

#endif
