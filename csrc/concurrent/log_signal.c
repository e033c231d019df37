#include "concurrent/log_signal.h"
#include "protocol/frame_descriptor.h"

/* A log's doorbell (doorbell.h) lives in its metadata, in bytes Aeron leaves unused. */

void ls_log_signal(uint8_t *metadata)
{
    ls_doorbell_ring(metadata + LS_LOG_READER_WAITING_OFFSET, metadata + LS_LOG_WAKE_SEQUENCE_OFFSET);
}

void ls_log_doorbell(uint8_t *metadata, const uint8_t *frame, ls_doorbell_t *bell)
{
    bell->flag = metadata + LS_LOG_READER_WAITING_OFFSET;
    bell->sequence = metadata + LS_LOG_WAKE_SEQUENCE_OFFSET;
    bell->probe = frame + LS_FRAME_LENGTH_OFFSET;
}

void ls_log_wake(uint8_t *metadata)
{
    ls_doorbell_wake_all(metadata + LS_LOG_WAKE_SEQUENCE_OFFSET);
}

int ls_log_await(uint8_t *metadata, const uint8_t *frame, int64_t timeout_ns)
{
    ls_doorbell_t bell;
    ls_log_doorbell(metadata, frame, &bell);
    return ls_doorbell_wait(&bell, 1, timeout_ns);
}
