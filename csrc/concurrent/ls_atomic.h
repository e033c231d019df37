/* C11 atomics over mapped (non-_Atomic) memory, with the orders the spec names:
 * "release" = Java putOrdered/setRelease, "acquire" = getVolatile/getAcquire. */
#ifndef LS_ATOMIC_H
#define LS_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define LS_CACHE_LINE_LENGTH 64

static inline int32_t ls_get_acquire_i32(const void *addr)
{
    return atomic_load_explicit((_Atomic int32_t *)addr, memory_order_acquire);
}

static inline int64_t ls_get_acquire_i64(const void *addr)
{
    return atomic_load_explicit((_Atomic int64_t *)addr, memory_order_acquire);
}

static inline void ls_put_release_i32(void *addr, int32_t value)
{
    atomic_store_explicit((_Atomic int32_t *)addr, value, memory_order_release);
}

static inline void ls_put_release_i64(void *addr, int64_t value)
{
    atomic_store_explicit((_Atomic int64_t *)addr, value, memory_order_release);
}

static inline bool ls_cas_i32(void *addr, int32_t expected, int32_t desired)
{
    return atomic_compare_exchange_strong_explicit(
        (_Atomic int32_t *)addr, &expected, desired, memory_order_acq_rel, memory_order_acquire);
}

static inline bool ls_cas_i64(void *addr, int64_t expected, int64_t desired)
{
    return atomic_compare_exchange_strong_explicit(
        (_Atomic int64_t *)addr, &expected, desired, memory_order_acq_rel, memory_order_acquire);
}

static inline int64_t ls_get_and_add_i64(void *addr, int64_t delta)
{
    return atomic_fetch_add_explicit((_Atomic int64_t *)addr, delta, memory_order_acq_rel);
}

static inline int32_t ls_get_and_add_i32(void *addr, int32_t delta)
{
    return atomic_fetch_add_explicit((_Atomic int32_t *)addr, delta, memory_order_acq_rel);
}

/* Plain (relaxed) access for fields published by a later release store. */
static inline int32_t ls_get_plain_i32(const void *addr)
{
    return atomic_load_explicit((_Atomic int32_t *)addr, memory_order_relaxed);
}

static inline void ls_put_plain_i32(void *addr, int32_t value)
{
    atomic_store_explicit((_Atomic int32_t *)addr, value, memory_order_relaxed);
}

static inline int64_t ls_get_plain_i64(const void *addr)
{
    return atomic_load_explicit((_Atomic int64_t *)addr, memory_order_relaxed);
}

static inline void ls_put_plain_i64(void *addr, int64_t value)
{
    atomic_store_explicit((_Atomic int64_t *)addr, value, memory_order_relaxed);
}

#endif
