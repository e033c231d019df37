/* Alignment and power-of-two helpers shared by every format. */
#ifndef LS_BITUTIL_H
#define LS_BITUTIL_H

#include <stdbool.h>
#include <stdint.h>

#define LS_ALIGN(value, alignment) (((value) + ((alignment) - 1)) & ~((alignment) - 1))

static inline bool ls_is_power_of_two(uint64_t value)
{
    return value > 0 && (value & (value - 1)) == 0;
}

#endif
