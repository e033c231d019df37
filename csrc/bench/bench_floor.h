/* The C floor of lockstep's benchmarks: the same loops as `lockstep bench`, with no Python
 * in them, in threads of one process over the same C core. Each returns elapsed ns, or -1. */
#ifndef LS_BENCH_FLOOR_H
#define LS_BENCH_FLOOR_H

#include <stdint.h>

/* One writer thread offers `messages` of `size` bytes on an exclusive log; the caller's
 * thread polls them (batch > 1: offer_batch of that many per call). */
int64_t ls_bench_throughput_floor(int64_t messages, int32_t size, int32_t batch);

/* `senders` threads send `commands` in total through the ingress ring; the caller's thread
 * runs the sequencer loop and a log consumer until all are sequenced and read. */
int64_t ls_bench_sequencer_floor(int64_t commands, int32_t senders, int32_t size);

/* Round trips over two exclusive logs between the caller and an echo thread; fills
 * `samples_ns` (length `messages`) after `warmup` unmeasured ones. */
int64_t ls_bench_ping_floor(int64_t messages, int64_t warmup, int32_t size, int64_t *samples_ns);

#endif
