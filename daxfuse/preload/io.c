/*
 * No read or write file operations: dax_fops has neither, so the kernel
 * answers EINVAL (`daxfuse exec --read-write` lets them through).
 */
#include "preload.h"

#include <errno.h>
#include <sys/uio.h>

static int refuse_io(int fd)
{
	if (cfg.rw || fd_kind(fd) != FD_DAX)
		return 0;
	errno = EINVAL;
	return 1;
}

#define IO_WRAPPER(ret, name, params, args)                      \
	static ret (*REAL(name)) params;                        \
	ret name params                                          \
	{                                                        \
		if (refuse_io(fd))                               \
			return -1;                               \
		RESOLVE(name);                                   \
		return REAL(name) args;                          \
	}
IO_WRAPPER(ssize_t, read, (int fd, void *buf, size_t n), (fd, buf, n))
IO_WRAPPER(ssize_t, write, (int fd, const void *buf, size_t n), (fd, buf, n))
IO_WRAPPER(ssize_t, pread, (int fd, void *buf, size_t n, off_t off), (fd, buf, n, off))
IO_WRAPPER(ssize_t, pread64, (int fd, void *buf, size_t n, off64_t off), (fd, buf, n, off))
IO_WRAPPER(ssize_t, pwrite, (int fd, const void *buf, size_t n, off_t off), (fd, buf, n, off))
IO_WRAPPER(ssize_t, pwrite64, (int fd, const void *buf, size_t n, off64_t off), (fd, buf, n, off))
IO_WRAPPER(ssize_t, readv, (int fd, const struct iovec *v, int n), (fd, v, n))
IO_WRAPPER(ssize_t, writev, (int fd, const struct iovec *v, int n), (fd, v, n))
IO_WRAPPER(ssize_t, preadv, (int fd, const struct iovec *v, int n, off_t off), (fd, v, n, off))
IO_WRAPPER(ssize_t, preadv64, (int fd, const struct iovec *v, int n, off64_t off), (fd, v, n, off))
IO_WRAPPER(ssize_t, pwritev, (int fd, const struct iovec *v, int n, off_t off), (fd, v, n, off))
IO_WRAPPER(ssize_t, pwritev64, (int fd, const struct iovec *v, int n, off64_t off), (fd, v, n, off))
IO_WRAPPER(ssize_t, preadv2, (int fd, const struct iovec *v, int n, off_t off, int fl), (fd, v, n, off, fl))
IO_WRAPPER(ssize_t, pwritev2, (int fd, const struct iovec *v, int n, off_t off, int fl), (fd, v, n, off, fl))
IO_WRAPPER(ssize_t, __read_chk, (int fd, void *buf, size_t n, size_t len), (fd, buf, n, len))
IO_WRAPPER(ssize_t, __pread_chk, (int fd, void *buf, size_t n, off_t off, size_t len), (fd, buf, n, off, len))
IO_WRAPPER(ssize_t, __pread64_chk, (int fd, void *buf, size_t n, off64_t off, size_t len), (fd, buf, n, off, len))
