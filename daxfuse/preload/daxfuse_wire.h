/*
 * What the personality library and the daemon send each other, defined
 * once: the library includes this file, and the daemon reads its constants
 * and structures from it (daxfuse/views/wire.py).
 *
 * The direct-mapping protocol (daxfuse/daemon/direct.py):
 *
 * One SOCK_SEQPACKET connection per request, to the mount's socket (in the
 * daemon's run directory, mode 0700): one request, one reply, closed. The
 * daemon learns who asks from the kernel (SO_PEERCRED, a pidfd), never from
 * the request, and takes no fd from it (SO_PASSRIGHTS off).
 *
 * A reply with status 0 is followed by npoison ranges and comes with two
 * fds: the device's window (its memory, nothing else, opened for reading or
 * also for writing as asked) and the table. The table is read-only and
 * shared: a word per minor, (gen << 1) | alive, where gen names the
 * device's window (0: none) and changes whenever it opens or closes.
 */
#ifndef DAXFUSE_WIRE_H
#define DAXFUSE_WIRE_H
#include <stdint.h>

#define DAXFUSE_WIRE_MAGIC 0x3165737566786164ULL /* "daxfuse1" */
#define DAXFUSE_OP_MAP 1        /* fd: the device, as this process opened it */
#define DAXFUSE_OP_REVIVE 2     /* minor, serial, token: a device mapped before */
#define DAXFUSE_STATUS_FUSE (-1) /* no direct mapping of it for this process: map the FUSE file */
#define DAXFUSE_TOKEN_SIZE 32
#define DAXFUSE_MAX_POISON 1024 /* more poisoned ranges than this: through FUSE */

struct daxfuse_request {
	uint64_t magic;
	uint32_t op;
	int32_t fd;
	uint64_t minor;
	uint64_t serial;
	uint32_t write;
	uint32_t reserved;
	uint8_t token[DAXFUSE_TOKEN_SIZE];
};

struct daxfuse_reply {
	uint64_t magic;
	int32_t status; /* 0, an errno, or DAXFUSE_STATUS_FUSE */
	uint32_t npoison;
	uint64_t minor;
	uint64_t serial; /* the dax_device's: never reused, where the minor is */
	uint64_t gen;
	uint64_t align;
	uint64_t size;
	uint8_t token[DAXFUSE_TOKEN_SIZE]; /* proves this grant when the mapping is revived */
};

/* A poisoned range of the device, in bytes from its start. */
struct daxfuse_range {
	uint64_t offset;
	uint64_t length;
};

/*
 * /dev/ndctl0's ioctls (daxfuse/views/ars.py): the library writes the command's
 * number (u32) and its payload to the node, and reads the payload back as
 * the kernel would have left it. ND_IOCTL_CALL and ARS_STATUS carry more
 * than _IOC_SIZE says.
 */
#define DAXFUSE_ND_ARS_CAP 1
#define DAXFUSE_ND_ARS_START 2
#define DAXFUSE_ND_ARS_STATUS 3
#define DAXFUSE_ND_CLEAR_ERROR 4
#define DAXFUSE_ND_CALL 10
#define DAXFUSE_ND_PKG_HEAD 64 /* struct nd_cmd_pkg before its payload; in_length at 16, out_length at 20 */
#define DAXFUSE_ND_ARS_STATUS_SIZE 1584 /* its head (48) and 64 records of 24: the max_ars_out of ARS_CAP */

/*
 * /dev/nmem0's (daxfuse/views/labels.py), in the same form: the DIMM's label
 * storage area. GET_CONFIG_DATA is {u32 in_offset, in_length, status; u8
 * data[in_length]}, SET_CONFIG_DATA {u32 in_offset, in_length; u8
 * data[in_length]; u32 status}: in_length at 4 in both, at most MAX_XFER
 * (GET_CONFIG_SIZE's max_xfer), as ndctl reads and writes labels.
 */
#define DAXFUSE_ND_GET_CONFIG_SIZE 4
#define DAXFUSE_ND_GET_CONFIG_DATA 5
#define DAXFUSE_ND_SET_CONFIG_DATA 6
#define DAXFUSE_ND_CONFIG_HEAD 12
#define DAXFUSE_ND_MAX_XFER 4096

/*
 * /dev/cxl/memN's (daxfuse/views/cxl_mem.py), in the same form: the CXL
 * memdev's mailbox (include/uapi/linux/cxl_mem.h). QUERY_COMMANDS carries
 * {u32 n_commands, rsvd; {u32 id, flags, size_in, size_out}[n_commands]}.
 * SEND_COMMAND's struct (48 bytes) holds pointers: the library sends the
 * struct, then in.size bytes of input, then out.size bytes of room for the
 * output (each at most PAYLOAD_MAX); it reads the same back, and copies the
 * output, out.size and retval to the caller's.
 */
#define DAXFUSE_CXL_QUERY_COMMANDS 1
#define DAXFUSE_CXL_SEND_COMMAND 2
#define DAXFUSE_CXL_QUERY_HEAD 8
#define DAXFUSE_CXL_COMMAND_INFO 16
#define DAXFUSE_CXL_SEND_SIZE 48 /* in.size at 16, in.payload at 24, out.size at 32, out.payload at 40 */
#define DAXFUSE_CXL_PAYLOAD_MAX 4096

#endif
