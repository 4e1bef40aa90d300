/*
 * /dev/ndctl0: the NVDIMM bus's ioctls, answered by the daemon. A request
 * goes to the node as the command's number (u32) and its payload; the
 * payload comes back as the kernel would have left it (daxfuse/ars.py).
 * ND_IOCTL_CALL and ARS_STATUS carry more than _IOC_SIZE says.
 */
#include "preload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define ND_IOCTL_ARS_STATUS_NR 3
#define ND_IOCTL_CALL_NR 10
#define ARS_STATUS_SIZE (48 + 64 * 24)  /* the max_ars_out of daxfuse's ARS_CAP */

DECLARE(int, ioctl, int, unsigned long, ...);
DECLARE(ssize_t, pwrite, int, const void *, size_t, off_t);
DECLARE(ssize_t, pread, int, void *, size_t, off_t);

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
