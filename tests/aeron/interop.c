/* Interop peer for lockstep's Aeron client tests: the real Aeron C client (aeronc.h, built from
 * the same pyaeron sdist as the driver) publishing or subscribing a known message sequence.
 *
 *   interop pub DIR CHANNEL STREAM COUNT   publish messages 0..COUNT-1, then wait for stdin EOF
 *   interop sub DIR CHANNEL STREAM COUNT   receive COUNT whole messages, check each, print "ok N"
 *
 * Message i is LENGTHS[i % 8] bytes, byte j = (i * 31 + j) & 0xFF: a message that arrives
 * twice, out of order, cut short or corrupted fails the check (the Python side uses the same
 * rule, tests/aeron/harness.py). Both sides back off with short sleeps when idle. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aeronc.h"

static const size_t LENGTHS[8] = { 8, 100, 1376, 1377, 4000, 8192, 33, 1 };

static size_t message_length(int64_t i)
{
    return LENGTHS[i % 8];
}

static void fill_message(uint8_t *buffer, int64_t i)
{
    const size_t length = message_length(i);
    for (size_t j = 0; j < length; j++)
    {
        buffer[j] = (uint8_t)((i * 31 + (int64_t)j) & 0xFF);
    }
}

/* Back off when there is nothing to do: 50 short sleeps (10 us), then 1 ms ones. */
static void idle(int *count)
{
    struct timespec ts = { 0, *count < 50 ? 10000 : 1000000 };
    if (*count < 50)
    {
        (*count)++;
    }
    nanosleep(&ts, NULL);
}

static aeron_t *connect_client(const char *dir, aeron_context_t **context)
{
    aeron_t *client = NULL;
    if (aeron_context_init(context) < 0 || aeron_context_set_dir(*context, dir) < 0 ||
        aeron_init(&client, *context) < 0 || aeron_start(client) < 0)
    {
        fprintf(stderr, "interop: connect to %s: %s\n", dir, aeron_errmsg());
        exit(2);
    }
    return client;
}

static int publish(const char *dir, const char *channel, int32_t stream_id, int64_t count)
{
    aeron_context_t *context = NULL;
    aeron_t *client = connect_client(dir, &context);
    aeron_async_add_publication_t *async = NULL;
    aeron_publication_t *publication = NULL;
    if (aeron_async_add_publication(&async, client, channel, stream_id) < 0)
    {
        fprintf(stderr, "interop: add publication: %s\n", aeron_errmsg());
        return 2;
    }
    int idles = 0;
    int rc;
    while (0 == (rc = aeron_async_add_publication_poll(&publication, async)))
    {
        idle(&idles);
    }
    if (rc < 0)
    {
        fprintf(stderr, "interop: add publication: %s\n", aeron_errmsg());
        return 2;
    }
    printf("ready\n");
    fflush(stdout);

    uint8_t *buffer = malloc(8192);
    if (NULL == buffer)
    {
        return 2;
    }
    for (int64_t i = 0; i < count; i++)
    {
        fill_message(buffer, i);
        idles = 0;
        int64_t result;
        while ((result = aeron_publication_offer(publication, buffer, message_length(i), NULL, NULL)) < 0)
        {
            if (AERON_PUBLICATION_CLOSED == result || AERON_PUBLICATION_MAX_POSITION_EXCEEDED == result ||
                AERON_PUBLICATION_ERROR == result)
            {
                fprintf(stderr, "interop: offer %" PRId64 ": %" PRId64 " %s\n", i, result, aeron_errmsg());
                return 1;
            }
            idle(&idles); /* NOT_CONNECTED, BACK_PRESSURED, ADMIN_ACTION: try again */
        }
    }
    printf("sent %" PRId64 "\n", count);
    fflush(stdout);
    char sink[64];
    while (read(STDIN_FILENO, sink, sizeof(sink)) > 0)
    {
    }
    free(buffer);
    aeron_publication_close(publication, NULL, NULL);
    aeron_close(client);
    aeron_context_close(context);
    return 0;
}

struct receiver
{
    int64_t next;
    int64_t count;
    bool failed;
    uint8_t *expected;
};

static void on_message(void *clientd, const uint8_t *buffer, size_t length, aeron_header_t *header)
{
    struct receiver *r = clientd;
    (void)header;
    if (r->failed || r->next >= r->count)
    {
        r->failed = r->failed || r->next >= r->count;
        return;
    }
    fill_message(r->expected, r->next);
    if (length != message_length(r->next) || 0 != memcmp(buffer, r->expected, length))
    {
        fprintf(stderr, "interop: message %" PRId64 ": length %zu (expected %zu) or contents differ\n",
            r->next, length, message_length(r->next));
        r->failed = true;
        return;
    }
    r->next++;
}

static int subscribe(const char *dir, const char *channel, int32_t stream_id, int64_t count)
{
    aeron_context_t *context = NULL;
    aeron_t *client = connect_client(dir, &context);
    aeron_async_add_subscription_t *async = NULL;
    aeron_subscription_t *subscription = NULL;
    if (aeron_async_add_subscription(&async, client, channel, stream_id, NULL, NULL, NULL, NULL) < 0)
    {
        fprintf(stderr, "interop: add subscription: %s\n", aeron_errmsg());
        return 2;
    }
    int idles = 0;
    int rc;
    while (0 == (rc = aeron_async_add_subscription_poll(&subscription, async)))
    {
        idle(&idles);
    }
    if (rc < 0)
    {
        fprintf(stderr, "interop: add subscription: %s\n", aeron_errmsg());
        return 2;
    }
    printf("ready\n");
    fflush(stdout);

    struct receiver r = { 0, count, false, malloc(8192) };
    aeron_fragment_assembler_t *assembler = NULL;
    if (NULL == r.expected || aeron_fragment_assembler_create(&assembler, on_message, &r) < 0)
    {
        fprintf(stderr, "interop: fragment assembler: %s\n", aeron_errmsg());
        return 2;
    }
    idles = 0;
    while (r.next < count && !r.failed)
    {
        const int fragments = aeron_subscription_poll(subscription, aeron_fragment_assembler_handler, assembler, 10);
        if (fragments < 0)
        {
            fprintf(stderr, "interop: poll: %s\n", aeron_errmsg());
            return 2;
        }
        if (0 == fragments)
        {
            idle(&idles);
        }
        else
        {
            idles = 0;
        }
    }
    if (r.failed)
    {
        return 1;
    }
    printf("ok %" PRId64 "\n", r.next);
    fflush(stdout);
    aeron_fragment_assembler_delete(assembler);
    free(r.expected);
    aeron_subscription_close(subscription, NULL, NULL);
    aeron_close(client);
    aeron_context_close(context);
    return 0;
}

int main(int argc, char **argv)
{
    if (6 != argc)
    {
        fprintf(stderr, "usage: %s pub|sub DIR CHANNEL STREAM COUNT\n", argv[0]);
        return 2;
    }
    const int32_t stream_id = (int32_t)strtol(argv[4], NULL, 10);
    const int64_t count = strtoll(argv[5], NULL, 10);
    if (0 == strcmp(argv[1], "pub"))
    {
        return publish(argv[2], argv[3], stream_id, count);
    }
    if (0 == strcmp(argv[1], "sub"))
    {
        return subscribe(argv[2], argv[3], stream_id, count);
    }
    fprintf(stderr, "%s: unknown mode %s\n", argv[0], argv[1]);
    return 2;
}
