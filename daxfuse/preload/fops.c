/*
 * The rest of dax_fops: what the kernel answers for a device's file calls
 * other than read, write and mmap (io.c, mappings.c). dax_fops has no
 * llseek of its own (noop_llseek), no fsync, fallocate, splice or ioctl,
 * and the file is a character device on devtmpfs; the FUSE file behind it
 * would answer each differently.
 */
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define TMPFS_MAGIC 0x01021994  /* devtmpfs is a tmpfs */

static int fail(int err)
{
	errno = err;
	return -1;
}

/* A call on an fd that a device answers with err (a call on anything else
 * is the kernel's own). */
#define REFUSE_WRAPPER(ret, name, params, args, err)            \
	static ret (*REAL(name)) params;                        \
	ret name params                                          \
	{                                                        \
		if (fd_kind(fd) == FD_DAX)                       \
			return fail(err);                        \
		RESOLVE(name);                                   \
		return REAL(name) args;                          \
	}
REFUSE_WRAPPER(int, fsync, (int fd), (fd), EINVAL)                 /* no .fsync */
REFUSE_WRAPPER(int, fdatasync, (int fd), (fd), EINVAL)
REFUSE_WRAPPER(int, syncfs, (int fd), (fd), EINVAL)
REFUSE_WRAPPER(int, sync_file_range, (int fd, off64_t off, off64_t n, unsigned int fl), (fd, off, n, fl), ESPIPE)
REFUSE_WRAPPER(int, ftruncate, (int fd, off_t len), (fd, len), EINVAL)  /* not a regular file */
REFUSE_WRAPPER(int, ftruncate64, (int fd, off64_t len), (fd, len), EINVAL)

/* A call between two fds, refused (EINVAL) where either is a device: no
 * splice_read or splice_write, and no regular file to copy. */
#define PAIR_WRAPPER(ret, name, params, args)                            \
	static ret (*REAL(name)) params;                                 \
	ret name params                                                  \
	{                                                                \
		if (fd_kind(in) == FD_DAX || fd_kind(out) == FD_DAX)     \
			return fail(EINVAL);                             \
		RESOLVE(name);                                           \
		return REAL(name) args;                                  \
	}
PAIR_WRAPPER(ssize_t, sendfile, (int out, int in, off_t *off, size_t n), (out, in, off, n))
PAIR_WRAPPER(ssize_t, sendfile64, (int out, int in, off64_t *off, size_t n), (out, in, off, n))
PAIR_WRAPPER(ssize_t, splice, (int in, loff_t *in_off, int out, loff_t *out_off, size_t n, unsigned int fl),
	     (in, in_off, out, out_off, n, fl))
PAIR_WRAPPER(ssize_t, copy_file_range, (int in, loff_t *in_off, int out, loff_t *out_off, size_t n, unsigned int fl),
	     (in, in_off, out, out_off, n, fl))

/* noop_llseek: the position stays, and is the answer, whatever asked. */
#define LSEEK_WRAPPER(name, off_type)                                     \
	static off_type (*REAL(name))(int, off_type, int);                \
	off_type name(int fd, off_type off, int whence)                   \
	{                                                                 \
		RESOLVE(name);                                            \
		if (fd_kind(fd) == FD_DAX)                                \
			return REAL(name)(fd, 0, SEEK_CUR);               \
		return REAL(name)(fd, off, whence);                       \
	}
LSEEK_WRAPPER(lseek, off_t)
LSEEK_WRAPPER(lseek64, off64_t)

/* vfs_fallocate: a bad range, then a file not open for writing, then
 * ENODEV for what is neither a regular file nor a block device. */
static int fallocate_answer(int fd, off64_t off, off64_t len)
{
	if (off < 0 || len <= 0)
		return EINVAL;
	if ((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY)
		return EBADF;
	return ENODEV;
}

#define FALLOCATE_WRAPPER(name, off_type)                                         \
	static int (*REAL(name))(int, int, off_type, off_type);                   \
	int name(int fd, int mode, off_type off, off_type len)                    \
	{                                                                         \
		if (fd_kind(fd) == FD_DAX)                                        \
			return fail(fallocate_answer(fd, off, len));              \
		RESOLVE(name);                                                    \
		return REAL(name)(fd, mode, off, len);                            \
	}
FALLOCATE_WRAPPER(fallocate, off_t)
FALLOCATE_WRAPPER(fallocate64, off64_t)

/* posix_fallocate answers the errno itself. */
#define POSIX_FALLOCATE_WRAPPER(name, off_type)                            \
	static int (*REAL(name))(int, off_type, off_type);                 \
	int name(int fd, off_type off, off_type len)                       \
	{                                                                  \
		if (fd_kind(fd) == FD_DAX)                                 \
			return fallocate_answer(fd, off, len);             \
		RESOLVE(name);                                             \
		return REAL(name)(fd, off, len);                           \
	}
POSIX_FALLOCATE_WRAPPER(posix_fallocate, off_t)
POSIX_FALLOCATE_WRAPPER(posix_fallocate64, off64_t)

/* truncate(2) of a path: EINVAL for what is not a regular file. */
#define TRUNCATE_WRAPPER(name, off_type)                                   \
	static int (*REAL(name))(const char *, off_type);                  \
	int name(const char *path, off_type len)                           \
	{                                                                  \
		if (path_kind(path) == FD_DAX)                             \
			return fail(EINVAL);                               \
		RESOLVE(name);                                             \
		return REAL(name)(path, len);                              \
	}
TRUNCATE_WRAPPER(truncate, off_t)
TRUNCATE_WRAPPER(truncate64, off64_t)

/* The statfs family, by fd or by path: a device is on devtmpfs, a tmpfs,
 * which exec keeps at /dev/.host; statfs gives its type, statvfs has none. */
#define DEVTMPFS "/dev/.host"
#define TMPFS_TYPE(out) ((out)->f_type = TMPFS_MAGIC)
#define NO_TYPE(out) ((void)(out))
#define STATFS_WRAPPER(name, arg_t, kind_of, out_t, by_path, set_type)          \
	static int (*REAL(name))(arg_t, out_t *);                               \
	int name(arg_t arg, out_t *out)                                         \
	{                                                                       \
		static int (*host)(const char *, out_t *);                      \
		if (kind_of(arg) == FD_DAX) {                                   \
			if (!host)                                              \
				host = dlsym(RTLD_NEXT, #by_path);              \
			if (host(DEVTMPFS, out) != 0)                           \
				return -1;                                      \
			set_type(out);                                          \
			return 0;                                               \
		}                                                               \
		RESOLVE(name);                                                  \
		return REAL(name)(arg, out);                                    \
	}
STATFS_WRAPPER(fstatfs, int, fd_kind, struct statfs, statfs, TMPFS_TYPE)
STATFS_WRAPPER(fstatfs64, int, fd_kind, struct statfs64, statfs64, TMPFS_TYPE)
STATFS_WRAPPER(statfs, const char *, path_kind, struct statfs, statfs, TMPFS_TYPE)
STATFS_WRAPPER(statfs64, const char *, path_kind, struct statfs64, statfs64, TMPFS_TYPE)
STATFS_WRAPPER(fstatvfs, int, fd_kind, struct statvfs, statvfs, NO_TYPE)
STATFS_WRAPPER(fstatvfs64, int, fd_kind, struct statvfs64, statvfs64, NO_TYPE)
STATFS_WRAPPER(statvfs, const char *, path_kind, struct statvfs, statvfs, NO_TYPE)
STATFS_WRAPPER(statvfs64, const char *, path_kind, struct statvfs64, statvfs64, NO_TYPE)

/* do_vfs_ioctl's generic requests work on any file; dax_fops has no
 * unlocked_ioctl, so every other request is ENOTTY. /dev/ndctl0's and
 * /dev/nmem0's go to the daemon (ndctl.c), as /dev/cxl/memN's (cxl.c). */
DECLARE(int, ioctl, int, unsigned long, ...);

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;
	int kind;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	RESOLVE(ioctl);
	kind = fd_kind(fd);
	if (kind == FD_NDCTL || kind == FD_NMEM)  /* libndctl passes an int: compare the low 32 bits */
		return ndctl_ioctl(fd, kind, (unsigned int)request, arg);
	if (kind == FD_CXL)
		return cxl_ioctl(fd, (unsigned int)request, arg);
	if (kind == FD_DAX && request != FIOCLEX && request != FIONCLEX && request != FIONBIO && request != FIOASYNC)
		return fail(ENOTTY);
	return REAL(ioctl)(fd, request, arg);
}
