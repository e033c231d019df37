#include "concurrent/mpsc_rb.h"
#include "concurrent/ring_buffer_internal.h"

int32_t ls_mpsc_rb_claim_capacity(ls_ring_buffer_t *rb, int32_t required)
{
    int64_t head = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_HEAD_CACHE_POSITION_OFFSET));
    int64_t tail;
    int64_t tail_index;
    int64_t padding;
    do
    {
        tail = ls_get_acquire_i64(LS_RB_AT(rb, LS_RB_TAIL_POSITION_OFFSET));
        if (!ls_rb_claim_fits(rb, required, tail, &head, &tail_index, &padding))
        {
            return LS_RB_FULL;
        }
    }
    while (!ls_cas_i64(LS_RB_AT(rb, LS_RB_TAIL_POSITION_OFFSET), tail, tail + required + padding));
    return ls_rb_claimed_index(rb, tail_index, padding);
}
