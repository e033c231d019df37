/* Agrona-compatible counters with allocation that is safe across processes (no driver):
 * a CAS on the record state claims a slot, the record is filled, then ALLOCATED is released. */
#ifndef LS_COUNTERS_H
#define LS_COUNTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "concurrent/counters_descriptor.h"

typedef struct ls_counters_stct
{
    uint8_t *metadata;
    uint8_t *values;
    int32_t max_counter_id; /* number of records */
} ls_counters_t;

int ls_counters_init(ls_counters_t *counters, void *metadata, size_t metadata_length, void *values, size_t values_length);

/* Returns the new counter id, or -1 (LS_ESTATE when every record is in use). Records freed
 * with a deadline are reused only once now_ms has reached it. */
int32_t ls_counters_allocate(
    ls_counters_t *counters,
    int32_t type_id,
    const uint8_t *key,
    size_t key_length,
    const char *label,
    size_t label_length,
    int64_t registration_id,
    int64_t owner_id,
    int64_t reference_id,
    int64_t now_ms);
int ls_counters_free(ls_counters_t *counters, int32_t counter_id, int64_t free_for_reuse_deadline_ms);

int32_t ls_counters_state(const ls_counters_t *counters, int32_t counter_id);
int64_t ls_counters_get(const ls_counters_t *counters, int32_t counter_id);
void ls_counters_set(ls_counters_t *counters, int32_t counter_id, int64_t value);
int64_t ls_counters_get_and_add(ls_counters_t *counters, int32_t counter_id, int64_t delta);
/* Raises the value to `value` if it is lower (monotonic positions). */
void ls_counters_propose_max(ls_counters_t *counters, int32_t counter_id, int64_t value);
/* Ids of the allocated counters of `type_id` whose stream key names (session_id, stream_id),
 * at most max_ids of them, lowest id first; returns how many matched in all. */
int32_t ls_counters_find_stream(
    const ls_counters_t *counters, int32_t type_id, int32_t session_id, int32_t stream_id, int32_t *ids, int32_t max_ids);
/* The lowest value among ALL the allocated counters of `type_id` keyed by (session_id,
 * stream_id), however many there are (a publisher's limit must cover every subscriber);
 * *count = how many matched. INT64_MAX when none. */
int64_t ls_counters_min_stream_value(
    const ls_counters_t *counters, int32_t type_id, int32_t session_id, int32_t stream_id, int32_t *count);
/* Whether the record is still allocated to `registration_id`: false once another process freed
 * it (an eviction) or it was reused by a new owner. Checked before every write of a counter that
 * another process may free (the reuse delay covers the time between the check and the write). */
bool ls_counters_is_owned(const ls_counters_t *counters, int32_t counter_id, int64_t registration_id);
int64_t *ls_counters_value_addr(ls_counters_t *counters, int32_t counter_id);

#endif
