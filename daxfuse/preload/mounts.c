/*
 * The mount table as exec shows it: the host's, plus a debugfs at
 * /sys/kernel/debug and a tracefs at /sys/kernel/tracing where the host has
 * none. Exec's /sys (the emulator's) holds the CXL bus's debugfs there:
 * libcxl 84+ looks its debugfs up in /proc/mounts (setmntent), and cxl 85
 * crashes on a host without one (cxl_dport_get_einj_path). Without a
 * tracefs line libtracefs (cxl list --media-errors) would mount the host
 * kernel's tracefs itself and make trace instances there; with one it finds
 * a directory where it can make none, and says so. Read through fopen and
 * setmntent, as tools read it; the file is the host's, the lines a copy's.
 */
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <mntent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const struct {
	const char *type, *line;
} added[] = {
	{ " debugfs ", "debugfs /sys/kernel/debug debugfs rw,nosuid,nodev,noexec,relatime 0 0\n" },
	{ " tracefs ", "tracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0\n" },
};
#define MOUNTS_MAX (4 << 20) /* a mount table larger than this is passed through as it is */

DECLARE(int, open, const char *, int, ...);
DECLARE(int, close, int);

int is_mount_table(const char *path)
{
	return cfg.active && path &&
	       (!strcmp(path, "/proc/mounts") || !strcmp(path, "/proc/self/mounts") || !strcmp(path, "/etc/mtab"));
}

/* The mount table with the lines it lacks, as a FILE of a memfd; NULL (and
 * the caller opens the real one) where it lacks none, or on any failure. */
FILE *mount_table(const char *mode)
{
	char *buf = malloc(MOUNTS_MAX);
	size_t len = 0, i;
	int fd, out, lacks = 0;
	ssize_t n;
	FILE *f = NULL;

	if (!buf || mode[0] != 'r' || strchr(mode, '+'))
		goto done;
	RESOLVE(open);
	RESOLVE(close);
	fd = REAL(open)("/proc/self/mounts", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		goto done;
	while (len < MOUNTS_MAX - 1 && (n = read(fd, buf + len, MOUNTS_MAX - 1 - len)) > 0)
		len += n;
	REAL(close)(fd);
	buf[len] = 0;
	for (i = 0; i < sizeof(added) / sizeof(added[0]); i++)
		if (!strstr(buf, added[i].type)) {
			lacks = 1;
			if (len + strlen(added[i].line) < MOUNTS_MAX) {
				strcpy(buf + len, added[i].line);
				len += strlen(added[i].line);
			}
		}
	if (!lacks || len >= MOUNTS_MAX - 1)
		goto done;
	out = memfd_create("daxfuse-mounts", MFD_CLOEXEC);
	if (out < 0)
		goto done;
	if (write(out, buf, len) != (ssize_t)len || lseek(out, 0, SEEK_SET) != 0 || !(f = fdopen(out, "r"))) {
		REAL(close)(out);
		f = NULL;
	}
	debug("the mount table with a debugfs and a tracefs under /sys/kernel");
done:
	free(buf);
	return f;
}

DECLARE(FILE *, setmntent, const char *, const char *);

FILE *setmntent(const char *file, const char *mode)
{
	FILE *f = is_mount_table(file) ? mount_table(mode) : NULL;

	RESOLVE(setmntent);
	return f ? f : REAL(setmntent)(file, mode);
}
