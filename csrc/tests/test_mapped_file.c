/* ls_map_file: a shared mapping outlives its fd (closed at once) and writes reach the file;
 * a private one never changes it; failures say why (errno kept). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lockstep.h"
#include "ls_test.h"

#define LENGTH 8192

static int temp_file(char *path)
{
    const int fd = mkstemp(path);
    LS_CHECK(fd >= 0);
    LS_CHECK(0 == ftruncate(fd, LENGTH));
    return fd;
}

static void test_shared_mapping_outlives_its_fd(void)
{
    char path[] = "/tmp/ls_mapped_file_XXXXXX";
    int fd = temp_file(path);
    uint8_t *shared = ls_map_file(fd, LENGTH, true, true);
    LS_CHECK(NULL != shared);
    LS_CHECK(0 == close(fd));
    shared[LENGTH - 1] = 42; /* after the close */
    LS_CHECK(0 == ls_unmap_file(shared, LENGTH));

    fd = open(path, O_RDWR);
    uint8_t byte = 0;
    LS_CHECK(1 == pread(fd, &byte, 1, LENGTH - 1) && 42 == byte);
    uint8_t *private_view = ls_map_file(fd, LENGTH, false, false);
    LS_CHECK(NULL != private_view && 42 == private_view[LENGTH - 1]);
    private_view[LENGTH - 1] = 7; /* copy-on-write: the file keeps 42 */
    LS_CHECK(1 == pread(fd, &byte, 1, LENGTH - 1) && 42 == byte);
    LS_CHECK(0 == ls_unmap_file(private_view, LENGTH));
    LS_CHECK(0 == close(fd));
    LS_CHECK(0 == unlink(path));
}

static void test_read_only_fd_cannot_be_mapped_shared_writable(void)
{
    char path[] = "/tmp/ls_mapped_file_XXXXXX";
    LS_CHECK(0 == close(temp_file(path)));
    const int fd = open(path, O_RDONLY);
    LS_CHECK(NULL == ls_map_file(fd, LENGTH, true, false));
    LS_CHECK(LS_ESYS == ls_errcode() && EACCES == ls_errno());
    LS_CHECK(NULL != strstr(ls_errmsg(), "mmap of 8192 bytes: "));
    LS_CHECK(0 == close(fd));
    LS_CHECK(0 == unlink(path));
}

static void test_fill_holes_keeps_the_data(void)
{
    char path[] = "/tmp/ls_mapped_file_XXXXXX";
    const int fd = temp_file(path); /* all hole */
    LS_CHECK(1 == pwrite(fd, "z", 1, 100));
    struct stat before;
    LS_CHECK(0 == fstat(fd, &before));
    const int result = ls_fill_holes(fd, LENGTH);
    LS_CHECK(0 == result || 1 == result);
    struct stat after;
    LS_CHECK(0 == fstat(fd, &after));
    LS_CHECK(1 == result || (int64_t)after.st_blocks * 512 >= LENGTH);
    LS_CHECK(after.st_size == LENGTH);
    char byte = 0;
    LS_CHECK(1 == pread(fd, &byte, 1, 100) && 'z' == byte);
    LS_CHECK(0 == close(fd));
    LS_CHECK(0 == unlink(path));
}

int main(void)
{
    LS_RUN(test_fill_holes_keeps_the_data);
    LS_RUN(test_shared_mapping_outlives_its_fd);
    LS_RUN(test_read_only_fd_cannot_be_mapped_shared_writable);
    return LS_TEST_RESULT();
}
