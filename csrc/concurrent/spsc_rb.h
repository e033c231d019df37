/* The one-to-one ring's producer side (Agrona's OneToOneRingBuffer, Aeron's aeron_spsc_rb.c):
 * a single producer owns the tail and release-stores it past its claim. The rest of the ring
 * (records, consumer side, trailer) is ring_buffer.c's, shared with the many-to-one ring. */
#ifndef LS_SPSC_RB_H
#define LS_SPSC_RB_H

#include <stdint.h>

#include "concurrent/ring_buffer.h"

/* Claims `required` bytes (a record's aligned length) for ls_rb_try_claim: checks free space
 * (refreshing the cached head only when needed), advances the tail, writes the padding
 * record when the claim wraps. Returns the record's index, or LS_RB_FULL. Inside the library
 * only (hidden: the per-message path calls it directly). */
__attribute__((visibility("hidden"))) int32_t ls_spsc_rb_claim_capacity(ls_ring_buffer_t *rb, int32_t required);

#endif
