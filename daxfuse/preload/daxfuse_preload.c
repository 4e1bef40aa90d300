/*
 * The device-dax personality: an LD_PRELOAD library that `daxfuse exec`
 * loads, so that the emulated devices behave where applications look as the
 * kernel's drivers/dax/device.c does: character devices to the stat family,
 * check_vma() and dax_get_unmapped_area() at mmap, dev_dax_may_split() at
 * munmap/mprotect/mremap, and no read/write file operations.
 *
 * Like umockdev's preload library: one wrapper per libc entry point, and
 * everything that is not an emulated device passes through untouched. It
 * decides nothing the daemon owns: the mount, its device numbering and the
 * char major come from DAXFUSE_PERSONALITY, a device's align and state from
 * the mount's sysfs view.
 *
 * DAXFUSE_PERSONALITY="major=M,ino_base=B,ndctl=INO:MAJ:MIN,rw=0|1,mount=/abs/mount"
 * (mount last: the rest of the string, commas and all). A dax device has
 * inode number ino_base + minor; the NVDIMM bus's /dev/ndctl0 has INO.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif

#define REAL(name) real_##name
#define RESOLVE(name)                                                  \
	do {                                                           \
		if (!REAL(name))                                       \
			REAL(name) = dlsym(RTLD_NEXT, #name);          \
	} while (0)
#define DECLARE(ret, name, ...) static ret (*REAL(name))(__VA_ARGS__)

/* --- configuration -------------------------------------------------------- */

static struct {
	int active;
	unsigned major;
	unsigned long long ino_base;
	unsigned long long ndctl_ino;
	unsigned ndctl_major, ndctl_minor;
	int rw;
	dev_t mnt_dev;
	char mount[PATH_MAX];
} cfg;

DECLARE(int, stat64, const char *, struct stat64 *);

static void configure(void)
{
	const char *env = getenv("DAXFUSE_PERSONALITY");
	const char *mount;
	struct stat64 st;

	if (!env || !(mount = strstr(env, "mount=")))
		return;
	if (sscanf(env, "major=%u,ino_base=%llu,ndctl=%llu:%u:%u,rw=%d,", &cfg.major, &cfg.ino_base,
		   &cfg.ndctl_ino, &cfg.ndctl_major, &cfg.ndctl_minor, &cfg.rw) != 6)
		return;
	snprintf(cfg.mount, sizeof(cfg.mount), "%s", mount + strlen("mount="));
	RESOLVE(stat64);
	if (REAL(stat64)(cfg.mount, &st) != 0)
		return;
	cfg.mnt_dev = st.st_dev;
	cfg.active = 1;
}

/* A device's minor from what the real stat found, or -1: a regular file
 * of the mount numbered at or past ino_base (ino = ino_base + minor). */
static long dev_minor(dev_t dev, ino_t ino, mode_t mode)
{
	if (!cfg.active || dev != cfg.mnt_dev || !S_ISREG(mode) || ino < cfg.ino_base)
		return -1;
	return (long)(ino - cfg.ino_base);
}

/* --- which fds are devices ------------------------------------------------ */

/* A byte per fd below FD_TRACK: read and write are on every program's hot
 * path, so they look it up instead of asking the kernel (fstat). */
#define FD_TRACK 65536
static unsigned char fd_device[FD_TRACK];

DECLARE(int, fstat64, int, struct stat64 *);

static long fd_minor_slow(int fd)
{
	struct stat64 st;

	RESOLVE(fstat64);
	if (REAL(fstat64)(fd, &st) != 0)
		return -1;
	return dev_minor(st.st_dev, st.st_ino, st.st_mode);
}

static void fd_note(int fd)
{
	if (fd >= 0 && fd < FD_TRACK)
		__atomic_store_n(&fd_device[fd], fd_minor_slow(fd) >= 0, __ATOMIC_RELAXED);
}

static void fd_forget(int fd)
{
	if (fd >= 0 && fd < FD_TRACK)
		__atomic_store_n(&fd_device[fd], 0, __ATOMIC_RELAXED);
}

static int fd_is_device(int fd)
{
	if (!cfg.active || fd < 0)
		return 0;
	if (fd < FD_TRACK)
		return __atomic_load_n(&fd_device[fd], __ATOMIC_RELAXED);
	return fd_minor_slow(fd) >= 0;
}

__attribute__((constructor)) static void init(void)
{
	int fd;

	configure();
	if (!cfg.active)
		return;
	for (fd = 0; fd < 1024; fd++)  /* inherited across exec */
		fd_note(fd);
}

/* --- the stat family: character devices ----------------------------------- */

/* The device number a file of the mount stands for, or 0 for none. */
static dev_t chardev_of(dev_t dev, ino_t ino, mode_t mode)
{
	long minor = dev_minor(dev, ino, mode);

	if (minor >= 0)
		return makedev(cfg.major, minor);
	if (cfg.active && dev == cfg.mnt_dev && S_ISREG(mode) && ino == cfg.ndctl_ino)
		return makedev(cfg.ndctl_major, cfg.ndctl_minor);
	return 0;
}

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

DECLARE(int, stat, const char *, struct stat64 *);
DECLARE(int, lstat, const char *, struct stat64 *);
DECLARE(int, lstat64, const char *, struct stat64 *);
DECLARE(int, fstat, int, struct stat64 *);

int stat(const char *path, struct stat *st)
{
	RESOLVE(stat);
	int rc = REAL(stat)(path, (struct stat64 *)st);
	if (rc == 0)
		as_chardev((struct stat64 *)st);
	return rc;
}

int stat64(const char *path, struct stat64 *st)
{
	RESOLVE(stat64);
	int rc = REAL(stat64)(path, st);
	if (rc == 0)
		as_chardev(st);
	return rc;
}

int lstat(const char *path, struct stat *st)
{
	RESOLVE(lstat);
	int rc = REAL(lstat)(path, (struct stat64 *)st);
	if (rc == 0)
		as_chardev((struct stat64 *)st);
	return rc;
}

int lstat64(const char *path, struct stat64 *st)
{
	RESOLVE(lstat64);
	int rc = REAL(lstat64)(path, st);
	if (rc == 0)
		as_chardev(st);
	return rc;
}

int fstat(int fd, struct stat *st)
{
	RESOLVE(fstat);
	int rc = REAL(fstat)(fd, (struct stat64 *)st);
	if (rc == 0)
		as_chardev((struct stat64 *)st);
	return rc;
}

int fstat64(int fd, struct stat64 *st)
{
	RESOLVE(fstat64);
	int rc = REAL(fstat64)(fd, st);
	if (rc == 0)
		as_chardev(st);
	return rc;
}

DECLARE(int, fstatat, int, const char *, struct stat64 *, int);
DECLARE(int, fstatat64, int, const char *, struct stat64 *, int);

int fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
	RESOLVE(fstatat);
	int rc = REAL(fstatat)(dirfd, path, (struct stat64 *)st, flags);
	if (rc == 0)
		as_chardev((struct stat64 *)st);
	return rc;
}

int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
	RESOLVE(fstatat64);
	int rc = REAL(fstatat64)(dirfd, path, st, flags);
	if (rc == 0)
		as_chardev(st);
	return rc;
}

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

/* --- opening, duplicating, closing: the fd table -------------------------- */

#define OPEN_WRAPPER(name)                                               \
	DECLARE(int, name, const char *, int, ...);                     \
	int name(const char *path, int flags, ...)                       \
	{                                                                \
		mode_t mode = 0;                                         \
		if (flags & (O_CREAT | O_TMPFILE)) {                     \
			va_list ap;                                      \
			va_start(ap, flags);                             \
			mode = va_arg(ap, mode_t);                       \
			va_end(ap);                                      \
		}                                                        \
		RESOLVE(name);                                           \
		int fd = REAL(name)(path, flags, mode);                  \
		fd_note(fd);                                             \
		return fd;                                               \
	}
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(name)                                                 \
	DECLARE(int, name, int, const char *, int, ...);                    \
	int name(int dirfd, const char *path, int flags, ...)                \
	{                                                                    \
		mode_t mode = 0;                                             \
		if (flags & (O_CREAT | O_TMPFILE)) {                         \
			va_list ap;                                          \
			va_start(ap, flags);                                 \
			mode = va_arg(ap, mode_t);                           \
			va_end(ap);                                          \
		}                                                            \
		RESOLVE(name);                                               \
		int fd = REAL(name)(dirfd, path, flags, mode);               \
		fd_note(fd);                                                 \
		return fd;                                                   \
	}
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

#define OPEN2_WRAPPER(name)                                \
	DECLARE(int, name, const char *, int);            \
	int name(const char *path, int flags)              \
	{                                                  \
		RESOLVE(name);                             \
		int fd = REAL(name)(path, flags);          \
		fd_note(fd);                               \
		return fd;                                 \
	}
OPEN2_WRAPPER(__open_2)
OPEN2_WRAPPER(__open64_2)

#define FOPEN_WRAPPER(name)                                           \
	DECLARE(FILE *, name, const char *, const char *);           \
	FILE *name(const char *path, const char *mode)                \
	{                                                             \
		RESOLVE(name);                                        \
		FILE *f = REAL(name)(path, mode);                     \
		if (f)                                                \
			fd_note(fileno(f));                           \
		return f;                                             \
	}
FOPEN_WRAPPER(fopen)
FOPEN_WRAPPER(fopen64)

DECLARE(int, dup, int);
DECLARE(int, dup2, int, int);
DECLARE(int, dup3, int, int, int);
DECLARE(int, close, int);
DECLARE(int, fcntl, int, int, ...);
DECLARE(int, fcntl64, int, int, ...);

int dup(int fd)
{
	RESOLVE(dup);
	int new = REAL(dup)(fd);
	fd_note(new);
	return new;
}

int dup2(int fd, int new)
{
	RESOLVE(dup2);
	int rc = REAL(dup2)(fd, new);
	fd_note(rc);
	return rc;
}

int dup3(int fd, int new, int flags)
{
	RESOLVE(dup3);
	int rc = REAL(dup3)(fd, new, flags);
	fd_note(rc);
	return rc;
}

int close(int fd)
{
	RESOLVE(close);
	fd_forget(fd);
	return REAL(close)(fd);
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
			fd_note(rc);                                \
		return rc;                                          \
	}
FCNTL_WRAPPER(fcntl)
FCNTL_WRAPPER(fcntl64)

/* --- no read or write file operations (dax_fops has neither) --------------- */

static int refuse_io(int fd)
{
	if (cfg.rw || !fd_is_device(fd))
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

/* --- mmap: check_vma() and dax_get_unmapped_area() ------------------------ */

/* A sysfs attribute of device minor, read through the mount (not /sys: the
 * library also works outside exec). -1 when it cannot be read. */
static long long device_attr(long minor, const char *attr)
{
	char path[PATH_MAX + 64], buf[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/sys/dev/char/%u:%ld/%s", cfg.mount, cfg.major, minor, attr);
	RESOLVE(open);
	RESOLVE(read);
	RESOLVE(close);
	fd = REAL(open)(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = REAL(read)(fd, buf, sizeof(buf) - 1);
	REAL(close)(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return strtoll(buf, NULL, 0);
}

static int device_enabled(long minor)
{
	char path[PATH_MAX + 64];
	struct stat64 st;

	snprintf(path, sizeof(path), "%s/sys/dev/char/%u:%ld/driver", cfg.mount, cfg.major, minor);
	RESOLVE(lstat64);
	return REAL(lstat64)(path, &st) == 0;
}

/* The mappings of devices this process made: may_split needs their align. */
struct mapping {
	uintptr_t start, end;
	size_t align;
};
#define MAX_MAPPINGS 4096
static struct mapping maps[MAX_MAPPINGS];
static int nmaps;
static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;

static void maps_add(uintptr_t start, uintptr_t end, size_t align)
{
	pthread_mutex_lock(&maps_lock);
	if (nmaps < MAX_MAPPINGS)
		maps[nmaps++] = (struct mapping){start, end, align};
	pthread_mutex_unlock(&maps_lock);
}

/* Forget [start, end) of every tracked mapping (after munmap, mremap). */
static void maps_remove(uintptr_t start, uintptr_t end)
{
	int i;

	pthread_mutex_lock(&maps_lock);
	for (i = 0; i < nmaps; i++) {
		struct mapping *m = &maps[i];

		if (end <= m->start || start >= m->end)
			continue;
		if (start > m->start && end < m->end && nmaps < MAX_MAPPINGS) {
			maps[nmaps++] = (struct mapping){end, m->end, m->align};
			m->end = start;
		} else if (start > m->start) {
			m->end = start;
		} else if (end < m->end) {
			m->start = end;
		} else {
			maps[i--] = maps[--nmaps];
		}
	}
	pthread_mutex_unlock(&maps_lock);
}

/* dev_dax_may_split(): a split of a device mapping at an address that is
 * not a multiple of its align. */
static int splits_unaligned(uintptr_t start, uintptr_t end)
{
	int i, bad = 0;

	pthread_mutex_lock(&maps_lock);
	for (i = 0; i < nmaps && !bad; i++) {
		struct mapping *m = &maps[i];

		if (start > m->start && start < m->end && start % m->align)
			bad = 1;
		if (end > m->start && end < m->end && end % m->align)
			bad = 1;
	}
	pthread_mutex_unlock(&maps_lock);
	return bad;
}

static uintptr_t page_end(uintptr_t start, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return start + ((len + page - 1) & ~(page - 1));
}

DECLARE(void *, mmap, void *, size_t, int, int, int, off_t);
DECLARE(int, munmap, void *, size_t);

static void *fail(int err)
{
	errno = err;
	return MAP_FAILED;
}

static void *dax_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	long minor = fd_minor_slow(fd);
	long long align = device_attr(minor, "align");
	int type = flags & MAP_TYPE;
	uintptr_t start;
	void *p;

	if (align <= 0 || !device_enabled(minor))
		return fail(ENXIO);  /* check_vma: !dax_alive() */
	if (type != MAP_SHARED && type != MAP_SHARED_VALIDATE)
		return fail(EINVAL);  /* check_vma: !VM_MAYSHARE */
	if (!len || page_end(0, len) % align || off % align)
		return fail(EINVAL);  /* vm_start, vm_end and the offset on align */
	/* FUSE refuses MAP_SYNC; device-dax takes it */
	flags = (flags & ~(MAP_TYPE | MAP_SYNC)) | MAP_SHARED;
	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
		if ((uintptr_t)addr % align)
			return fail(EINVAL);
		p = REAL(mmap)(addr, len, prot, flags, fd, off);
	} else {  /* dax_get_unmapped_area: an address aligned to align */
		void *area = REAL(mmap)(NULL, len + align, PROT_NONE,
					MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (area == MAP_FAILED)
			return area;
		start = ((uintptr_t)area + align - 1) & ~(uintptr_t)(align - 1);
		p = REAL(mmap)((void *)start, len, prot, flags | MAP_FIXED, fd, off);
		if (p == MAP_FAILED) {
			int err = errno;
			REAL(munmap)(area, len + align);
			return fail(err);
		}
		if (start > (uintptr_t)area)
			REAL(munmap)(area, start - (uintptr_t)area);
		if ((uintptr_t)area + align > start)
			REAL(munmap)((void *)(start + len), (uintptr_t)area + align - start);
	}
	if (p != MAP_FAILED)
		maps_add((uintptr_t)p, (uintptr_t)p + len, align);
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	RESOLVE(mmap);
	RESOLVE(munmap);
	if (!(flags & MAP_ANONYMOUS) && fd_is_device(fd))
		return dax_mmap(addr, len, prot, flags, fd, off);
	return REAL(mmap)(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

/* --- munmap, mprotect, mremap: dev_dax_may_split() ------------------------ */

int munmap(void *addr, size_t len)
{
	uintptr_t start = (uintptr_t)addr, end = page_end(start, len);
	int rc;

	RESOLVE(munmap);
	if (nmaps && splits_unaligned(start, end)) {
		errno = EINVAL;
		return -1;
	}
	rc = REAL(munmap)(addr, len);
	if (rc == 0 && nmaps)
		maps_remove(start, end);
	return rc;
}

DECLARE(int, mprotect, void *, size_t, int);

int mprotect(void *addr, size_t len, int prot)
{
	uintptr_t start = (uintptr_t)addr;

	RESOLVE(mprotect);
	if (nmaps && splits_unaligned(start, page_end(start, len))) {
		errno = EINVAL;
		return -1;
	}
	return REAL(mprotect)(addr, len, prot);
}

DECLARE(void *, mremap, void *, size_t, size_t, int, ...);

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	uintptr_t start = (uintptr_t)old, end = page_end(start, old_len);
	void *target = NULL, *p;
	size_t align = 0;
	int i;

	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		target = va_arg(ap, void *);
		va_end(ap);
	}
	RESOLVE(mremap);
	if (nmaps && splits_unaligned(start, end))
		return fail(EINVAL);
	pthread_mutex_lock(&maps_lock);
	for (i = 0; i < nmaps; i++)
		if (start >= maps[i].start && start < maps[i].end)
			align = maps[i].align;
	pthread_mutex_unlock(&maps_lock);
	p = REAL(mremap)(old, old_len, new_len, flags, target);
	if (p != MAP_FAILED && align) {
		maps_remove(start, end);
		maps_add((uintptr_t)p, page_end((uintptr_t)p, new_len), align);
	}
	return p;
}
