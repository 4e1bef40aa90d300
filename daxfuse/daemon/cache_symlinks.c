/*
 * Let the kernel keep what a link of the mount points to (FUSE_CAP_CACHE_SYMLINKS),
 * which pyfuse3 cannot ask for: its fuse_init sets the capabilities it knows
 * and no others. daxctl follows a device's links five times per device; with
 * each a READLINK request, `daxctl list` of 1,000 devices costs 1.3 s, 0.9 s
 * without them.
 *
 * Loaded into the daemon (RTLD_GLOBAL, before pyfuse3: daemon/__init__.py),
 * so that pyfuse3's call of fuse_session_new() comes here first: the
 * operations are copied with an init that runs pyfuse3's, then adds the
 * capability where the kernel offers it. The daemon drops a link's cached
 * target with its entry (fuse_ops.py), as a target can change under one
 * name (/sys/dev/char/MAJ:MIN, as minors are reused).
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 34
#include <dlfcn.h>
#include <stddef.h>
#include <fuse3/fuse_lowlevel.h>

static void (*pyfuse3_init)(void *, struct fuse_conn_info *);
static struct fuse_lowlevel_ops ops;

static void init(void *userdata, struct fuse_conn_info *conn)
{
	if (pyfuse3_init)
		pyfuse3_init(userdata, conn);
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
}

struct fuse_session *fuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *op, size_t op_size,
				      void *userdata)
{
	void *lib = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_NOLOAD);
	struct fuse_session *(*real)(struct fuse_args *, const struct fuse_lowlevel_ops *, size_t, void *);

	real = lib ? (__typeof__(real))dlsym(lib, "fuse_session_new") : NULL;
	if (!real)
		return NULL;
	ops = *op;
	pyfuse3_init = ops.init;
	ops.init = init;
	return real(args, &ops, op_size < sizeof(ops) ? op_size : sizeof(ops), userdata);
}
