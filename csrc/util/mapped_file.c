#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>

#include "util/ls_error.h"
#include "util/mapped_file.h"

void *ls_map_file(int fd, size_t length, bool shared, bool populate)
{
    if (fd < 0 || 0 == length)
    {
        LS_SET_ERR(LS_EINVAL, "map file: expected an open fd and a length > 0, found fd %d length %zu", fd, length);
        return NULL;
    }
    int flags = shared ? MAP_SHARED : MAP_PRIVATE;
#ifdef MAP_POPULATE
    if (populate)
    {
        flags |= MAP_POPULATE;
    }
#else
    (void)populate;
#endif
    void *address = mmap(NULL, length, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (MAP_FAILED == address)
    {
        LS_SET_ERRNO(errno, "mmap of %zu bytes", length);
        return NULL;
    }
    return address;
}

int ls_unmap_file(void *address, size_t length)
{
    if (0 != munmap(address, length))
    {
        LS_SET_ERRNO(errno, "munmap of %zu bytes", length);
        return -1;
    }
    return 0;
}

int ls_fill_holes(int fd, int64_t length)
{
    if (fd < 0 || length <= 0)
    {
        LS_SET_ERR(LS_EINVAL, "fill holes: expected an open fd and a length > 0, found fd %d length %lld", fd,
                   (long long)length);
        return -1;
    }
#ifdef __linux__
    if (0 == fallocate(fd, 0, 0, (off_t)length))
    {
        return 0;
    }
    if (EOPNOTSUPP == errno || ENOSYS == errno)
    {
        return 1;
    }
    LS_SET_ERRNO(errno, "fallocate of %lld bytes", (long long)length);
    return -1;
#else
    return 1;
#endif
}
