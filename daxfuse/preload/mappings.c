/*
 * The mappings of devices: mmap as drivers/dax/device.c's check_vma() and
 * dax_get_unmapped_area() allow it, munmap, mprotect and mremap as
 * dev_dax_may_split() does. Each device mapping is an entry of a table that
 * the SIGBUS handler reads (sigbus.c); an entry is claimed (MAP_BUSY) by
 * whoever changes its range, so that a handler never maps over an address
 * that munmap has just given back.
 */
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101  /* linux/mman.h */
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif

DECLARE(void *, mmap, void *, size_t, int, int, int, off_t);
DECLARE(int, munmap, void *, size_t);
DECLARE(int, mprotect, void *, size_t, int);
DECLARE(void *, mremap, void *, size_t, size_t, int, ...);
DECLARE(int, open, const char *, int, ...);
DECLARE(ssize_t, read, int, void *, size_t);
DECLARE(ssize_t, write, int, const void *, size_t);
DECLARE(int, close, int);
DECLARE(int, lstat64, const char *, struct stat64 *);
DECLARE(int, fcntl, int, int, ...);

static struct table maps = {sizeof(struct dax_map), "device mappings", 0, {0}};
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;  /* changes to the table */
static unsigned long live;  /* entries in use: none, and munmap & co. have nothing to check */

static void resolve_all(void)
{
	RESOLVE(mmap);
	RESOLVE(munmap);
	RESOLVE(mprotect);
	RESOLVE(mremap);
	RESOLVE(open);
	RESOLVE(read);
	RESOLVE(write);
	RESOLVE(close);
	RESOLVE(lstat64);
	RESOLVE(fcntl);
}

static void *fail(int err)
{
	errno = err;
	return MAP_FAILED;
}

static int fail_int(int err)
{
	errno = err;
	return -1;
}

static uintptr_t page_end(uintptr_t start, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return start + ((len + page - 1) & ~(page - 1));
}

/* --- the table ------------------------------------------------------------- */

static struct dax_map *map(unsigned long i)
{
	return table_at(&maps, i);
}

/* Claim an entry: wait while another thread holds it. 0 when it is free. */
static int claim(struct dax_map *m)
{
	for (;;) {
		int state = __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);

		if (state == MAP_FREE)
			return 0;
		if (state == MAP_LIVE &&
		    __atomic_compare_exchange_n(&m->state, &state, MAP_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return 1;
	}
}

struct dax_map *map_claim_at(uintptr_t addr)
{
	unsigned long i, n = table_count(&maps);

	for (i = 0; i < n; i++) {
		struct dax_map *m = map(i);

		if (m->start <= addr && addr < m->end && claim(m)) {
			if (m->start <= addr && addr < m->end)
				return m;
			map_release(m);  /* it changed while we waited */
		}
	}
	return NULL;
}

void map_release(struct dax_map *m)
{
	__atomic_store_n(&m->state, MAP_LIVE, __ATOMIC_RELEASE);
}

/* Map m again from grant fresh, from its window fd when given (a revival;
 * m is claimed). */
int map_remap(struct dax_map *m, long fresh, int window)
{
	if (check_vma(1, 1, m->start, m->end - m->start, m->offset, grant_at(fresh)->align) ||
	    direct_map(fresh, m->start, m->end - m->start, m->offset, m->prot, window) < 0)
		return -1;
	__atomic_store_n(&m->grant, fresh, __ATOMIC_RELEASE);
	return 0;
}

/* n free entries, held (MAP_BUSY) until add() fills them or unreserve()
 * frees them again: 0, or -1 (said aloud) when the table is full. */
static int reserve(struct dax_map **out, int n)
{
	unsigned long i, count = table_count(&maps);
	int k = 0;

	for (i = 0; i < count && k < n; i++) {
		struct dax_map *m = map(i);
		int free_ = MAP_FREE;

		if (__atomic_compare_exchange_n(&m->state, &free_, MAP_BUSY, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			m->start = m->end = 0;
			out[k++] = m;
		}
	}
	while (k < n) {
		long fresh = table_add(&maps);

		if (fresh < 0) {
			while (k)
				__atomic_store_n(&out[--k]->state, MAP_FREE, __ATOMIC_RELEASE);
			return -1;
		}
		out[k] = map(fresh);
		__atomic_store_n(&out[k++]->state, MAP_BUSY, __ATOMIC_RELEASE);
	}
	return 0;
}

static void unreserve(struct dax_map **spares, int n)
{
	while (n--)
		if (spares[n] && !spares[n]->end)
			__atomic_store_n(&spares[n]->state, MAP_FREE, __ATOMIC_RELEASE);
}

/* Fill a reserved entry and make it live. */
static void add(struct dax_map *m, long minor, uintptr_t start, uintptr_t end, size_t align, uint64_t offset,
		int prot, long grant)
{
	m->minor = minor;
	m->align = align;
	m->offset = offset;
	m->prot = prot;
	m->grant = grant;
	m->start = start;
	m->end = end;
	live++;
	__atomic_store_n(&m->state, MAP_LIVE, __ATOMIC_RELEASE);
}

/* dev_dax_may_split(): would [start, end) split a device mapping at an
 * address off its align? */
static int splits_unaligned(uintptr_t start, uintptr_t end)
{
	unsigned long i, n = table_count(&maps);

	for (i = 0; i < n; i++) {
		struct dax_map *m = map(i);

		if (__atomic_load_n(&m->state, __ATOMIC_ACQUIRE) == MAP_FREE)
			continue;
		if ((start > m->start && start < m->end && start % m->align) ||
		    (end > m->start && end < m->end && end % m->align))
			return 1;
	}
	return 0;
}

#define MOST 64  /* device mappings one call may touch; more: the call fails (EINVAL), said aloud */

/* Claim every entry [start, end) overlaps, into claimed[]: how many, or -1. */
static int claim_range(uintptr_t start, uintptr_t end, struct dax_map **claimed)
{
	unsigned long i, n = table_count(&maps);
	int k = 0;

	for (i = 0; i < n; i++) {
		struct dax_map *m = map(i);

		if (!(m->end > start && m->start < end) || !claim(m))
			continue;
		if (k == MOST) {
			map_release(m);
			while (k)
				map_release(claimed[--k]);
			loud("a call over more than %d device mappings at once (an internal limit): it fails", MOST);
			return -1;
		}
		claimed[k++] = m;
	}
	return k;
}

/* [start, end) is gone from the claimed entries (prot < 0: munmap), or has
 * prot now (mprotect). What is left of an entry is up to three pieces: the
 * first stays in it, the others take spares. Entries are released. */
static void cut(struct dax_map **claimed, int k, uintptr_t start, uintptr_t end, int prot, struct dax_map **spares)
{
	int j, i;

	for (j = 0; j < k; j++) {
		struct dax_map *m = claimed[j], whole = *m;
		uintptr_t lo = start > whole.start ? start : whole.start, hi = end < whole.end ? end : whole.end;
		struct { uintptr_t start, end; int prot; } keep[3];
		int n = 0;

		if (lo > whole.start)
			keep[n++] = (typeof(keep[0])){whole.start, lo, whole.prot};
		if (prot >= 0)
			keep[n++] = (typeof(keep[0])){lo, hi, prot};
		if (hi < whole.end)
			keep[n++] = (typeof(keep[0])){hi, whole.end, whole.prot};
		if (!n) {
			live--;
			__atomic_store_n(&m->state, MAP_FREE, __ATOMIC_RELEASE);
			continue;
		}
		for (i = 1; i < n; i++)
			add(*spares++, whole.minor, keep[i].start, keep[i].end, whole.align,
			    whole.offset + (keep[i].start - whole.start), keep[i].prot, whole.grant);
		m->offset = whole.offset + (keep[0].start - whole.start);
		m->prot = keep[0].prot;
		m->start = keep[0].start;
		m->end = keep[0].end;
		map_release(m);
	}
}

/* A change to [start, end) that may cut device mappings (munmap, mprotect,
 * and MAP_FIXED or MREMAP_FIXED over them, which unmap what they replace):
 * cut_begin claims the entries it touches, refusing a split off their
 * align (EINVAL) or more than the table holds; cut_end cuts them to what is
 * left once the change is done (prot < 0: unmapped), or lets them be. */
struct cutting {
	struct dax_map *claimed[MOST], *spares[2 * MOST];
	int k;
};

static int cut_begin(struct cutting *c, uintptr_t start, uintptr_t end)
{
	memset(c->spares, 0, sizeof(c->spares));
	if (splits_unaligned(start, end))
		return fail_int(EINVAL);
	c->k = claim_range(start, end, c->claimed);
	if (c->k < 0)
		return fail_int(EINVAL);
	if (reserve(c->spares, 2 * c->k) < 0) {
		while (c->k > 0)
			map_release(c->claimed[--c->k]);
		return fail_int(ENOMEM);
	}
	return 0;
}

static void cut_end(struct cutting *c, uintptr_t start, uintptr_t end, int prot, int done)
{
	if (done)
		cut(c->claimed, c->k, start, end, prot, c->spares);
	else
		while (c->k)
			map_release(c->claimed[--c->k]);
	unreserve(c->spares, 2 * MOST);
}

/* --- mmap: check_vma() and dax_get_unmapped_area() -------------------------- */

/* drivers/dax/device.c's check_vma(), in its order: what every mapping of a
 * device meets, at mmap, at mremap and when a fault maps it again. The
 * device alive, the mapping shared, its start, length and offset on the
 * device's align (start 0: not placed yet). 0, or the errno. */
int check_vma(int alive, int shared, uintptr_t start, size_t len, uint64_t off, size_t align)
{
	if (!alive || !align)
		return ENXIO;
	if (!shared)
		return EINVAL;
	if (!len || start % align || page_end(0, len) % align || off % align)
		return EINVAL;
	return 0;
}

/* A sysfs attribute of device minor, read through the mount (not /sys: the
 * library also works outside exec). -1 when it cannot be read. */
static long long device_attr(long minor, const char *attr)
{
	char path[PATH_MAX + 64], buf[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/sys/dev/char/%u:%ld/%s", cfg.mount, cfg.major, minor, attr);
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
	return REAL(lstat64)(path, &st) == 0;
}

static void *dax_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	long minor = fd_minor(fd), grant = -1;
	int type = flags & MAP_TYPE, mode = REAL(fcntl)(fd, F_GETFL) & O_ACCMODE, direct = 0, alive = 0, window = -1;
	int write = (prot & PROT_WRITE) != 0, shared = type == MAP_SHARED || type == MAP_SHARED_VALIDATE, err;
	int fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0;
	struct dax_map *m;
	long long align = 0;
	uintptr_t start;
	void *area = NULL, *p;

	if (minor < 0)
		return REAL(mmap)(addr, len, prot, flags, fd, off);
	if (mode == O_WRONLY || (shared && write && mode == O_RDONLY))
		return fail(EACCES);  /* mmap's own checks, before the driver's */
	if (shared) {  /* a grant, if the daemon gives one: ENXIO for a dead device */
		direct = direct_grant(fd, minor, write, 0, &grant, &window);
		if (direct < 0)
			return MAP_FAILED;
	}
	if (direct) {
		alive = 1;
		align = (long long)grant_at(grant)->align;
	} else {
		alive = direct_alive(minor);
		alive = alive < 0 ? device_enabled(minor) : alive;
		align = alive ? device_attr(minor, "align") : 0;
	}
	err = check_vma(alive, shared, fixed ? (uintptr_t)addr : 0, len, off, align > 0 ? (size_t)align : 0);
	if (err) {
		if (window >= 0)
			REAL(close)(window);
		return fail(err);
	}
	if (reserve(&m, 1) < 0) {
		if (window >= 0)
			REAL(close)(window);
		return fail(ENOMEM);
	}
	if (fixed) {
		start = (uintptr_t)addr;
	} else {  /* dax_get_unmapped_area: an address aligned to align */
		area = REAL(mmap)(NULL, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (area == MAP_FAILED) {
			unreserve(&m, 1);
			return area;
		}
		start = ((uintptr_t)area + align - 1) & ~(uintptr_t)(align - 1);
	}
	if (direct) {
		p = (void *)start;
		if (direct_map(grant, start, page_end(0, len), off, prot, window) < 0 &&
		    (window >= 0 || direct_grant(fd, minor, write, 1, &grant, &window) <= 0 ||
		     direct_map(grant, start, page_end(0, len), off, prot, window) < 0))
			p = MAP_FAILED;  /* a copy of the cache refused (valgrind): a fresh grant's fd instead */
		if (window >= 0)
			REAL(close)(window);
	} else {  /* FUSE refuses MAP_SYNC; device-dax takes it */
		p = REAL(mmap)((void *)start, len, prot, (flags & ~(MAP_TYPE | MAP_SYNC)) | MAP_SHARED | MAP_FIXED, fd, off);
	}
	if (p == MAP_FAILED) {
		int err = errno;
		if (area)
			REAL(munmap)(area, len + align);
		unreserve(&m, 1);
		return fail(err);
	}
	if (area) {
		if (start > (uintptr_t)area)
			REAL(munmap)(area, start - (uintptr_t)area);
		if ((uintptr_t)area + align > start)
			REAL(munmap)((void *)page_end(start, len), (uintptr_t)area + align - start);
	}
	add(m, minor, start, page_end(start, len), align, off, prot, direct ? grant : -1);
	if (direct)
		sigbus_install();
	debug("minor %ld mapped at %#lx, %zu bytes at %#llx, %s", minor, (unsigned long)start, len,
	      (unsigned long long)off, direct ? "directly" : "through FUSE");
	return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	uintptr_t start = (uintptr_t)addr, end = page_end(start, len);
	int device, replaces;
	struct cutting c;
	void *p;

	resolve_all();
	device = !(flags & MAP_ANONYMOUS) && fd_kind(fd) == FD_DAX;
	/* MAP_FIXED unmaps what it replaces: device mappings there are cut */
	replaces = (flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE) && len &&
		   __atomic_load_n(&live, __ATOMIC_ACQUIRE);
	if (!device && !replaces)
		return REAL(mmap)(addr, len, prot, flags, fd, off);
	pthread_mutex_lock(&lock);
	if (replaces && cut_begin(&c, start, end) < 0) {
		pthread_mutex_unlock(&lock);
		return MAP_FAILED;
	}
	if (device) {
		direct_tidy();
		p = dax_mmap(addr, len, prot, flags, fd, off);
	} else {
		p = REAL(mmap)(addr, len, prot, flags, fd, off);
	}
	if (replaces)
		cut_end(&c, start, end, -1, p != MAP_FAILED);
	pthread_mutex_unlock(&lock);
	return p;
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

/* --- munmap, mprotect, mremap: dev_dax_may_split() -------------------------- */

/* Change [start, end) with real(), cutting the device mappings it touches. */
static int change(uintptr_t start, uintptr_t end, int prot, int (*real)(void *, size_t, int), int arg)
{
	struct cutting c;
	int rc;

	if (cut_begin(&c, start, end) < 0)
		return -1;
	rc = real((void *)start, end - start, arg);
	cut_end(&c, start, end, prot, rc == 0);
	return rc;
}

static int unmap_range(void *addr, size_t len, int unused)
{
	return REAL(munmap)(addr, len);
}

static int protect_range(void *addr, size_t len, int prot)
{
	return REAL(mprotect)(addr, len, prot);
}

int munmap(void *addr, size_t len)
{
	uintptr_t start = (uintptr_t)addr;
	int rc;

	resolve_all();
	if (!__atomic_load_n(&live, __ATOMIC_ACQUIRE))
		return REAL(munmap)(addr, len);
	pthread_mutex_lock(&lock);
	rc = change(start, page_end(start, len), -1, unmap_range, 0);
	pthread_mutex_unlock(&lock);
	return rc;
}

int mprotect(void *addr, size_t len, int prot)
{
	uintptr_t start = (uintptr_t)addr;
	int rc;

	resolve_all();
	if (!__atomic_load_n(&live, __ATOMIC_ACQUIRE))
		return REAL(mprotect)(addr, len, prot);
	pthread_mutex_lock(&lock);
	rc = change(start, page_end(start, len), prot, protect_range, prot);
	pthread_mutex_unlock(&lock);
	return rc;
}

DECLARE(int, madvise, void *, size_t, int);

/* Whether [addr, addr + len) touches a device mapping. */
static int touches_device(void *addr, size_t len)
{
	uintptr_t start = (uintptr_t)addr, end = page_end(start, len);
	unsigned long i, n = table_count(&maps);

	if (!__atomic_load_n(&live, __ATOMIC_ACQUIRE))
		return 0;
	for (i = 0; i < n; i++) {
		struct dax_map *m = map(i);

		if (__atomic_load_n(&m->state, __ATOMIC_ACQUIRE) != MAP_FREE && m->start < end && m->end > start)
			return 1;
	}
	return 0;
}

/* MADV_HWPOISON of a page of a device mapping, as memory_failure() treats
 * device memory (mf_generic_kill_procs): the page is poisoned, which the
 * daemon records as the device's media error over it, and the caller is
 * sent SIGBUS BUS_MCEERR_AR at that address: here by touching the page,
 * which now faults as poison (sigbus.c). */
static int hwpoison(uintptr_t addr)
{
	char path[PATH_MAX + 64], link[PATH_MAX], line[128];
	uintptr_t page = addr & ~(uintptr_t)4095;
	struct dax_map *m = map_claim_at(page);
	uint64_t offset;
	const char *name;
	ssize_t n;
	long minor;
	int fd;

	if (!m)
		return fail_int(EFAULT);
	minor = m->minor;
	offset = m->offset + (page - m->start);
	map_release(m);
	snprintf(path, sizeof(path), "%s/sys/dev/char/%u:%ld", cfg.mount, cfg.major, minor);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return fail_int(ENXIO);
	link[n] = 0;
	name = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
	snprintf(path, sizeof(path), "%s/control", cfg.mount);
	n = snprintf(line, sizeof(line), "inject-error %s block=%llu count=8", name, (unsigned long long)offset / 512);
	fd = REAL(open)(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || REAL(write)(fd, line, n) != n) {
		int err = errno;
		if (fd >= 0)
			REAL(close)(fd);
		return fail_int(err);
	}
	REAL(close)(fd);
	debug("minor %ld: page at %#lx poisoned (MADV_HWPOISON)", minor, (unsigned long)page);
	(void)*(volatile char *)page;  /* SIGBUS BUS_MCEERR_AR, as the kernel kills the caller */
	return 0;
}

/* MADV_REMOVE punches a hole in the file a mapping maps: a device is no
 * file to punch (vfs_fallocate answers ENODEV for a character device),
 * and a window's hole would lose data. MADV_HWPOISON and MADV_SOFT_OFFLINE
 * need CAP_SYS_ADMIN; device memory is no online page to soft-offline
 * (EIO). The rest is the kernel's own. */
int madvise(void *addr, size_t len, int advice)
{
	RESOLVE(madvise);
	resolve_all();
	if (advice == MADV_REMOVE && touches_device(addr, len))
		return fail_int(ENODEV);
	if ((advice == MADV_HWPOISON || advice == MADV_SOFT_OFFLINE) && touches_device(addr, len)) {
		if (geteuid() != 0)
			return fail_int(EPERM);
		return advice == MADV_SOFT_OFFLINE ? fail_int(EIO) : hwpoison((uintptr_t)addr);
	}
	return REAL(madvise)(addr, len, advice);
}

DECLARE(int, msync, void *, size_t, int);

/* msync(MS_SYNC) of a shared file mapping fsyncs the file: dax_fops has
 * no fsync, so EINVAL, as for fsync (fops.c). MS_ASYNC does nothing. */
int msync(void *addr, size_t len, int flags)
{
	RESOLVE(msync);
	if ((flags & MS_SYNC) && touches_device(addr, len)) {
		errno = EINVAL;
		return -1;
	}
	return REAL(msync)(addr, len, flags);
}

/* A device mapping, or a part of one, moves, grows and shrinks as its VMA
 * would on the kernel: the part must lie in the mapping (EFAULT), split it
 * on its align (dev_dax_may_split, EINVAL), and move to an address on its
 * align by a multiple of it. What is left of the mapping before and after
 * the part stays where it was; those take the spares. */
static void *dax_mremap(struct dax_map *m, uintptr_t start, size_t old_len, size_t new_len, int flags, void *target,
			struct dax_map **spares)
{
	uintptr_t end = page_end(start, old_len);
	struct dax_map whole = *m;
	uint64_t offset = whole.offset + (start - whole.start);
	void *area = NULL, *p;

	if (end > whole.end)
		return fail(EFAULT);
	if ((flags & MREMAP_DONTUNMAP) || (start > whole.start && start % whole.align) ||
	    (end < whole.end && end % whole.align))
		return fail(EINVAL);
	if (check_vma(1, 1, (flags & MREMAP_FIXED) ? (uintptr_t)target : 0, new_len, offset, whole.align))
		return fail(EINVAL);
	if ((flags & MREMAP_MAYMOVE) && !(flags & MREMAP_FIXED) && new_len > old_len) {
		/* where it may move, as dax_get_unmapped_area would place it */
		area = REAL(mmap)(NULL, new_len + whole.align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
				  -1, 0);
		if (area == MAP_FAILED)
			return area;
		target = (void *)(((uintptr_t)area + whole.align - 1) & ~(uintptr_t)(whole.align - 1));
		flags |= MREMAP_FIXED;
	}
	p = REAL(mremap)((void *)start, old_len, new_len, flags, target);
	if (area) {
		int err = errno;
		uintptr_t t = (uintptr_t)target;

		if (p == MAP_FAILED)
			REAL(munmap)(area, new_len + whole.align);
		else {
			if (t > (uintptr_t)area)
				REAL(munmap)(area, t - (uintptr_t)area);
			if ((uintptr_t)area + whole.align > t)
				REAL(munmap)((void *)(t + new_len), (uintptr_t)area + whole.align - t);
		}
		errno = err;
	}
	if (p == MAP_FAILED)
		return p;
	if (start > whole.start)
		add(*spares++, whole.minor, whole.start, start, whole.align, whole.offset, whole.prot, whole.grant);
	if (end < whole.end)
		add(*spares++, whole.minor, end, whole.end, whole.align, whole.offset + (end - whole.start), whole.prot,
		    whole.grant);
	m->offset = offset;
	m->start = (uintptr_t)p;
	m->end = (uintptr_t)p + new_len;
	return p;
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	uintptr_t start = (uintptr_t)old;
	struct dax_map *claimed[MOST], *spares[2] = {0};
	struct cutting over;
	void *target = NULL, *p = MAP_FAILED;
	int k, cutting_over = 0;

	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		target = va_arg(ap, void *);
		va_end(ap);
	}
	resolve_all();
	if (!__atomic_load_n(&live, __ATOMIC_ACQUIRE))
		return REAL(mremap)(old, old_len, new_len, flags, target);
	pthread_mutex_lock(&lock);
	if (flags & MREMAP_FIXED) {  /* it unmaps what it moves over: device mappings there are cut */
		uintptr_t t = (uintptr_t)target, t_end = page_end(t, new_len);

		if (t < page_end(start, old_len) && start < t_end)
			p = fail(EINVAL);  /* onto itself, as the kernel refuses */
		else if (cut_begin(&over, t, t_end) < 0)
			p = MAP_FAILED;
		else
			cutting_over = 1;
		if (!cutting_over) {
			pthread_mutex_unlock(&lock);
			return p;
		}
	}
	k = claim_range(start, page_end(start, old_len ? old_len : 1), claimed);
	if (k == 0)
		p = REAL(mremap)(old, old_len, new_len, flags, target);
	else if (k > 1 || !old_len)
		p = fail(EINVAL);  /* across mappings, or a copy of one (old size 0) */
	else if (claimed[0]->start > start)
		p = fail(EFAULT);  /* from outside it into it, as from one VMA into the next */
	else if (reserve(spares, 2) < 0)
		p = fail(ENOMEM);
	else {
		p = dax_mremap(claimed[0], start, old_len, new_len, flags, target, spares);
		unreserve(spares, 2);
	}
	while (k > 0)
		map_release(claimed[--k]);
	if (cutting_over)
		cut_end(&over, (uintptr_t)target, page_end((uintptr_t)target, new_len), -1, p != MAP_FAILED);
	pthread_mutex_unlock(&lock);
	return p;
}
