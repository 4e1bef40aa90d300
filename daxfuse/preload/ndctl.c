/*
 * /dev/ndctl0: the NVDIMM bus's ioctls, answered by the daemon, in the form
 * daxfuse_wire.h gives.
 */
#include "preload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

DECLARE(ssize_t, pwrite, int, const void *, size_t, off_t);
DECLARE(ssize_t, pread, int, void *, size_t, off_t);

int ndctl_ioctl(int fd, unsigned int request, void *arg)
{
	unsigned int nr = _IOC_NR(request), size = _IOC_SIZE(request);
	char *buf;
	int rc = 0;

	if (_IOC_TYPE(request) != 'N') {
		errno = ENOTTY;
		return -1;
	}
	if (nr == DAXFUSE_ND_CALL) {
		uint32_t in, out;
		memcpy(&in, (char *)arg + 16, 4);
		memcpy(&out, (char *)arg + 20, 4);
		size = DAXFUSE_ND_PKG_HEAD + in + out;
	} else if (nr == DAXFUSE_ND_ARS_STATUS) {
		size = DAXFUSE_ND_ARS_STATUS_SIZE;
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
