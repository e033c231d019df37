/* Agrona ring buffer layout (spec/aeron-formats.md §1): `capacity` data bytes, a power of
 * two, then a 768-byte trailer whose fields sit on separate cache-line pairs. */
#ifndef LS_RING_BUFFER_DESCRIPTOR_H
#define LS_RING_BUFFER_DESCRIPTOR_H

#include "concurrent/ls_atomic.h"

/* Trailer offsets, from the end of the data area. */
#define LS_RB_TAIL_POSITION_OFFSET (LS_CACHE_LINE_LENGTH * 2)
#define LS_RB_HEAD_CACHE_POSITION_OFFSET (LS_CACHE_LINE_LENGTH * 4)
#define LS_RB_HEAD_POSITION_OFFSET (LS_CACHE_LINE_LENGTH * 6)
/* lockstep's own, in Agrona's padding after the head (the consumer's cache line; zero in
 * Agrona's rings): the head a consume is moving to, stored before it zeroes anything, so a
 * consumer taking over from a killed one knows exactly what was already consumed. */
#define LS_RB_CONSUME_TARGET_OFFSET (LS_RB_HEAD_POSITION_OFFSET + 8)
#define LS_RB_CORRELATION_COUNTER_OFFSET (LS_CACHE_LINE_LENGTH * 8)
/* lockstep's own, in Agrona's padding after the correlation counter (a line producers
 * rarely touch; zero in Agrona's rings: nobody sleeps): the consumer's doorbell
 * (doorbell.h), a flag the consumer sets before it sleeps and the futex word a producer's
 * commit bumps to wake it. Apart from the tail the producers hit and the head the consumer moves. */
#define LS_RB_CONSUMER_WAITING_OFFSET (LS_CACHE_LINE_LENGTH * 9)      /* int32: 1 while the consumer may sleep */
#define LS_RB_WAKE_SEQUENCE_OFFSET (LS_CACHE_LINE_LENGTH * 9 + 32)    /* int32: futex word, bumped on each wake */
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
