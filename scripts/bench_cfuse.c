/* The baseline scripts/bench compares daxfuse with: a minimal single-threaded
 * C libfuse (low-level API) daemon with default settings, serving one file,
 * MOUNT/data, from the file given (pread + fuse_reply_buf, pwrite; page cache
 * on, write-through as libfuse's default).
 *   bench_cfuse FILE MOUNTPOINT   (foreground; unmount to stop) */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int backing;
static off_t backing_size;
static const char name[] = "data";

static void fill(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0600;
		st->st_nlink = 1;
		st->st_size = backing_size;
	}
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *n)
{
	struct fuse_entry_param e = { .ino = 2, .attr_timeout = 10, .entry_timeout = 10 };

	if (parent != FUSE_ROOT_ID || strcmp(n, name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill(2, &e.attr);
	fuse_reply_entry(req, &e);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill(ino, &st);
	fuse_reply_attr(req, &st, 10);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	static char buf[1 << 20];
	ssize_t n;

	(void)ino;
	(void)fi;
	n = pread(backing, buf, size < sizeof(buf) ? size : sizeof(buf), off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, n);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
		     off_t off, struct fuse_file_info *fi)
{
	ssize_t n;

	(void)ino;
	(void)fi;
	n = pwrite(backing, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, n);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup, .getattr = op_getattr, .open = op_open, .read = op_read,
	.write = op_write,
};

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se;
	struct stat st;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: %s FILE MOUNTPOINT\n", argv[0]);
		return 2;
	}
	backing = open(argv[1], O_RDWR);
	if (backing < 0 || fstat(backing, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	backing_size = st.st_size;
	fuse_opt_add_arg(&args, argv[0]);
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se || fuse_session_mount(se, argv[2]))
		return 1;
	rc = fuse_session_loop(se);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	return rc ? 1 : 0;
}
