/*
 * /dev/cxl/memN: a CXL memdev's mailbox ioctls, answered by the daemon in
 * the form daxfuse_wire.h gives. SEND_COMMAND's payloads are pointers into
 * this process: they are copied out to the daemon and back, never passed.
 */
#include "preload.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#define CXL_MEM_QUERY_COMMANDS _IOR(0xCE, 1, char[DAXFUSE_CXL_QUERY_HEAD])
#define CXL_MEM_SEND_COMMAND _IOWR(0xCE, 2, char[DAXFUSE_CXL_SEND_SIZE])
#define CXL_MAX_QUERY 4096 /* entries asked for at once: far more than the kernel's table */

static int query(int fd, char *arg)
{
	uint32_t n;

	memcpy(&n, arg, 4);
	if (n > CXL_MAX_QUERY) {
		loud("CXL_MEM_QUERY_COMMANDS of %u entries: at most %u here", n, CXL_MAX_QUERY);
		errno = EINVAL;
		return -1;
	}
	return node_ask(fd, DAXFUSE_CXL_QUERY_COMMANDS, arg, DAXFUSE_CXL_QUERY_HEAD + (size_t)n * DAXFUSE_CXL_COMMAND_INFO);
}

/* len bytes between this process's buffer and a pointer the caller gave,
 * as copy_from_user and copy_to_user: EFAULT, not a SIGSEGV, for a bad one. */
static int copy_user(void *buf, uint64_t user, size_t len, int to_user)
{
	struct iovec local = { buf, len }, remote = { (void *)(uintptr_t)user, len };
	ssize_t n;

	if (!len)
		return 0;
	n = to_user ? process_vm_writev(getpid(), &local, 1, &remote, 1, 0)
		    : process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	if (n != (ssize_t)len) {
		errno = EFAULT;
		return -1;
	}
	return 0;
}

static int send_command(int fd, char *arg)
{
	uint32_t in_size, out_size, retval;
	uint64_t in_ptr, out_ptr;
	size_t len;
	char *buf;
	int rc;

	memcpy(&in_size, arg + 16, 4);
	memcpy(&in_ptr, arg + 24, 8);
	memcpy(&out_size, arg + 32, 4);
	memcpy(&out_ptr, arg + 40, 8);
	if (in_size > DAXFUSE_CXL_PAYLOAD_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (out_size > DAXFUSE_CXL_PAYLOAD_MAX)
		out_size = DAXFUSE_CXL_PAYLOAD_MAX;  /* the mailbox returns no more */
	len = DAXFUSE_CXL_SEND_SIZE + in_size + out_size;
	buf = calloc(1, len);
	if (!buf) {
		errno = ENOMEM;
		return -1;
	}
	memcpy(buf, arg, DAXFUSE_CXL_SEND_SIZE);
	memcpy(buf + 32, &out_size, 4);
	rc = copy_user(buf + DAXFUSE_CXL_SEND_SIZE, in_ptr, in_size, 0);
	if (rc == 0)
		rc = node_ask(fd, DAXFUSE_CXL_SEND_COMMAND, buf, len);
	if (rc == 0) {
		memcpy(&retval, buf + 12, 4);
		memcpy(&out_size, buf + 32, 4);
		if (out_size > len - DAXFUSE_CXL_SEND_SIZE - in_size) {
			loud("CXL_MEM_SEND_COMMAND: the daemon answered %u bytes", out_size);
			errno = EIO;
			rc = -1;
		} else if ((rc = copy_user(buf + DAXFUSE_CXL_SEND_SIZE + in_size, out_ptr, out_size, 1)) == 0) {
			memcpy(arg + 12, &retval, 4);
			memcpy(arg + 32, &out_size, 4);
		}
	}
	free(buf);
	return rc;
}

int cxl_ioctl(int fd, unsigned int request, void *arg)
{
	if (request == (unsigned int)CXL_MEM_QUERY_COMMANDS)
		return query(fd, arg);
	if (request == (unsigned int)CXL_MEM_SEND_COMMAND)
		return send_command(fd, arg);
	errno = ENOTTY;
	return -1;
}
