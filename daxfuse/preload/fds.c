/*
 * Which fds are devices. A byte per fd below FD_TRACK, noted where libc
 * opens, duplicates and closes them: read and write are on every program's
 * hot path, so they look it up instead of asking the kernel. An fd may
 * still change behind the library's back (a raw close, close_range), so a
 * device seen here is confirmed with fstat before the library acts on it.
 */
#include "preload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <linux/close_range.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define FD_TRACK 65536
static unsigned char kinds[FD_TRACK];

DECLARE(int, fstat64, int, struct stat64 *);
DECLARE(int, close, int);
DECLARE(int, fcntl, int, int, ...);
DECLARE(int, fcntl64, int, int, ...);

/* A device's minor from what the real stat found, or -1: a regular file
 * of the mount numbered at or past ino_base (ino = ino_base + minor). */
static long dev_minor(dev_t dev, ino_t ino, mode_t mode)
{
	if (!cfg.active || dev != cfg.mnt_dev || !S_ISREG(mode) || ino < cfg.ino_base)
		return -1;
	return (long)(ino - cfg.ino_base);
}

/* Which of the buses' nodes a file of the mount is (FD_NDCTL, FD_NMEM,
 * FD_CXL: a /dev/cxl/memN), or FD_OTHER. */
static int bus_node(dev_t dev, ino_t ino, mode_t mode)
{
	int kind;

	if (!cfg.active || dev != cfg.mnt_dev || !S_ISREG(mode))
		return FD_OTHER;
	for (kind = FD_NDCTL; kind <= FD_NMEM; kind++)
		if (ino == cfg.bus_nodes[kind - FD_NDCTL].ino)
			return kind;
	if (ino >= cfg.cxl_ino_base && ino - cfg.cxl_ino_base < CXL_MEMDEVS)
		return FD_CXL;
	return FD_OTHER;
}

/* The device number a file of the mount stands for, or 0 for none. */
dev_t chardev_of(dev_t dev, ino_t ino, mode_t mode)
{
	long minor = dev_minor(dev, ino, mode);
	int kind;

	if (minor >= 0)
		return makedev(cfg.major, minor);
	kind = bus_node(dev, ino, mode);
	if (kind == FD_CXL)
		return makedev(cfg.cxl_major, ino - cfg.cxl_ino_base);
	if (kind != FD_OTHER)
		return makedev(cfg.bus_nodes[kind - FD_NDCTL].major, cfg.bus_nodes[kind - FD_NDCTL].minor);
	return 0;
}

/* fd's file system, inode number and type, from what the kernel holds:
 * they never change for an open file, and a FUSE file's times, which a
 * read makes stale, would otherwise cost the daemon a GETATTR (daxctl
 * opens four sysfs attributes per device). fstat where statx is refused
 * (seccomp filters of older container runtimes). */
static int identity(int fd, dev_t *dev, ino_t *ino, mode_t *mode)
{
	struct statx stx;
	struct stat64 st;

	if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, &stx) == 0) {
		*dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
		*ino = stx.stx_ino;
		*mode = stx.stx_mode;
		return 0;
	}
	RESOLVE(fstat64);
	if (errno == EBADF || REAL(fstat64)(fd, &st) != 0)
		return -1;
	*dev = st.st_dev;
	*ino = st.st_ino;
	*mode = st.st_mode;
	return 0;
}

/* What fd is, asking the kernel. An O_PATH fd is no device to read, write
 * or map: the kernel answers EBADF to those itself. */
static int kind_now(int fd, long *minor)
{
	dev_t dev;
	ino_t ino;
	mode_t mode;

	RESOLVE(fcntl);
	if (!cfg.active || identity(fd, &dev, &ino, &mode) != 0 || (REAL(fcntl)(fd, F_GETFL) & O_PATH))
		return FD_OTHER;
	*minor = dev_minor(dev, ino, mode);
	if (*minor >= 0)
		return FD_DAX;
	return bus_node(dev, ino, mode);
}

static void note(int fd)
{
	long minor;

	if (fd >= 0 && fd < FD_TRACK)
		__atomic_store_n(&kinds[fd], kind_now(fd, &minor), __ATOMIC_RELAXED);
}

static void forget(int fd)
{
	if (fd >= 0 && fd < FD_TRACK)
		__atomic_store_n(&kinds[fd], FD_OTHER, __ATOMIC_RELAXED);
}

/* What fd is: a device only if the kernel still says so. */
int fd_kind(int fd)
{
	long minor;
	int kind;

	if (!cfg.active || fd < 0)
		return FD_OTHER;
	if (fd < FD_TRACK && __atomic_load_n(&kinds[fd], __ATOMIC_RELAXED) == FD_OTHER)
		return FD_OTHER;
	kind = kind_now(fd, &minor);
	if (fd < FD_TRACK && kind == FD_OTHER)
		forget(fd);  /* closed behind libc's back, and the number reused */
	return kind;
}

/* What the file at path is (dirfd and AT_ flags as fstatat's), from what
 * the kernel holds, following links as open does. */
static int path_kind_at(int dirfd, const char *path, int flags)
{
	struct statx stx;
	dev_t dev;
	long minor;

	if (!cfg.active || syscall(SYS_statx, dirfd, path, flags | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, &stx))
		return FD_OTHER;
	dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
	minor = dev_minor(dev, stx.stx_ino, stx.stx_mode);
	if (minor >= 0)
		return FD_DAX;
	return bus_node(dev, stx.stx_ino, stx.stx_mode);
}

int path_kind(const char *path)
{
	return path_kind_at(AT_FDCWD, path, 0);
}

/* An open with O_TRUNC that the FUSE file behind a device refused (EINVAL):
 * on a character device the kernel ignores O_TRUNC, so it is opened
 * without. */
static int untruncated(int fd, int flags, int dirfd, const char *path)
{
	return fd < 0 && errno == EINVAL && (flags & O_TRUNC) &&
	       path_kind_at(dirfd, path, (flags & O_NOFOLLOW) ? AT_SYMLINK_NOFOLLOW : 0) == FD_DAX;
}

/* The minor of the device fd is, or -1. */
long fd_minor(int fd)
{
	long minor = -1;

	return kind_now(fd, &minor) == FD_DAX ? minor : -1;
}

/* The fds inherited across exec: those /proc/self/fd lists (not a
 * thousand fstat calls at every start). */
void fds_init(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
			note(atoi(e->d_name));
	closedir(d);
}

/* --- opening, duplicating, closing ----------------------------------------- */

/* open's mode argument is there only with O_CREAT or O_TMPFILE. */
#define MODE_ARG(flags, mode)                                    \
	do {                                                     \
		if ((flags) & (O_CREAT | O_TMPFILE)) {           \
			va_list ap;                              \
			va_start(ap, flags);                     \
			mode = va_arg(ap, mode_t);               \
			va_end(ap);                              \
		}                                                \
	} while (0)

#define OPEN_WRAPPER(name)                                       \
	DECLARE(int, name, const char *, int, ...);              \
	int name(const char *path, int flags, ...)               \
	{                                                        \
		mode_t mode = 0;                                 \
		MODE_ARG(flags, mode);                           \
		RESOLVE(name);                                   \
		int fd = REAL(name)(path, flags, mode);          \
		if (untruncated(fd, flags, AT_FDCWD, path))      \
			fd = REAL(name)(path, flags & ~O_TRUNC, mode); \
		note(fd);                                        \
		return fd;                                       \
	}
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(name)                                             \
	DECLARE(int, name, int, const char *, int, ...);                 \
	int name(int dirfd, const char *path, int flags, ...)            \
	{                                                                \
		mode_t mode = 0;                                         \
		MODE_ARG(flags, mode);                                   \
		RESOLVE(name);                                           \
		int fd = REAL(name)(dirfd, path, flags, mode);           \
		if (untruncated(fd, flags, dirfd, path))                 \
			fd = REAL(name)(dirfd, path, flags & ~O_TRUNC, mode); \
		note(fd);                                                \
		return fd;                                               \
	}
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

/* A call whose result is a new fd (or -1): note what it is. */
#define NEW_FD_WRAPPER(name, params, args)                       \
	static int (*REAL(name)) params;                         \
	int name params                                          \
	{                                                        \
		RESOLVE(name);                                   \
		int made = REAL(name) args;                      \
		note(made);                                      \
		return made;                                     \
	}
NEW_FD_WRAPPER(__open_2, (const char *path, int flags), (path, flags))
NEW_FD_WRAPPER(__open64_2, (const char *path, int flags), (path, flags))
NEW_FD_WRAPPER(dup, (int fd), (fd))
NEW_FD_WRAPPER(dup2, (int fd, int new), (fd, new))
NEW_FD_WRAPPER(dup3, (int fd, int new, int flags), (fd, new, flags))

/* fopen's "w" opens with O_TRUNC inside libc, where no wrapper sees it:
 * a device refused so is opened again without it, then given its FILE. */
static FILE *fopen_untruncated(const char *path, const char *mode)
{
	int flags = (strchr(mode, '+') ? O_RDWR : O_WRONLY) | (strchr(mode, 'e') ? O_CLOEXEC : 0);
	int fd = REAL(open)(path, flags);
	FILE *f;

	if (fd < 0)
		return NULL;
	f = fdopen(fd, mode);
	if (!f)
		REAL(close)(fd);
	return f;
}

#define FOPEN_WRAPPER(name)                                           \
	DECLARE(FILE *, name, const char *, const char *);           \
	FILE *name(const char *path, const char *mode)                \
	{                                                             \
		RESOLVE(name);                                        \
		FILE *f = is_mount_table(path) ? mount_table(mode) : NULL; \
		if (f)                                                \
			return f;                                     \
		f = REAL(name)(path, mode);                           \
		if (!f && mode[0] == 'w' && untruncated(-1, O_TRUNC, AT_FDCWD, path)) { \
			RESOLVE(open);                                \
			RESOLVE(close);                               \
			f = fopen_untruncated(path, mode);            \
		}                                                     \
		if (f)                                                \
			note(fileno(f));                              \
		return f;                                             \
	}
FOPEN_WRAPPER(fopen)
FOPEN_WRAPPER(fopen64)

DECLARE(int, fclose, FILE *);
DECLARE(int, close_range, unsigned int, unsigned int, int);

int close(int fd)
{
	RESOLVE(close);
	forget(fd);
	return REAL(close)(fd);
}

int fclose(FILE *f)
{
	RESOLVE(fclose);
	if (f)
		forget(fileno(f));
	return REAL(fclose)(f);
}

int close_range(unsigned int first, unsigned int last, int flags)
{
	unsigned int fd;

	RESOLVE(close_range);
	if (!(flags & CLOSE_RANGE_CLOEXEC))
		for (fd = first; fd <= last && fd < FD_TRACK; fd++)
			forget(fd);
	return REAL(close_range)(first, last, flags);
}

#define FCNTL_WRAPPER(name)                                         \
	int name(int fd, int cmd, ...)                              \
	{                                                           \
		va_list ap;                                         \
		va_start(ap, cmd);                                  \
		void *arg = va_arg(ap, void *);                     \
		va_end(ap);                                         \
		RESOLVE(name);                                      \
		int rc = REAL(name)(fd, cmd, arg);                  \
		if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)       \
			note(rc);                                   \
		return rc;                                          \
	}
FCNTL_WRAPPER(fcntl)
FCNTL_WRAPPER(fcntl64)
