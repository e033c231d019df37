/* Umbrella header: everything the cffi extension and the C tests see. */
#ifndef LOCKSTEP_H
#define LOCKSTEP_H

#include "cnc_descriptor.h"
#include "counters.h"
#include "ls_error.h"
#include "ring_buffer.h"

#endif
