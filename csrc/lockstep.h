/* Umbrella header: everything the cffi extension and the C tests see. */
#ifndef LOCKSTEP_H
#define LOCKSTEP_H

#include "cnc_descriptor.h"
#include "concurrent/counters.h"
#include "concurrent/distinct_error_log.h"
#include "concurrent/log_signal.h"
#include "concurrent/ring_buffer.h"
#include "logbuffer/fragment_assembler.h"
#include "logbuffer/image.h"
#include "logbuffer/logbuffer.h"
#include "logbuffer/publication.h"
#include "logbuffer/term_reader.h"
#include "logbuffer/term_unblocker.h"
#include "sequencer.h"
#include "util/ls_error.h"
#include "util/mapped_file.h"

#endif
