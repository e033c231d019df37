/* Wake-ups for readers that block instead of spinning: a writer that commits a frame calls
 * ls_log_signal, a reader with nothing to read calls ls_log_await. Costs the writer one fence
 * and one load per commit while nobody waits; a futex wake (one syscall) when somebody does. */
#ifndef LS_LOG_SIGNAL_H
#define LS_LOG_SIGNAL_H

#include <stdint.h>

#include "concurrent/doorbell.h"
#include "logbuffer/logbuffer_descriptor.h"

/* `metadata`: the log's metadata section (ls_logbuffer_t.metadata).
 * After committing frames (or setting end of stream): wake every reader asleep on the log. */
void ls_log_signal(uint8_t *metadata);

/* Wake every reader asleep on the log now, whether or not one flagged itself (a reader's own
 * process closing it: the sleeper wakes, sees the close and stops). A reader about to sleep
 * that has read the wake word already returns at once. */
void ls_log_wake(uint8_t *metadata);

/* The log's doorbell for a reader whose next frame starts at `frame` (for ls_doorbell_wait). */
void ls_log_doorbell(uint8_t *metadata, const uint8_t *frame, ls_doorbell_t *bell);

/* Sleeps until a writer signals, at most timeout_ns, unless the frame at `frame` is already
 * committed (length > 0). Returns 1 when woken or something is there, 0 on timeout or a
 * signal (EINTR: the caller's language runtime gets to handle it). */
int ls_log_await(uint8_t *metadata, const uint8_t *frame, int64_t timeout_ns);

#endif
