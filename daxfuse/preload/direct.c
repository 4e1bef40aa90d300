/*
 * Direct mappings: under the personality a mapping of a device maps the
 * device's window, a file of the daemon's holding that device's memory and
 * nothing else (daxfuse/memory/window.py), at memory speed. The daemon
 * grants it over the mount's socket (daxfuse/daemon/direct.py, the wire format in
 * daxfuse_wire.h) and revokes it by truncating the window: every mapping of
 * it faults, in any process, whatever that process does.
 *
 * A grant's window is kept mapped PROT_NONE (its cache): later mappings of
 * the device copy that mapping (mremap from an old size of 0) while the
 * daemon's table says the window is current, with no request and no fd.
 * Between calls the library holds no fd: the socket is one per request.
 * Everything here may run in a SIGBUS handler (direct_revive): no malloc,
 * no lock, no stdio.
 */
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

DECLARE(void *, mmap, void *, size_t, int, int, int, off_t);
DECLARE(int, munmap, void *, size_t);
DECLARE(int, mprotect, void *, size_t, int);
DECLARE(void *, mremap, void *, size_t, size_t, int, ...);
DECLARE(int, close, int);
DECLARE(ssize_t, readlink, const char *, char *, size_t);

static struct table grants = {sizeof(struct grant), "direct mappings' grants", 0, {0}};
static const volatile uint64_t *words;  /* the daemon's table: (gen << 1) | alive per minor */
static unsigned long nwords;
static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static socklen_t addr_len;

struct grant *grant_at(long i)
{
	return table_at(&grants, i);
}

static void resolve_all(void)
{
	RESOLVE(mmap);
	RESOLVE(munmap);
	RESOLVE(mprotect);
	RESOLVE(mremap);
	RESOLVE(close);
	RESOLVE(readlink);
}

int direct_alive(long minor)
{
	return words && (unsigned long)minor < nwords ? (int)(words[minor] & 1) : -1;
}

uint64_t direct_gen(long minor)
{
	return words && (unsigned long)minor < nwords ? words[minor] >> 1 : 0;
}

/* The daemon's socket: where <mount>/.direct points (read once, outside
 * any signal handler: a revival follows a grant). */
static int find_socket(void)
{
	char link[PATH_MAX + 16];
	ssize_t n;

	if (addr_len)
		return 0;
	snprintf(link, sizeof(link), "%s/.direct", cfg.mount);
	n = REAL(readlink)(link, addr.sun_path, sizeof(addr.sun_path) - 1);
	if (n <= 0) {
		debug("no direct mappings: %s: %s", link, strerror(errno));
		return -1;
	}
	addr.sun_path[n] = 0;
	addr_len = offsetof(struct sockaddr_un, sun_path) + n + 1;
	return 0;
}

/* One request and its reply, on a connection of its own; the reply's fds
 * in fds (-1 where none came). poison receives the poisoned ranges. */
static int ask(const struct daxfuse_request *req, struct daxfuse_reply *rep, struct daxfuse_range *poison,
	       int fds[2])
{
	struct iovec iov[2] = {{rep, sizeof(*rep)}, {poison, DAXFUSE_MAX_POISON * sizeof(*poison)}};
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} cbuf;
	struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf)};
	struct cmsghdr *c;
	ssize_t n;
	int s, rc = -1;

	fds[0] = fds[1] = -1;
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	if (connect(s, (struct sockaddr *)&addr, addr_len) == 0 && send(s, req, sizeof(*req), MSG_NOSIGNAL) == sizeof(*req)) {
		do
			n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
		while (n < 0 && errno == EINTR);
		for (c = CMSG_FIRSTHDR(&msg); n > 0 && c; c = CMSG_NXTHDR(&msg, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
				memcpy(fds, CMSG_DATA(c), c->cmsg_len - CMSG_LEN(0) < 2 * sizeof(int) ?
				       c->cmsg_len - CMSG_LEN(0) : 2 * sizeof(int));
		if (n >= (ssize_t)sizeof(*rep) && rep->magic == DAXFUSE_WIRE_MAGIC &&
		    (size_t)n == sizeof(*rep) + rep->npoison * sizeof(*poison) && rep->npoison <= DAXFUSE_MAX_POISON)
			rc = 0;
	}
	REAL(close)(s);
	if (rc == 0 && rep->status == 0 && (fds[0] < 0 || fds[1] < 0))
		rc = -1;
	if (rc < 0) {
		if (fds[0] >= 0)
			REAL(close)(fds[0]);
		if (fds[1] >= 0)
			REAL(close)(fds[1]);
		fds[0] = fds[1] = -1;
	}
	return rc;
}

/* A grant from a reply: its window kept mapped (the cache), the table mapped
 * once. The fds stay the caller's. -1: the table is full, or mmap failed. */
static long record(const struct daxfuse_reply *rep, const struct daxfuse_range *poison, int fds[2], int write)
{
	size_t bytes = rep->npoison * sizeof(*poison);
	long i = table_add(&grants);
	struct grant *g;
	void *cache, *list = NULL;

	if (i < 0)
		return -1;
	if (!words) {  /* mapped once: children inherit it, exec drops it */
		struct stat st;
		const void *t;

		if (fstat(fds[1], &st) == 0 && (t = REAL(mmap)(NULL, st.st_size, PROT_READ, MAP_SHARED, fds[1], 0)) != MAP_FAILED) {
			nwords = st.st_size / 8;
			__atomic_store_n(&words, (const volatile uint64_t *)t, __ATOMIC_RELEASE);
		}
	}
	cache = REAL(mmap)(NULL, rep->size + rep->align, PROT_NONE, MAP_SHARED, fds[0], 0);
	if (cache == MAP_FAILED)
		return -1;
	if (bytes) {
		list = REAL(mmap)(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (list == MAP_FAILED) {
			REAL(munmap)(cache, rep->size + rep->align);
			return -1;
		}
		memcpy(list, poison, bytes);
	}
	g = grant_at(i);
	*g = (struct grant){0, rep->minor, rep->serial, rep->gen, rep->align, rep->size, write, {0},
			    (uintptr_t)cache, rep->npoison, list};
	memcpy(g->token, rep->token, sizeof(g->token));
	return i;
}

/* A grant for a mapping of device minor (fd: as this process opened it):
 * 1 with *index set, 0 to map the FUSE file instead, -1 refused (errno).
 * A grant made now (fresh, or none current to reuse) comes with its window
 * in *window, for the caller to map and close; a grant reused, -1 there. */
int direct_grant(int fd, long minor, int write, int fresh, long *index, int *window)
{
	struct daxfuse_request req;
	struct daxfuse_reply rep;
	static struct daxfuse_range poison[DAXFUSE_MAX_POISON];  /* under the mappings' lock */
	unsigned long i;
	int fds[2];

	resolve_all();
	*window = -1;
	if (!cfg.direct)
		return 0;
	for (i = 0; !fresh && i < table_count(&grants); i++) {  /* a window mapped before, still current */
		struct grant *g = grant_at(i);

		if (!g->retired && g->minor == minor && g->write == write && direct_alive(minor) == 1 &&
		    g->gen == direct_gen(minor)) {
			*index = i;
			return 1;
		}
	}
	if (find_socket() < 0)
		return 0;
	memset(&req, 0, sizeof(req));
	req.magic = DAXFUSE_WIRE_MAGIC;
	req.op = DAXFUSE_OP_MAP;
	req.fd = fd;
	req.write = write;
	if (ask(&req, &rep, poison, fds) < 0) {
		debug("no grant for minor %ld: the daemon did not answer", minor);
		return 0;
	}
	if (rep.status) {
		debug("minor %ld: the daemon says %s", minor, rep.status == DAXFUSE_STATUS_FUSE ? "through FUSE" :
		      strerror(rep.status));
		if (rep.status == DAXFUSE_STATUS_FUSE)
			return 0;
		errno = rep.status;
		return -1;
	}
	*index = record(&rep, poison, fds, write);
	REAL(close)(fds[1]);
	if (*index < 0) {
		REAL(close)(fds[0]);
		errno = ENOMEM;
		return -1;
	}
	*window = fds[0];
	for (i = 0; i < (unsigned long)*index; i++) {  /* older grants of it: their caches go */
		struct grant *g = grant_at(i);

		if (g->minor == minor && g->write == write)
			__atomic_store_n(&g->retired, 1, __ATOMIC_RELEASE);
	}
	debug("minor %ld: window %llu granted for %s", minor, (unsigned long long)rep.gen, write ? "writing" : "reading");
	return 1;
}

/* Poisoned pages of [start, start + len) at device offset offset, mapped from
 * past the window's end (any access raises SIGBUS), rounded out to base
 * pages (not to the align: device-dax maps a page holding poison as any
 * other, and only the poisoned lines fault): from the window fd when given,
 * else copied from the cache's tail. */
static int poison_holes(const struct grant *g, uintptr_t start, size_t len, uint64_t offset, int prot, int fd)
{
	uint32_t i;

	for (i = 0; i < g->npoison; i++) {
		uint64_t lo = g->poison[i].offset & ~(POISON_PAGE - 1);
		uint64_t hi = (g->poison[i].offset + g->poison[i].length + POISON_PAGE - 1) & ~(POISON_PAGE - 1);
		void *p;

		if (lo < offset)
			lo = offset;
		if (hi > offset + len)
			hi = offset + len;
		if (lo >= hi)
			continue;
		if (fd >= 0)
			p = REAL(mmap)((void *)(start + lo - offset), hi - lo, prot, MAP_SHARED | MAP_FIXED, fd,
				       g->size + g->align);
		else
			p = REAL(mremap)((void *)(g->cache + g->size), 0, hi - lo, MREMAP_MAYMOVE | MREMAP_FIXED,
					 (void *)(start + lo - offset));
		if (p == MAP_FAILED || (fd < 0 && REAL(mprotect)(p, hi - lo, prot)))
			return -1;
	}
	return 0;
}

/* Map [start, start + len) from grant i at device offset offset, over what
 * is there: from its window fd when given, else copied from the cache (an
 * mremap from an old size of 0, which valgrind, for one, refuses: -1),
 * made whole aside and then moved into place, so that no thread ever sees
 * the range half made. */
int direct_map(long i, uintptr_t start, size_t len, uint64_t offset, int prot, int fd)
{
	struct grant *g = grant_at(i);
	uint64_t from = offset < g->size ? offset : g->size;  /* past the end: the tail, as SIGBUS-y */
	void *p;

	if (fd >= 0) {
		p = REAL(mmap)((void *)start, len, prot, MAP_SHARED | MAP_FIXED, fd, offset);
		return p == MAP_FAILED ? -1 : poison_holes(g, start, len, offset, prot, fd);
	}
	p = REAL(mremap)((void *)(g->cache + from), 0, len, MREMAP_MAYMOVE);
	if (p == MAP_FAILED)
		return -1;
	if (REAL(mprotect)(p, len, prot) || poison_holes(g, (uintptr_t)p, len, offset, prot, -1) ||
	    REAL(mremap)(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)start) == MAP_FAILED) {
		REAL(munmap)(p, len);
		return -1;
	}
	return 0;
}

/* One base page of grant i at page, device offset offset: its data
 * (hole 0: for a step over clean bytes of a poisoned page, sigbus.c) or a
 * hole again (hole 1), copied from the cache. Safe in a signal handler. */
int direct_page(long i, uintptr_t page, uint64_t offset, int prot, int hole)
{
	struct grant *g = grant_at(i);
	uintptr_t cache = __atomic_load_n(&g->cache, __ATOMIC_ACQUIRE);
	void *p;

	if (!cache || offset >= g->size)
		return -1;
	p = REAL(mremap)((void *)(cache + (hole ? g->size : offset)), 0, POISON_PAGE, MREMAP_MAYMOVE | MREMAP_FIXED,
			 (void *)page);
	return p == MAP_FAILED || REAL(mprotect)(p, POISON_PAGE, prot) ? -1 : 0;
}

/*
 * A SIGBUS in a direct mapping of grant i, whose window has closed: map the
 * device again if it is alive, data and all, as the kernel's device-dax
 * faults a mapping in again once the device is bound. From a newer grant of
 * the same device if this process has one, else from a new one the daemon
 * gives for the old one's token, whose window then comes in *window (the
 * caller maps and closes it). The new grant's index, or -1 (the fault
 * stands: SIGBUS).
 */
long direct_revive(long i, int *window)
{
	struct grant *old = grant_at(i);
	struct daxfuse_request req;
	struct daxfuse_reply rep;
	struct daxfuse_range *poison;
	unsigned long j, n = table_count(&grants);
	long fresh = -1;
	int fds[2];

	*window = -1;
	if (direct_alive(old->minor) != 1)
		return -1;
	for (j = 0; j < n; j++) {
		struct grant *g = grant_at(j);

		if (g->serial == old->serial && g->write == old->write && g->gen == direct_gen(old->minor) &&
		    !__atomic_load_n(&g->retired, __ATOMIC_ACQUIRE))
			return j;
	}
	poison = REAL(mmap)(NULL, DAXFUSE_MAX_POISON * sizeof(*poison), PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (poison == MAP_FAILED)
		return -1;
	memset(&req, 0, sizeof(req));
	req.magic = DAXFUSE_WIRE_MAGIC;
	req.op = DAXFUSE_OP_REVIVE;
	req.minor = old->minor;
	req.serial = old->serial;
	req.write = old->write;
	memcpy(req.token, old->token, sizeof(req.token));
	if (ask(&req, &rep, poison, fds) == 0 && rep.status == 0) {
		fresh = record(&rep, poison, fds, old->write);
		REAL(close)(fds[1]);
		if (fresh >= 0)
			*window = fds[0];
		else
			REAL(close)(fds[0]);
	}
	REAL(munmap)(poison, DAXFUSE_MAX_POISON * sizeof(*poison));
	return fresh;
}

/* Older grants' caches go (under the mappings' lock, outside handlers). */
void direct_tidy(void)
{
	unsigned long i;

	for (i = 0; i < table_count(&grants); i++) {
		struct grant *g = grant_at(i);

		if (__atomic_load_n(&g->retired, __ATOMIC_ACQUIRE) == 1 && g->cache) {
			REAL(munmap)((void *)g->cache, g->size + g->align);
			g->cache = 0;
		}
	}
}
