/*
 * The settings `daxfuse exec` passes, and the debug channel.
 *
 * DAXFUSE_PERSONALITY="major=M,ino_base=B,ndctl=INO:MAJ:MIN,nmem=INO:MAJ:MIN,cxl=BASE:MAJ,rw=0|1,direct=0|1,mount=/abs/mount"
 * (mount last: the rest of the string, commas and all). A dax device has
 * inode number ino_base + minor; the NVDIMM bus's /dev/ndctl0 and /dev/nmem0 have INO;
 * the CXL bus's /dev/cxl/memN has BASE + N (minor N).
 * DAXFUSE_DEBUG=1 writes what the library does to stderr.
 */
#include "preload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct config cfg;

DECLARE(int, stat64, const char *, struct stat64 *);

static void say(const char *fmt, va_list ap)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "daxfuse[%d]: ", getpid());

	n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	syscall(SYS_write, 2, buf, n);  /* no stdio: any thread, any state */
}

/* What the library does, for a wrapper misbehaving in a user's program. */
void debug(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (!cfg.debug)
		return;
	va_start(ap, fmt);
	say(fmt, ap);
	va_end(ap);
	errno = saved;
}

/* An internal limit reached: always said, and the call fails. */
void loud(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	say(fmt, ap);
	va_end(ap);
	errno = saved;
}

__attribute__((constructor)) static void configure(void)
{
	const char *env = getenv("DAXFUSE_PERSONALITY");
	const char *mount, *dbg = getenv("DAXFUSE_DEBUG");
	struct stat64 st;

	cfg.debug = dbg && *dbg && strcmp(dbg, "0");
	if (!env || !(mount = strstr(env, "mount=")))
		return;
	if (sscanf(env, "major=%u,ino_base=%llu,ndctl=%llu:%u:%u,nmem=%llu:%u:%u,cxl=%llu:%u,rw=%d,direct=%d,", &cfg.major,
		   &cfg.ino_base, &cfg.bus_nodes[0].ino, &cfg.bus_nodes[0].major, &cfg.bus_nodes[0].minor,
		   &cfg.bus_nodes[1].ino, &cfg.bus_nodes[1].major, &cfg.bus_nodes[1].minor, &cfg.cxl_ino_base,
		   &cfg.cxl_major, &cfg.rw, &cfg.direct) != 12) {
		loud("DAXFUSE_PERSONALITY not understood: %s", env);
		return;
	}
	snprintf(cfg.mount, sizeof(cfg.mount), "%s", mount + strlen("mount="));
	RESOLVE(stat64);
	if (REAL(stat64)(cfg.mount, &st) != 0) {
		debug("mount %s: %s", cfg.mount, strerror(errno));
		return;
	}
	cfg.mnt_dev = st.st_dev;
	cfg.active = 1;
	exec_init(env);
	fds_init();
	debug("personality on for %s (direct mappings %s)", cfg.mount, cfg.direct ? "on" : "off");
}
