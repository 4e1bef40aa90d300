/*
 * /dev/ndctl0 and /dev/nmem0: the NVDIMM bus's and the DIMM's ioctls,
 * answered by the daemon, in the form daxfuse_wire.h gives (node_ask, which
 * the CXL memdevs' ioctls use too).
 */
#include "preload.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define ND_IOCTL_MAX_BUFLEN (4 << 20) /* the kernel's bound on a command's buffer */

DECLARE(ssize_t, pwrite, int, const void *, size_t, off_t);
DECLARE(ssize_t, pread, int, void *, size_t, off_t);

/* The payload of command nr on a node of kind, which may carry more than
 * _IOC_SIZE says; SIZE_MAX for one the wire cannot carry. */
static size_t payload_size(int kind, unsigned int nr, const char *arg, unsigned int size)
{
	uint32_t in, out;

	if (nr == DAXFUSE_ND_CALL) {
		memcpy(&in, arg + 16, 4);
		memcpy(&out, arg + 20, 4);
		return DAXFUSE_ND_PKG_HEAD + (size_t)in + out;
	}
	if (kind == FD_NDCTL && nr == DAXFUSE_ND_ARS_STATUS)
		return DAXFUSE_ND_ARS_STATUS_SIZE;
	if (kind == FD_NMEM && (nr == DAXFUSE_ND_GET_CONFIG_DATA || nr == DAXFUSE_ND_SET_CONFIG_DATA)) {
		memcpy(&in, arg + 4, 4);
		return in > DAXFUSE_ND_MAX_XFER ? SIZE_MAX : DAXFUSE_ND_CONFIG_HEAD + in;
	}
	return size;
}

int ndctl_ioctl(int fd, int kind, unsigned int request, void *arg)
{
	unsigned int nr = _IOC_NR(request);
	size_t size;

	if (_IOC_TYPE(request) != 'N') {
		errno = ENOTTY;
		return -1;
	}
	size = payload_size(kind, nr, arg, _IOC_SIZE(request));
	if (size > ND_IOCTL_MAX_BUFLEN) {
		errno = EINVAL;
		return -1;
	}
	return node_ask(fd, nr, arg, size);
}

/* One request to a bus node (nr, then len bytes of buf) and its reply, back into buf. */
int node_ask(int fd, uint32_t nr, void *buf, size_t len)
{
	char *req = malloc(4 + len);
	int rc = 0;

	if (!req) {
		errno = ENOMEM;
		return -1;
	}
	memcpy(req, &nr, 4);
	memcpy(req + 4, buf, len);
	RESOLVE(pwrite);
	RESOLVE(pread);
	if (REAL(pwrite)(fd, req, 4 + len, 0) < 0 || REAL(pread)(fd, buf, len, 0) < 0)
		rc = -1;
	free(req);
	return rc;
}
