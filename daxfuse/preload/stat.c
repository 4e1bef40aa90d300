/*
 * The stat family: an emulated device is a character device, st_rdev its
 * dev attribute, st_size 0, by whatever name it is reached.
 */
#include "preload.h"

#include <fcntl.h>
#include <sys/sysmacros.h>

static void as_chardev(struct stat64 *st)
{
	dev_t rdev = chardev_of(st->st_dev, st->st_ino, st->st_mode);

	if (!rdev)
		return;
	st->st_mode = S_IFCHR | (st->st_mode & 07777);
	st->st_rdev = rdev;
	st->st_size = 0;
	st->st_blocks = 0;
}

/* What libc says, with an emulated device shown as a character device;
 * the plain and 64 forms share one layout on 64-bit glibc. */
#define STAT_WRAPPER(name, arg_t, stat_t)                                      \
	DECLARE(int, name, arg_t, struct stat64 *);                           \
	int name(arg_t arg, stat_t *st)                                        \
	{                                                                      \
		RESOLVE(name);                                                 \
		int rc = REAL(name)(arg, (struct stat64 *)st);                 \
		if (rc == 0)                                                   \
			as_chardev((struct stat64 *)st);                       \
		return rc;                                                     \
	}
STAT_WRAPPER(stat, const char *, struct stat)
STAT_WRAPPER(stat64, const char *, struct stat64)
STAT_WRAPPER(lstat, const char *, struct stat)
STAT_WRAPPER(lstat64, const char *, struct stat64)
STAT_WRAPPER(fstat, int, struct stat)
STAT_WRAPPER(fstat64, int, struct stat64)

#define FSTATAT_WRAPPER(name, stat_t)                                          \
	DECLARE(int, name, int, const char *, struct stat64 *, int);          \
	int name(int dirfd, const char *path, stat_t *st, int flags)           \
	{                                                                      \
		RESOLVE(name);                                                 \
		int rc = REAL(name)(dirfd, path, (struct stat64 *)st, flags);  \
		if (rc == 0)                                                   \
			as_chardev((struct stat64 *)st);                       \
		return rc;                                                     \
	}
FSTATAT_WRAPPER(fstatat, struct stat)
FSTATAT_WRAPPER(fstatat64, struct stat64)

/* The legacy entry points of binaries built before glibc 2.33. */
#define XSTAT_WRAPPER(name, arg_t)                                             \
	DECLARE(int, name, int, arg_t, struct stat64 *);                      \
	int name(int ver, arg_t arg, struct stat64 *st)                        \
	{                                                                      \
		RESOLVE(name);                                                 \
		int rc = REAL(name)(ver, arg, st);                             \
		if (rc == 0)                                                   \
			as_chardev(st);                                        \
		return rc;                                                     \
	}
XSTAT_WRAPPER(__xstat, const char *)
XSTAT_WRAPPER(__xstat64, const char *)
XSTAT_WRAPPER(__lxstat, const char *)
XSTAT_WRAPPER(__lxstat64, const char *)
XSTAT_WRAPPER(__fxstat, int)
XSTAT_WRAPPER(__fxstat64, int)

#define FXSTATAT_WRAPPER(name)                                                    \
	DECLARE(int, name, int, int, const char *, struct stat64 *, int);        \
	int name(int ver, int dirfd, const char *path, struct stat64 *st, int flags) \
	{                                                                         \
		RESOLVE(name);                                                    \
		int rc = REAL(name)(ver, dirfd, path, st, flags);                 \
		if (rc == 0)                                                      \
			as_chardev(st);                                           \
		return rc;                                                        \
	}
FXSTATAT_WRAPPER(__fxstatat)
FXSTATAT_WRAPPER(__fxstatat64)

DECLARE(int, statx, int, const char *, int, unsigned int, struct statx *);

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *stx)
{
	RESOLVE(statx);
	int rc = REAL(statx)(dirfd, path, flags, mask, stx);
	dev_t rdev;

	if (rc != 0 || !(stx->stx_mask & STATX_INO) || !(stx->stx_mask & STATX_TYPE))
		return rc;
	rdev = chardev_of(makedev(stx->stx_dev_major, stx->stx_dev_minor), stx->stx_ino, stx->stx_mode);
	if (rdev) {
		stx->stx_mode = S_IFCHR | (stx->stx_mode & 07777);
		stx->stx_rdev_major = major(rdev);
		stx->stx_rdev_minor = minor(rdev);
		stx->stx_size = 0;
		stx->stx_blocks = 0;
	}
	return rc;
}
