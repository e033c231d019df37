#include <string.h>

#include "concurrent/counters.h"
#include "concurrent/ls_atomic.h"
#include "util/ls_error.h"

#define LS_META(c, id) ((c)->metadata + (size_t)(id) * LS_COUNTER_METADATA_LENGTH)
#define LS_VALUE(c, id) ((c)->values + (size_t)(id) * LS_COUNTER_VALUE_LENGTH)

int ls_counters_init(ls_counters_t *counters, void *metadata, size_t metadata_length, void *values, size_t values_length)
{
    if (NULL == metadata || NULL == values || ((uintptr_t)metadata & 7) != 0 || ((uintptr_t)values & 7) != 0)
    {
        ls_set_error(LS_EINVAL, "counters: buffers must be non-NULL and 8-byte aligned");
        return -1;
    }
    if (0 == values_length || values_length % LS_COUNTER_VALUE_LENGTH != 0 || values_length > INT32_MAX)
    {
        ls_set_error(
            LS_EFORMAT, "counters values length: expected a non-zero multiple of %d, found %zu",
            LS_COUNTER_VALUE_LENGTH, values_length);
        return -1;
    }
    if (metadata_length != values_length * (LS_COUNTER_METADATA_LENGTH / LS_COUNTER_VALUE_LENGTH))
    {
        ls_set_error(
            LS_EFORMAT, "counters metadata length: expected %zu (4 x values length), found %zu",
            values_length * (LS_COUNTER_METADATA_LENGTH / LS_COUNTER_VALUE_LENGTH), metadata_length);
        return -1;
    }
    counters->metadata = metadata;
    counters->values = values;
    counters->max_counter_id = (int32_t)(values_length / LS_COUNTER_VALUE_LENGTH);

    for (int32_t id = 0; id < counters->max_counter_id; id++)
    {
        const uint8_t *meta = LS_META(counters, id);
        const int32_t state = ls_get_acquire_i32(meta + LS_COUNTER_STATE_OFFSET);
        const int32_t label_length = ls_get_plain_i32(meta + LS_COUNTER_LABEL_LENGTH_OFFSET);
        if (state < LS_COUNTER_RECORD_RECLAIMED || state > LS_COUNTER_RECORD_RESERVING)
        {
            ls_set_error(LS_EFORMAT, "counter %d state: expected -1..2, found %d", id, state);
            return -1;
        }
        if (label_length < 0 || label_length > LS_COUNTER_MAX_LABEL_LENGTH)
        {
            ls_set_error(
                LS_EFORMAT, "counter %d label length: expected 0..%d, found %d", id, LS_COUNTER_MAX_LABEL_LENGTH, label_length);
            return -1;
        }
    }
    return 0;
}

static int ls_counters_check_id(const ls_counters_t *counters, int32_t counter_id)
{
    if (counter_id < 0 || counter_id >= counters->max_counter_id)
    {
        ls_set_error(LS_EINVAL, "counter id: expected 0..%d, found %d", counters->max_counter_id - 1, counter_id);
        return -1;
    }
    return 0;
}

/* Wins a record for this process: UNUSED, or RECLAIMED past its reuse deadline. */
static int32_t ls_counters_reserve(ls_counters_t *counters, int64_t now_ms)
{
    for (int32_t id = 0; id < counters->max_counter_id; id++)
    {
        uint8_t *meta = LS_META(counters, id);
        const int32_t state = ls_get_acquire_i32(meta + LS_COUNTER_STATE_OFFSET);
        if (LS_COUNTER_RECORD_UNUSED == state ||
            (LS_COUNTER_RECORD_RECLAIMED == state &&
             now_ms >= ls_get_plain_i64(meta + LS_COUNTER_FREE_FOR_REUSE_DEADLINE_OFFSET)))
        {
            if (ls_cas_i32(meta + LS_COUNTER_STATE_OFFSET, state, LS_COUNTER_RECORD_RESERVING))
            {
                return id;
            }
        }
    }
    return -1;
}

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
    int64_t now_ms)
{
    if (key_length > LS_COUNTER_MAX_KEY_LENGTH || (key_length > 0 && NULL == key))
    {
        ls_set_error(LS_EINVAL, "counter key length: expected at most %d, found %zu", LS_COUNTER_MAX_KEY_LENGTH, key_length);
        return -1;
    }
    if (label_length > LS_COUNTER_MAX_LABEL_LENGTH || (label_length > 0 && NULL == label))
    {
        ls_set_error(
            LS_EINVAL, "counter label length: expected at most %d, found %zu", LS_COUNTER_MAX_LABEL_LENGTH, label_length);
        return -1;
    }
    const int32_t id = ls_counters_reserve(counters, now_ms);
    if (id < 0)
    {
        ls_set_error(LS_ESTATE, "counters: all %d records are in use", counters->max_counter_id);
        return -1;
    }

    uint8_t *value = LS_VALUE(counters, id);
    uint8_t *meta = LS_META(counters, id);
    ls_put_plain_i64(value + LS_COUNTER_VALUE_OFFSET, 0);
    ls_put_plain_i64(value + LS_COUNTER_REGISTRATION_ID_OFFSET, registration_id);
    ls_put_plain_i64(value + LS_COUNTER_OWNER_ID_OFFSET, owner_id);
    ls_put_plain_i64(value + LS_COUNTER_REFERENCE_ID_OFFSET, reference_id);

    ls_put_plain_i32(meta + LS_COUNTER_TYPE_ID_OFFSET, type_id);
    ls_put_plain_i64(meta + LS_COUNTER_FREE_FOR_REUSE_DEADLINE_OFFSET, LS_COUNTER_NOT_FREE_TO_REUSE);
    memset(meta + LS_COUNTER_KEY_OFFSET, 0, LS_COUNTER_MAX_KEY_LENGTH);
    if (key_length > 0)
    {
        memcpy(meta + LS_COUNTER_KEY_OFFSET, key, key_length);
    }
    memset(meta + LS_COUNTER_LABEL_OFFSET, 0, LS_COUNTER_MAX_LABEL_LENGTH);
    if (label_length > 0)
    {
        memcpy(meta + LS_COUNTER_LABEL_OFFSET, label, label_length);
    }
    ls_put_plain_i32(meta + LS_COUNTER_LABEL_LENGTH_OFFSET, (int32_t)label_length);
    ls_put_release_i32(meta + LS_COUNTER_STATE_OFFSET, LS_COUNTER_RECORD_ALLOCATED);
    return id;
}

int ls_counters_free(ls_counters_t *counters, int32_t counter_id, int64_t free_for_reuse_deadline_ms)
{
    if (ls_counters_check_id(counters, counter_id) < 0)
    {
        LS_APPEND_ERR("freeing counter %d", counter_id);
        return -1;
    }
    uint8_t *meta = LS_META(counters, counter_id);
    if (LS_COUNTER_RECORD_ALLOCATED != ls_get_acquire_i32(meta + LS_COUNTER_STATE_OFFSET))
    {
        ls_set_error(LS_ESTATE, "counter %d: not allocated", counter_id);
        return -1;
    }
    ls_put_plain_i64(meta + LS_COUNTER_FREE_FOR_REUSE_DEADLINE_OFFSET, free_for_reuse_deadline_ms);
    /* Only one freer wins; a second free of the same record fails instead of racing. */
    if (!ls_cas_i32(meta + LS_COUNTER_STATE_OFFSET, LS_COUNTER_RECORD_ALLOCATED, LS_COUNTER_RECORD_RECLAIMED))
    {
        ls_set_error(LS_ESTATE, "counter %d: freed concurrently", counter_id);
        return -1;
    }
    return 0;
}

int32_t ls_counters_state(const ls_counters_t *counters, int32_t counter_id)
{
    return ls_get_acquire_i32(LS_META(counters, counter_id) + LS_COUNTER_STATE_OFFSET);
}

int64_t ls_counters_get(const ls_counters_t *counters, int32_t counter_id)
{
    return ls_get_acquire_i64(LS_VALUE(counters, counter_id) + LS_COUNTER_VALUE_OFFSET);
}

void ls_counters_set(ls_counters_t *counters, int32_t counter_id, int64_t value)
{
    ls_put_release_i64(LS_VALUE(counters, counter_id) + LS_COUNTER_VALUE_OFFSET, value);
}

int64_t ls_counters_get_and_add(ls_counters_t *counters, int32_t counter_id, int64_t delta)
{
    return ls_get_and_add_i64(LS_VALUE(counters, counter_id) + LS_COUNTER_VALUE_OFFSET, delta);
}

void ls_counters_propose_max(ls_counters_t *counters, int32_t counter_id, int64_t value)
{
    uint8_t *addr = LS_VALUE(counters, counter_id) + LS_COUNTER_VALUE_OFFSET;
    int64_t current = ls_get_acquire_i64(addr);
    while (current < value && !ls_cas_i64(addr, current, value))
    {
        current = ls_get_acquire_i64(addr);
    }
}

/* Whether record `id` is an allocated counter of `type_id` keyed by (session_id, stream_id).
 * Returns -1 at the first UNUSED record: records are taken lowest first and never return to
 * UNUSED, so none follows. */
static int ls_counters_match_stream(
    const ls_counters_t *counters, int32_t id, int32_t type_id, int32_t session_id, int32_t stream_id)
{
    const uint8_t *meta = LS_META(counters, id);
    const int32_t state = ls_get_acquire_i32(meta + LS_COUNTER_STATE_OFFSET);
    if (LS_COUNTER_RECORD_UNUSED == state)
    {
        return -1;
    }
    return LS_COUNTER_RECORD_ALLOCATED == state &&
        type_id == ls_get_plain_i32(meta + LS_COUNTER_TYPE_ID_OFFSET) &&
        session_id == ls_get_plain_i32(meta + LS_COUNTER_KEY_OFFSET + LS_STREAM_KEY_SESSION_ID_OFFSET) &&
        stream_id == ls_get_plain_i32(meta + LS_COUNTER_KEY_OFFSET + LS_STREAM_KEY_STREAM_ID_OFFSET);
}

int32_t ls_counters_find_stream(
    const ls_counters_t *counters, int32_t type_id, int32_t session_id, int32_t stream_id, int32_t *ids, int32_t max_ids)
{
    int32_t found = 0;
    for (int32_t id = 0; id < counters->max_counter_id; id++)
    {
        const int match = ls_counters_match_stream(counters, id, type_id, session_id, stream_id);
        if (match < 0)
        {
            break;
        }
        if (match)
        {
            if (found < max_ids)
            {
                ids[found] = id;
            }
            found++;
        }
    }
    return found;
}

int64_t ls_counters_min_stream_value(
    const ls_counters_t *counters, int32_t type_id, int32_t session_id, int32_t stream_id, int32_t *count)
{
    int64_t min_value = INT64_MAX;
    int32_t found = 0;
    for (int32_t id = 0; id < counters->max_counter_id; id++)
    {
        const int match = ls_counters_match_stream(counters, id, type_id, session_id, stream_id);
        if (match < 0)
        {
            break;
        }
        if (match)
        {
            const int64_t value = ls_counters_get(counters, id);
            if (value < min_value)
            {
                min_value = value;
            }
            found++;
        }
    }
    *count = found;
    return min_value;
}

bool ls_counters_is_owned(const ls_counters_t *counters, int32_t counter_id, int64_t registration_id)
{
    if (counter_id < 0 || counter_id >= counters->max_counter_id)
    {
        return false;
    }
    /* State first (acquire): a record being reused goes RECLAIMED -> RESERVING before its
     * registration id is rewritten, so ALLOCATED + our id read after it means still ours. */
    return LS_COUNTER_RECORD_ALLOCATED == ls_get_acquire_i32(LS_META(counters, counter_id) + LS_COUNTER_STATE_OFFSET) &&
        registration_id == ls_get_acquire_i64(LS_VALUE(counters, counter_id) + LS_COUNTER_REGISTRATION_ID_OFFSET);
}

int64_t *ls_counters_value_addr(ls_counters_t *counters, int32_t counter_id)
{
    return (int64_t *)(LS_VALUE(counters, counter_id) + LS_COUNTER_VALUE_OFFSET);
}
