/* Aeron log buffer layout (aeron_logbuffer_descriptor.h; spec §3): 3 term partitions, then a
 * 4096-byte metadata section; the file length is aligned to the page size. */
#ifndef LS_LOGBUFFER_DESCRIPTOR_H
#define LS_LOGBUFFER_DESCRIPTOR_H

#include <stddef.h>
#include <stdint.h>

#define LS_LOG_PARTITION_COUNT 3
#define LS_LOG_TERM_MIN_LENGTH (64 * 1024)
#define LS_LOG_TERM_MAX_LENGTH (1024 * 1024 * 1024)
#define LS_LOG_PAGE_MIN_SIZE (4 * 1024)
#define LS_LOG_PAGE_MAX_SIZE (1024 * 1024 * 1024)
#define LS_LOG_META_DATA_LENGTH 4096
#define LS_LOG_MAX_MTU_LENGTH 65504
#define LS_LOG_DEFAULT_MTU_LENGTH 1408
#define LS_LOG_MAX_MESSAGE_LENGTH_CAP (16 * 1024 * 1024)

/* Metadata offsets, from the start of the metadata section. */
#define LS_LOG_TERM_TAIL_COUNTERS_OFFSET 0 /* int64 x 3: term id << 32 | term offset */
#define LS_LOG_ACTIVE_TERM_COUNT_OFFSET 24
#define LS_LOG_END_OF_STREAM_POSITION_OFFSET 128
#define LS_LOG_IS_CONNECTED_OFFSET 136
#define LS_LOG_ACTIVE_TRANSPORT_COUNT_OFFSET 140
#define LS_LOG_CORRELATION_ID_OFFSET 256
#define LS_LOG_INITIAL_TERM_ID_OFFSET 264
#define LS_LOG_DEFAULT_FRAME_HEADER_LENGTH_OFFSET 268
#define LS_LOG_MTU_LENGTH_OFFSET 272
#define LS_LOG_TERM_LENGTH_OFFSET 276
#define LS_LOG_PAGE_SIZE_OFFSET 280
#define LS_LOG_PUBLICATION_WINDOW_LENGTH_OFFSET 284
#define LS_LOG_RECEIVER_WINDOW_LENGTH_OFFSET 288
#define LS_LOG_SOCKET_SNDBUF_LENGTH_OFFSET 292
#define LS_LOG_OS_DEFAULT_SOCKET_SNDBUF_LENGTH_OFFSET 296
#define LS_LOG_OS_MAX_SOCKET_SNDBUF_LENGTH_OFFSET 300
#define LS_LOG_SOCKET_RCVBUF_LENGTH_OFFSET 304
#define LS_LOG_OS_DEFAULT_SOCKET_RCVBUF_LENGTH_OFFSET 308
#define LS_LOG_OS_MAX_SOCKET_RCVBUF_LENGTH_OFFSET 312
#define LS_LOG_MAX_RESEND_OFFSET 316
#define LS_LOG_DEFAULT_FRAME_HEADER_OFFSET 320
#define LS_LOG_DEFAULT_FRAME_HEADER_MAX_LENGTH 128
#define LS_LOG_ENTITY_TAG_OFFSET 448
#define LS_LOG_RESPONSE_CORRELATION_ID_OFFSET 456
#define LS_LOG_LINGER_TIMEOUT_NS_OFFSET 464
#define LS_LOG_UNTETHERED_WINDOW_LIMIT_TIMEOUT_NS_OFFSET 472
#define LS_LOG_UNTETHERED_RESTING_TIMEOUT_NS_OFFSET 480
#define LS_LOG_GROUP_OFFSET 488
#define LS_LOG_IS_RESPONSE_OFFSET 489
#define LS_LOG_REJOIN_OFFSET 490
#define LS_LOG_RELIABLE_OFFSET 491
#define LS_LOG_SPARSE_OFFSET 492
#define LS_LOG_SIGNAL_EOS_OFFSET 493
#define LS_LOG_SPIES_SIMULATE_CONNECTION_OFFSET 494
#define LS_LOG_TETHER_OFFSET 495

/* lockstep's own fields, in metadata Aeron leaves unused (zero in Aeron's files: nobody waits).
 * Blocking readers (log_signal.h): a flag set by a reader about to sleep, and the futex word a
 * writer bumps to wake it. Own cache lines, away from the tails the writers hit. */
#define LS_LOG_READER_WAITING_OFFSET 512 /* int32: 1 while a reader may be asleep */
#define LS_LOG_WAKE_SEQUENCE_OFFSET 576  /* int32: futex word, bumped on each wake */

/* The term and position arithmetic every reader and writer of a log shares, written once (as
 * aeron_logbuffer_descriptor.h's inline functions). Term ids wrap as int32 and are often
 * negative (random initial term ids): built with unsigned arithmetic. */

/* A term tail counter: term id in the high 32 bits, term offset in the low 32 (the offset
 * may pass the term length: a claim that crossed the term end). */
static inline int64_t ls_logbuffer_pack_tail(int32_t term_id, int64_t term_offset)
{
    return (int64_t)(((uint64_t)(uint32_t)term_id << 32) | (uint64_t)term_offset);
}

static inline int32_t ls_logbuffer_tail_term_id(int64_t raw_tail)
{
    return (int32_t)(uint32_t)((uint64_t)raw_tail >> 32);
}

/* The raw term offset of a tail, not capped at the term length. */
static inline int64_t ls_logbuffer_tail_term_offset(int64_t raw_tail)
{
    return raw_tail & INT64_C(0xFFFFFFFF);
}

/* The address of partition `index`'s tail counter in the metadata section. */
static inline uint8_t *ls_logbuffer_tail_counter_addr(uint8_t *metadata, int32_t index)
{
    return metadata + LS_LOG_TERM_TAIL_COUNTERS_OFFSET + (size_t)index * sizeof(int64_t);
}

/* term_id - initial_term_id with int32 wrap-around, as Aeron's term counts are. */
static inline int32_t ls_logbuffer_compute_term_count(int32_t term_id, int32_t initial_term_id)
{
    return (int32_t)((uint32_t)term_id - (uint32_t)initial_term_id);
}

/* initial_term_id + term_count, wrapping: the term id of a term count. */
static inline int32_t ls_logbuffer_compute_term_id(int64_t term_count, int32_t initial_term_id)
{
    return (int32_t)((uint32_t)initial_term_id + (uint32_t)term_count);
}

static inline int32_t ls_logbuffer_index_by_term_count(int64_t term_count)
{
    return (int32_t)(((term_count % LS_LOG_PARTITION_COUNT) + LS_LOG_PARTITION_COUNT) % LS_LOG_PARTITION_COUNT);
}

/* The term count of a position (terms since the initial one). */
static inline int64_t ls_logbuffer_term_count_by_position(int64_t position, int32_t position_bits_to_shift)
{
    return position >> position_bits_to_shift;
}

static inline int32_t ls_logbuffer_index_by_position(int64_t position, int32_t position_bits_to_shift)
{
    return ls_logbuffer_index_by_term_count(ls_logbuffer_term_count_by_position(position, position_bits_to_shift));
}

static inline int32_t ls_logbuffer_compute_term_id_from_position(
    int64_t position, int32_t position_bits_to_shift, int32_t initial_term_id)
{
    return ls_logbuffer_compute_term_id(ls_logbuffer_term_count_by_position(position, position_bits_to_shift), initial_term_id);
}

static inline int32_t ls_logbuffer_compute_term_offset_from_position(int64_t position, int32_t term_length)
{
    return (int32_t)(position & (term_length - 1));
}

static inline int64_t ls_logbuffer_compute_position(
    int32_t term_id, int32_t term_offset, int32_t term_length, int32_t initial_term_id)
{
    const int64_t term_count = ls_logbuffer_compute_term_count(term_id, initial_term_id);
    return term_count * (int64_t)term_length + term_offset;
}

#endif
