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
 * DAXFUSE_PERSONALITY="major=M,ino_base=B,ndctl=INO:MAJ:MIN,rw=0|1,direct=0|1,mount=/abs/mount"
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
#include <signal.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/ioctl.h>
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
	int rw, direct;
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
	if (sscanf(env, "major=%u,ino_base=%llu,ndctl=%llu:%u:%u,rw=%d,direct=%d,", &cfg.major, &cfg.ino_base,
		   &cfg.ndctl_ino, &cfg.ndctl_major, &cfg.ndctl_minor, &cfg.rw, &cfg.direct) != 7)
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

enum { FD_OTHER, FD_DAX, FD_NDCTL };
static dev_t chardev_of(dev_t dev, ino_t ino, mode_t mode);

static int fd_kind_slow(int fd)
{
	struct stat64 st;

	RESOLVE(fstat64);
	if (!cfg.active || REAL(fstat64)(fd, &st) != 0)
		return FD_OTHER;
	if (dev_minor(st.st_dev, st.st_ino, st.st_mode) >= 0)
		return FD_DAX;
	return chardev_of(st.st_dev, st.st_ino, st.st_mode) ? FD_NDCTL : FD_OTHER;
}

static void fd_note(int fd)
{
	if (fd >= 0 && fd < FD_TRACK)
		__atomic_store_n(&fd_device[fd], fd_kind_slow(fd), __ATOMIC_RELAXED);
}

static void fd_forget(int fd)
{
	if (fd >= 0 && fd < FD_TRACK)
		__atomic_store_n(&fd_device[fd], 0, __ATOMIC_RELAXED);
}

static int fd_kind(int fd)
{
	if (!cfg.active || fd < 0)
		return FD_OTHER;
	if (fd < FD_TRACK)
		return __atomic_load_n(&fd_device[fd], __ATOMIC_RELAXED);
	return fd_kind_slow(fd);
}

static int fd_is_device(int fd)
{
	return fd_kind(fd) == FD_DAX;
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

/* What libc says, with an emulated device shown as a character device;
 * the plain and 64 forms share one layout on 64-bit glibc. */
#define STAT_WRAPPER(name, arg_t, stat_t)                                      \
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

DECLARE(int, fstatat, int, const char *, struct stat64 *, int);
DECLARE(int, fstatat64, int, const char *, struct stat64 *, int);

#define FSTATAT_WRAPPER(name, stat_t)                                          \
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

/* --- direct mappings: the device's memory itself ---------------------------- */

/*
 * Under the personality a mapping of a device maps the memory file's ranges
 * of the device (granted by the daemon, see daxfuse/direct.py), at memory
 * speed. The daemon revokes it by bumping the device's generation in a table
 * it shares read-only and sending REVOKE_SIGNAL to every thread; the handler
 * maps a dead file (0 bytes, sealed: every access SIGBUS) over each mapping
 * whose generation is stale, then acks.
 */
#define REVOKE_SIGNAL (SIGRTMAX - 3)
#define MAX_SEGMENTS 16
#define MAX_DIRECT 1024

enum { D_FREE, D_LIVE, D_BUSY, D_DEAD };

struct direct {
	int state;  /* atomic: the handler and munmap race for it */
	uintptr_t start, end;
	int prot;
	long minor;
	uint64_t gen;
	int nseg;  /* the memory file's pieces, from start on: where poison hits */
	unsigned long long phys[MAX_SEGMENTS], len[MAX_SEGMENTS];
};

static struct direct directs[MAX_DIRECT];
static int ndirects;                 /* slots ever used: the handler's bound */
static int dsock = -1;              /* this process's connection to the daemon */
static pid_t dsock_pid;
static int direct_refused;          /* the daemon said "fuse": map the FUSE file */
static const volatile uint64_t *gens;
static unsigned long ngens;          /* gens[ngens] is the daemon's revocation sequence,  */
static unsigned long table_words;    /* then the poisoned ranges: count, (start, length)... */
static int memfd_rw = -1, memfd_ro = -1, deadfd = -1;
static int revoking;
static pthread_mutex_t dlock = PTHREAD_MUTEX_INITIALIZER;  /* the connection and its requests */

struct grant {
	uint64_t gen;
	long align;
	unsigned long long size;
	int nseg, memfd;
	unsigned long long phys[MAX_SEGMENTS], len[MAX_SEGMENTS];
};

static int send_msg(const char *text, int fd)
{
	struct iovec iov = {(void *)text, strlen(text)};
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

	if (fd >= 0) {
		msg.msg_control = cbuf;
		msg.msg_controllen = sizeof(cbuf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(dsock, &msg, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

/* A reply: its text in buf, an fd that came with it in *fd (or -1). */
static int recv_msg(char *buf, size_t size, int *fd)
{
	struct iovec iov = {buf, size - 1};
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf)};
	ssize_t n = recvmsg(dsock, &msg, MSG_CMSG_CLOEXEC);
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	*fd = -1;
	if (n <= 0)
		return -1;
	buf[n] = 0;
	if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
		memcpy(fd, CMSG_DATA(c), sizeof(int));
	return 0;
}

/* The pages of d on poisoned memory: the dead file over them alone. */
static void kill_poisoned(const struct direct *d)
{
	unsigned long long page = 4096, i, p, npoison = gens[ngens + 1];
	uintptr_t at = d->start;
	int s;

	for (s = 0; s < d->nseg; at += d->len[s++])
		for (i = 0; i < npoison && ngens + 3 + 2 * i < table_words; i++) {
			unsigned long long start = gens[ngens + 2 + 2 * i], end = start + gens[ngens + 3 + 2 * i];
			unsigned long long lo = start > d->phys[s] ? start : d->phys[s];
			unsigned long long hi = end < d->phys[s] + d->len[s] ? end : d->phys[s] + d->len[s];

			if (lo >= hi)
				continue;
			lo &= ~(page - 1);
			hi = (hi + page - 1) & ~(page - 1);
			p = at + (lo - d->phys[s]);
			REAL(mmap)((void *)p, hi - lo, d->prot, MAP_SHARED | MAP_FIXED, deadfd, 0);
		}
}

static void revoke_stale(void)
{
	int i, n = __atomic_load_n(&ndirects, __ATOMIC_ACQUIRE);

	for (i = 0; i < n; i++) {
		struct direct *d = &directs[i];
		int live = D_LIVE;

		if (__atomic_load_n(&d->state, __ATOMIC_ACQUIRE) != D_LIVE)
			continue;
		if (!__atomic_compare_exchange_n(&d->state, &live, D_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			continue;
		if (gens[d->minor] != d->gen) {
			REAL(mmap)((void *)d->start, d->end - d->start, d->prot, MAP_SHARED | MAP_FIXED, deadfd, 0);
			__atomic_store_n(&d->state, D_DEAD, __ATOMIC_RELEASE);
			continue;
		}
		kill_poisoned(d);
		__atomic_store_n(&d->state, D_LIVE, __ATOMIC_RELEASE);
	}
}

static void revoke_handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	char ack[32] = "ack ", digits[24];
	unsigned long long seq;
	int i = 0, j = 4;

	while (__atomic_exchange_n(&revoking, 1, __ATOMIC_ACQUIRE))
		;  /* another thread of this process is revoking: its work is ours */
	seq = gens[ngens];
	revoke_stale();
	do {  /* no snprintf in a signal handler */
		digits[i++] = '0' + seq % 10;
		seq /= 10;
	} while (seq);
	while (i)
		ack[j++] = digits[--i];
	ack[j] = 0;
	if (dsock >= 0 && dsock_pid == getpid())
		send(dsock, ack, j, MSG_DONTWAIT | MSG_NOSIGNAL);
	__atomic_store_n(&revoking, 0, __ATOMIC_RELEASE);
	errno = saved;
}

DECLARE(int, sigaction, int, const struct sigaction *, struct sigaction *);

/* The connection: made at a process's first device mapping (locked). */
static int connect_daemon(void)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char buf[128];
	int fd, len;

	RESOLVE(close);
	RESOLVE(mmap);
	if (dsock >= 0 && dsock_pid == getpid())
		return 0;
	if (dsock >= 0)
		REAL(close)(dsock);  /* the parent's, inherited */
	dsock = -1;
	len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "daxfuse/%lu", (unsigned long)cfg.mnt_dev);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, offsetof(struct sockaddr_un, sun_path) + 1 + len) < 0) {
		if (fd >= 0)
			REAL(close)(fd);
		return -1;
	}
	dsock = fd;
	dsock_pid = getpid();
	snprintf(buf, sizeof(buf), "hello %d %d", getpid(), REVOKE_SIGNAL);
	if (send_msg(buf, -1) < 0 || recv_msg(buf, sizeof(buf), &fd) < 0 ||
	    sscanf(buf, "ok %lu %lu", &ngens, &table_words) != 2 || fd < 0)
		return -1;
	if (!gens) {
		gens = REAL(mmap)(NULL, table_words * 8, PROT_READ, MAP_SHARED, fd, 0);
		if (gens == MAP_FAILED) {
			gens = NULL;
			return -1;
		}
	}
	REAL(close)(fd);
	if (deadfd < 0) {
		deadfd = memfd_create("daxfuse-dead", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		fcntl(deadfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
		struct sigaction sa = {.sa_sigaction = revoke_handler, .sa_flags = SA_SIGINFO | SA_RESTART};
		sigfillset(&sa.sa_mask);
		RESOLVE(sigaction);
		REAL(sigaction)(REVOKE_SIGNAL, &sa, NULL);
	}
	return 0;
}

/* Ask the daemon for a direct mapping of [off, off + len) of the device fd:
 * 1 granted (g filled), 0 map the FUSE file, -1 refused (errno set). */
static int direct_grant(int fd, off_t off, size_t len, int prot, struct grant *g)
{
	char buf[4096], *p;
	int memfd, n, rc = 0;

	if (!cfg.direct || direct_refused)
		return 0;
	pthread_mutex_lock(&dlock);
	if (connect_daemon() < 0) {
		pthread_mutex_unlock(&dlock);
		return 0;
	}
	snprintf(buf, sizeof(buf), "map %lld %zu %d", (long long)off, len, !!(prot & PROT_WRITE));
	if (send_msg(buf, fd) < 0 || recv_msg(buf, sizeof(buf), &memfd) < 0) {
		pthread_mutex_unlock(&dlock);
		return 0;
	}
	if (!strcmp(buf, "fuse")) {
		direct_refused = 1;
	} else if (sscanf(buf, "err %d", &n) == 1) {
		errno = n;
		rc = -1;
	} else if (sscanf(buf, "ok %lu %ld %llu%n", &g->gen, &g->align, &g->size, &n) == 3 && memfd >= 0) {
		int *cached = prot & PROT_WRITE ? &memfd_rw : &memfd_ro;

		if (*cached < 0)
			*cached = memfd;
		else
			REAL(close)(memfd);
		memfd = -1;
		g->memfd = *cached;
		g->nseg = 0;
		for (p = buf + n; g->nseg < MAX_SEGMENTS; g->nseg++) {
			int used;
			if (sscanf(p, " %llu:%llu%n", &g->phys[g->nseg], &g->len[g->nseg], &used) != 2)
				break;
			p += used;
		}
		rc = *p ? 0 : 1;  /* more pieces than a mapping keeps track of: through FUSE */
	}
	if (memfd >= 0)
		REAL(close)(memfd);
	pthread_mutex_unlock(&dlock);
	return rc;
}

static int direct_add(uintptr_t start, uintptr_t end, int prot, long minor, uint64_t gen, const struct grant *g)
{
	int i;

	pthread_mutex_lock(&maps_lock);
	for (i = 0; i < MAX_DIRECT; i++)
		if (__atomic_load_n(&directs[i].state, __ATOMIC_ACQUIRE) == D_FREE)
			break;
	if (i < MAX_DIRECT) {
		directs[i] = (struct direct){D_FREE, start, end, prot, minor, gen, 0, {0}, {0}};
		if (g) {
			directs[i].nseg = g->nseg;
			memcpy(directs[i].phys, g->phys, sizeof(g->phys));
			memcpy(directs[i].len, g->len, sizeof(g->len));
		}
		if (i >= ndirects)
			__atomic_store_n(&ndirects, i + 1, __ATOMIC_RELEASE);
		__atomic_store_n(&directs[i].state, D_LIVE, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&maps_lock);
	return i < MAX_DIRECT ? 0 : -1;
}

/* The memory of grant g at start: its segments, then a dead tail past the
 * device's end (faults there raise SIGBUS). MAP_SYNC needs nothing more:
 * stores are in the memory file the moment they retire. */
static void *map_direct(uintptr_t start, size_t len, int prot, int flags, const struct grant *g)
{
	uintptr_t at = start;
	int i;

	flags = (flags & ~(MAP_TYPE | MAP_SYNC | MAP_FIXED_NOREPLACE)) | MAP_SHARED | MAP_FIXED;
	for (i = 0; i < g->nseg; i++, at += g->len[i - 1])
		if (REAL(mmap)((void *)at, g->len[i], prot, flags, g->memfd, g->phys[i]) == MAP_FAILED)
			return MAP_FAILED;
	if (at < start + len && REAL(mmap)((void *)at, start + len - at, prot, flags, deadfd, 0) == MAP_FAILED)
		return MAP_FAILED;
	return (void *)start;
}

static void *dax_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	long minor = fd_minor_slow(fd);
	int type = flags & MAP_TYPE, direct;
	struct grant g;
	long long align;
	uintptr_t start;
	void *area = NULL, *p;

	direct = direct_grant(fd, off, len, prot, &g);
	if (direct < 0)
		return MAP_FAILED;
	align = direct ? g.align : device_attr(minor, "align");
	if (align <= 0 || (!direct && !device_enabled(minor)))
		return fail(ENXIO);  /* check_vma: !dax_alive() */
	if (type != MAP_SHARED && type != MAP_SHARED_VALIDATE)
		return fail(EINVAL);  /* check_vma: !VM_MAYSHARE */
	if (!len || page_end(0, len) % align || off % align)
		return fail(EINVAL);  /* vm_start, vm_end and the offset on align */
	if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
		if ((uintptr_t)addr % align)
			return fail(EINVAL);
		start = (uintptr_t)addr;
	} else {  /* dax_get_unmapped_area: an address aligned to align */
		area = REAL(mmap)(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (area == MAP_FAILED)
			return area;
		start = ((uintptr_t)area + align - 1) & ~(uintptr_t)(align - 1);
	}
	if (direct)
		p = map_direct(start, len, prot, flags, &g);
	else  /* FUSE refuses MAP_SYNC; device-dax takes it */
		p = REAL(mmap)((void *)start, len, prot, (flags & ~(MAP_TYPE | MAP_SYNC)) | MAP_SHARED | MAP_FIXED, fd, off);
	if (p == MAP_FAILED) {
		int err = errno;
		if (area)
			REAL(munmap)(area, len + align);
		return fail(err);
	}
	if (area) {
		if (start > (uintptr_t)area)
			REAL(munmap)(area, start - (uintptr_t)area);
		if ((uintptr_t)area + align > start)
			REAL(munmap)((void *)(start + len), (uintptr_t)area + align - start);
	}
	maps_add(start, start + len, align);
	if (direct) {
		direct_add(start, start + len, prot, minor, g.gen, &g);
		revoke_stale();  /* revoked while it was being mapped */
	}
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

/* Take the direct mappings overlapping [start, end) from the handler while
 * they change: the handler must never map over an address that was
 * unmapped (and may be reused). Their states before are kept in was[]. */
static int direct_claim(uintptr_t start, uintptr_t end, int *claimed, int *was)
{
	int i, n = __atomic_load_n(&ndirects, __ATOMIC_ACQUIRE), k = 0;

	for (i = 0; i < n; i++) {
		struct direct *d = &directs[i];
		int state;

		if (d->end <= start || d->start >= end)
			continue;
		for (;;) {
			state = __atomic_load_n(&d->state, __ATOMIC_ACQUIRE);
			if (state == D_FREE || ((state == D_LIVE || state == D_DEAD) &&
			    __atomic_compare_exchange_n(&d->state, &state, D_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)))
				break;
		}
		if (state != D_FREE && k < MAX_DIRECT) {
			claimed[k] = i;
			was[k++] = state;
		}
	}
	return k;
}

/* Give them back, [start, end) gone from them (unmapped) or not (failed). */
static void direct_release(uintptr_t start, uintptr_t end, int gone, const int *claimed, const int *was, int k)
{
	int j;

	for (j = 0; j < k; j++) {
		struct direct *d = &directs[claimed[j]];
		int left = start > d->start, right = end < d->end;

		if (gone && right && left && was[j] == D_LIVE)  /* a hole in the middle: the right part goes on alone */
			direct_add(end, d->end, d->prot, d->minor, d->gen, NULL);
		if (gone && right && !left)
			d->start = end;
		if (gone && left)
			d->end = start;
		__atomic_store_n(&d->state, !gone || left || right ? was[j] : D_FREE, __ATOMIC_RELEASE);
	}
}

int munmap(void *addr, size_t len)
{
	uintptr_t start = (uintptr_t)addr, end = page_end(start, len);
	static int claimed[MAX_DIRECT], was[MAX_DIRECT];
	int rc, k = 0;

	RESOLVE(munmap);
	if (nmaps && splits_unaligned(start, end)) {
		errno = EINVAL;
		return -1;
	}
	if (ndirects) {
		pthread_mutex_lock(&dlock);
		k = direct_claim(start, end, claimed, was);
	}
	rc = REAL(munmap)(addr, len);
	if (ndirects) {
		direct_release(start, end, rc == 0, claimed, was, k);
		pthread_mutex_unlock(&dlock);
	}
	if (rc == 0 && nmaps)
		maps_remove(start, end);
	return rc;
}

DECLARE(int, mprotect, void *, size_t, int);

int mprotect(void *addr, size_t len, int prot)
{
	uintptr_t start = (uintptr_t)addr;

	int i, rc;

	RESOLVE(mprotect);
	if (nmaps && splits_unaligned(start, page_end(start, len))) {
		errno = EINVAL;
		return -1;
	}
	rc = REAL(mprotect)(addr, len, prot);
	for (i = 0; rc == 0 && i < ndirects; i++)  /* what a revocation maps over it */
		if (directs[i].start >= start && directs[i].end <= page_end(start, len))
			directs[i].prot = prot;
	return rc;
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
	for (i = 0; i < ndirects; i++)  /* it would reach past the device's memory into others' */
		if (__atomic_load_n(&directs[i].state, __ATOMIC_ACQUIRE) != D_FREE &&
		    start < directs[i].end && end > directs[i].start)
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

/* --- /dev/ndctl0: the NVDIMM bus's ioctls, answered by the daemon ---------- */

/* A request goes to the node as the command's number (u32) and its payload;
 * the payload comes back as the kernel would have left it (daxfuse/ars.py).
 * ND_IOCTL_CALL and ARS_STATUS carry more than _IOC_SIZE says. */
#define ND_IOCTL_ARS_STATUS_NR 3
#define ND_IOCTL_CALL_NR 10
#define ARS_STATUS_SIZE (48 + 64 * 24)  /* the max_ars_out of daxfuse's ARS_CAP */

DECLARE(int, ioctl, int, unsigned long, ...);

static int ndctl_ioctl(int fd, unsigned int request, void *arg)
{
	unsigned int nr = _IOC_NR(request), size = _IOC_SIZE(request);
	char *buf;
	int rc = 0;

	if (_IOC_TYPE(request) != 'N') {
		errno = ENOTTY;
		return -1;
	}
	if (nr == ND_IOCTL_CALL_NR) {
		uint32_t in, out;
		memcpy(&in, (char *)arg + 16, 4);
		memcpy(&out, (char *)arg + 20, 4);
		size = 64 + in + out;
	} else if (nr == ND_IOCTL_ARS_STATUS_NR) {
		size = ARS_STATUS_SIZE;
	}
	buf = malloc(4 + size);
	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	memcpy(buf, &nr, 4);
	memcpy(buf + 4, arg, size);
	RESOLVE(pwrite);
	RESOLVE(pread);
	if (REAL(pwrite)(fd, buf, 4 + size, 0) < 0 || REAL(pread)(fd, arg, size, 0) < 0)
		rc = -1;
	free(buf);
	return rc;
}

int ioctl(int fd, unsigned long request, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *);
	va_end(ap);
	RESOLVE(ioctl);
	if (fd_kind(fd) == FD_NDCTL)  /* libndctl passes an int: compare the low 32 bits */
		return ndctl_ioctl(fd, (unsigned int)request, arg);
	return REAL(ioctl)(fd, request, arg);
}

/* --- the revocation signal stays deliverable -------------------------------- */

/* Once a process maps a device, its handler must run when the daemon
 * revokes: libc's ways to block the signal leave it out, and its handler
 * cannot be replaced. (A raw rt_sigprocmask still can: the daemon then
 * kills the process, see daxfuse/direct.py.) */
static const sigset_t *without_revoke(int how, const sigset_t *set, sigset_t *copy)
{
	if (deadfd < 0 || !set || how == SIG_UNBLOCK || !sigismember(set, REVOKE_SIGNAL))
		return set;
	*copy = *set;
	sigdelset(copy, REVOKE_SIGNAL);
	return copy;
}

DECLARE(int, sigprocmask, int, const sigset_t *, sigset_t *);
DECLARE(int, pthread_sigmask, int, const sigset_t *, sigset_t *);
DECLARE(__sighandler_t, signal, int, __sighandler_t);

int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	sigset_t copy;

	RESOLVE(sigprocmask);
	return REAL(sigprocmask)(how, without_revoke(how, set, &copy), old);
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
	sigset_t copy;

	RESOLVE(pthread_sigmask);
	return REAL(pthread_sigmask)(how, without_revoke(how, set, &copy), old);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	RESOLVE(sigaction);
	if (sig == REVOKE_SIGNAL && act && deadfd >= 0) {
		errno = EINVAL;
		return -1;
	}
	return REAL(sigaction)(sig, act, old);
}

__sighandler_t signal(int sig, __sighandler_t handler)
{
	RESOLVE(signal);
	if (sig == REVOKE_SIGNAL && deadfd >= 0) {
		errno = EINVAL;
		return SIG_ERR;
	}
	return REAL(signal)(sig, handler);
}

/* --- start-up ------------------------------------------------------------- */

static void direct_prepare(void) { pthread_mutex_lock(&dlock); }
static void direct_parent(void) { pthread_mutex_unlock(&dlock); }

/* A forked child holds its parent's direct mappings: the daemon learns of
 * them before fork() returns to the child, and what was revoked meanwhile
 * dies here (the table is shared: its generations are the daemon's now). */
static void direct_child(void)
{
	char buf[64];
	int i;

	pthread_mutex_unlock(&dlock);
	if (!ndirects || !gens)
		return;
	if (connect_daemon() == 0)
		for (i = 0; i < ndirects; i++)
			if (__atomic_load_n(&directs[i].state, __ATOMIC_ACQUIRE) == D_LIVE) {
				snprintf(buf, sizeof(buf), "inherit %ld %llu", directs[i].minor,
					 (unsigned long long)directs[i].gen);
				send_msg(buf, -1);
			}
	revoke_stale();
}

__attribute__((constructor)) static void init(void)
{
	int fd;

	configure();
	if (!cfg.active)
		return;
	pthread_atfork(direct_prepare, direct_parent, direct_child);
	for (fd = 0; fd < 1024; fd++)  /* inherited across exec */
		fd_note(fd);
}
