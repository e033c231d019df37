/* ls_wake: what one doorbell wake-up costs between two processes, the yardstick of a halt's
 * latency (`lockstep bench halt`): a sleeper in ls_doorbell_wait, woken by ls_doorbell_ring
 * after a gap, on another CPU than the waker's (as a woken gateway runs while its sender goes
 * on), on the same one, or where the scheduler puts it. On a VM the first is a virtual IPI to
 * a halted vCPU, the others mostly a context switch: a blocking round trip (`lockstep bench
 * ping --idle block`, two wake-ups) is made of the cheap kind.
 *
 *   ls_wake [--messages N] [--gap-us N] [--cpus across|same|any] [--json]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_setaffinity, CPU_SET */
#endif
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "concurrent/doorbell.h"

static const char *const USAGE =
    "usage: ls_wake [--messages N] [--gap-us N] [--cpus across|same|any] [--json]\n"
    "\n"
    "One doorbell wake-up between two processes (fork): the parent sleeps --gap-us, then rings;\n"
    "the child, asleep in ls_doorbell_wait, records ring -> awake. Prints p50 p90 p99 max in ns.\n"
    "\n"
    "  --messages N  wake-ups measured (default 2000)\n"
    "  --gap-us N    the sleep between them (default 200: the sleeper's vCPU halts meanwhile)\n"
    "  --cpus        across: the two pinned to CPUs 0 and 1 (default); same: both on CPU 0;\n"
    "                any: where the scheduler puts them\n"
    "  --json        one JSON object instead of the human line\n";

#define WAKE_MAX 1000000

typedef struct
{
    _Alignas(64) int32_t flag;      /* the doorbell's words, each on its own cache line */
    _Alignas(64) int32_t sequence;
    _Alignas(64) int32_t ready;     /* the probe: > 0 while a ring is pending */
    _Alignas(64) int64_t sent_ns;
    _Atomic int64_t acked;          /* wake-ups the child has recorded */
    int64_t latency_ns[];
} wake_shm_t;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (0 != sched_setaffinity(0, sizeof(set), &set))
    {
        fprintf(stderr, "ls_wake: sched_setaffinity(CPU %d): %s\n", cpu, strerror(errno));
        exit(1);
    }
}

static int compare_i64(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t percentile(const int64_t *sorted, int64_t n, double p)
{
    int64_t rank = (int64_t)(p * (double)n + 0.999999);
    return sorted[(rank < 1 ? 1 : rank > n ? n : rank) - 1];
}

static void sleeper(wake_shm_t *shm, int64_t messages)
{
    ls_doorbell_t bell = { (uint8_t *)&shm->flag, (uint8_t *)&shm->sequence, (const uint8_t *)&shm->ready };
    for (int64_t i = 0; i < messages; i++)
    {
        while (atomic_load_explicit((_Atomic int32_t *)&shm->ready, memory_order_acquire) <= 0)
        {
            if (ls_doorbell_wait(&bell, 1, 1000000000LL) < 0)
            {
                _exit(1);
            }
        }
        shm->latency_ns[i] = now_ns() - shm->sent_ns;
        atomic_store_explicit((_Atomic int32_t *)&shm->ready, 0, memory_order_relaxed);
        atomic_store_explicit(&shm->acked, i + 1, memory_order_release);
    }
    _exit(0);
}

static bool parse_int(const char *text, int64_t min, int64_t max, int64_t *value)
{
    char *end;
    errno = 0;
    const long long v = NULL == text ? 0 : strtoll(text, &end, 10);
    if (NULL == text || '\0' == *text || 0 != errno || '\0' != *end || v < min || v > max)
    {
        return false;
    }
    *value = v;
    return true;
}

int main(int argc, char **argv)
{
    int64_t messages = 2000, gap_us = 200;
    const char *cpus = "across";
    bool json = false;
    for (int i = 1; i < argc; i++)
    {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (0 == strcmp(arg, "--help") || 0 == strcmp(arg, "-h"))
        {
            fputs(USAGE, stdout);
            return 0;
        }
        if (0 == strcmp(arg, "--json"))
        {
            json = true;
        }
        else if (0 == strcmp(arg, "--messages") && parse_int(value, 1, WAKE_MAX, &messages))
        {
            i++;
        }
        else if (0 == strcmp(arg, "--gap-us") && parse_int(value, 0, 1000000, &gap_us))
        {
            i++;
        }
        else if (0 == strcmp(arg, "--cpus") && NULL != value &&
                 (0 == strcmp(value, "across") || 0 == strcmp(value, "same") || 0 == strcmp(value, "any")))
        {
            cpus = argv[++i];
        }
        else
        {
            fprintf(stderr, "ls_wake: bad argument '%s'%s%s (--messages 1..%d, --gap-us 0..1000000, "
                            "--cpus across|same|any; try --help)\n", arg, NULL == value ? "" : " ",
                    NULL == value ? "" : value, WAKE_MAX);
            return 2;
        }
    }
    const bool across = 0 == strcmp(cpus, "across"), same = 0 == strcmp(cpus, "same");
    if (across && sysconf(_SC_NPROCESSORS_ONLN) < 2)
    {
        fprintf(stderr, "ls_wake: --cpus across needs two CPUs\n");
        return 2;
    }
    const size_t size = sizeof(wake_shm_t) + (size_t)messages * sizeof(int64_t);
    wake_shm_t *shm = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (MAP_FAILED == shm)
    {
        perror("ls_wake: mmap");
        return 1;
    }
    const pid_t child = fork();
    if (child < 0)
    {
        perror("ls_wake: fork");
        return 1;
    }
    if (0 == child)
    {
        if (across || same)
        {
            pin(across ? 1 : 0);
        }
        sleeper(shm, messages);
    }
    if (across || same)
    {
        pin(0);
    }
    const struct timespec gap = { .tv_sec = (time_t)(gap_us / 1000000), .tv_nsec = (long)(gap_us % 1000000) * 1000 };
    const struct timespec poll = { .tv_sec = 0, .tv_nsec = 10000 };
    for (int64_t i = 0; i < messages; i++)
    {
        nanosleep(&gap, NULL);
        const int64_t deadline = now_ns() + 10LL * 1000000000LL;
        while (atomic_load_explicit(&shm->acked, memory_order_acquire) < i) /* the last one recorded */
        {
            if (now_ns() > deadline || 0 != waitpid(child, NULL, WNOHANG))
            {
                fprintf(stderr, "ls_wake: the sleeper stopped after %" PRId64 " wake-ups\n", i);
                kill(child, SIGKILL);
                return 1;
            }
            nanosleep(&poll, NULL);
        }
        shm->sent_ns = now_ns();
        atomic_store_explicit((_Atomic int32_t *)&shm->ready, 1, memory_order_release);
        ls_doorbell_ring((uint8_t *)&shm->flag, (uint8_t *)&shm->sequence);
    }
    int status = 0;
    if (child != waitpid(child, &status, 0) || !WIFEXITED(status) || 0 != WEXITSTATUS(status))
    {
        fprintf(stderr, "ls_wake: the sleeper failed\n");
        return 1;
    }
    qsort(shm->latency_ns, (size_t)messages, sizeof(int64_t), compare_i64);
    const int64_t *l = shm->latency_ns;
    if (json)
    {
        printf("{\"messages\": %" PRId64 ", \"gap_us\": %" PRId64 ", \"cpus\": \"%s\", \"p50_ns\": %" PRId64
               ", \"p90_ns\": %" PRId64 ", \"p99_ns\": %" PRId64 ", \"max_ns\": %" PRId64 "}\n",
               messages, gap_us, cpus, percentile(l, messages, 0.5), percentile(l, messages, 0.9),
               percentile(l, messages, 0.99), l[messages - 1]);
    }
    else
    {
        printf("wake-up (%s, gap %" PRId64 " us, %" PRId64 "): p50 %.1f us  p90 %.1f us  p99 %.1f us  max %.1f us\n",
               cpus, gap_us, messages, percentile(l, messages, 0.5) / 1e3, percentile(l, messages, 0.9) / 1e3,
               percentile(l, messages, 0.99) / 1e3, l[messages - 1] / 1e3);
    }
    return 0;
}
