/* Umbrella header: everything the cffi extension and the C tests see. */
#ifndef LOCKSTEP_H
#define LOCKSTEP_H

#include "cnc_descriptor.h"
#include "counters.h"
#include "distinct_error_log.h"
#include "image.h"
#include "log_signal.h"
#include "logbuffer.h"
#include "mapped_file.h"
#include "ls_error.h"
#include "publication.h"
#include "ring_buffer.h"
#include "sequencer.h"

#endif
