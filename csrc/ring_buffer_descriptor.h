/* Agrona ring buffer layout (spec/aeron-formats.md §1): `capacity` data bytes, a power of
 * two, then a 768-byte trailer whose fields sit on separate cache-line pairs. */
#ifndef LS_RING_BUFFER_DESCRIPTOR_H
#define LS_RING_BUFFER_DESCRIPTOR_H

#include "ls_atomic.h"

/* Trailer offsets, from the end of the data area. */
#define LS_RB_TAIL_POSITION_OFFSET (LS_CACHE_LINE_LENGTH * 2)
#define LS_RB_HEAD_CACHE_POSITION_OFFSET (LS_CACHE_LINE_LENGTH * 4)
#define LS_RB_HEAD_POSITION_OFFSET (LS_CACHE_LINE_LENGTH * 6)
/* lockstep's own, in Agrona's padding after the head (the consumer's cache line; zero in
 * Agrona's rings): the head a consume is moving to, stored before it zeroes anything, so a
 * consumer taking over from a killed one knows exactly what was already consumed. */
#define LS_RB_CONSUME_TARGET_OFFSET (LS_RB_HEAD_POSITION_OFFSET + 8)
#define LS_RB_CORRELATION_COUNTER_OFFSET (LS_CACHE_LINE_LENGTH * 8)
#define LS_RB_CONSUMER_HEARTBEAT_OFFSET (LS_CACHE_LINE_LENGTH * 10)
#define LS_RB_TRAILER_LENGTH (LS_CACHE_LINE_LENGTH * 12)

/* Record header: {int32 length; int32 msg_type_id}, records aligned to 8. */
#define LS_RB_LENGTH_OFFSET 0
#define LS_RB_TYPE_OFFSET 4
#define LS_RB_RECORD_HEADER_LENGTH 8
#define LS_RB_ALIGNMENT 8
#define LS_RB_PADDING_MSG_TYPE_ID (-1)

/* Smallest data area we accept: room for one maximal (capacity / 8) record. */
#define LS_RB_MIN_CAPACITY 64
#define LS_RB_MAX_MESSAGE_LENGTH(capacity) ((capacity) / 8)

#endif
