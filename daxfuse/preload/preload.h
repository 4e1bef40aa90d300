/*
 * The device-dax personality: an LD_PRELOAD library that `daxfuse exec`
 * loads, so that the emulated devices behave where applications look as the
 * kernel's drivers/dax/device.c does. One file per feature:
 *
 *   config.c    the settings daxfuse exec passes; the debug channel
 *   fds.c       which fds are devices: open, dup, close and their kin
 *   stat.c      the stat family: character devices
 *   io.c        no read or write file operations (dax_fops has neither)
 *   fops.c      dax_fops's other answers: lseek, fsync, fallocate,
 *               truncate, splice and sendfile, statfs, ioctl
 *   table.c     growable tables that signal handlers may read
 *   mappings.c  the device mappings this process made: check_vma(),
 *               dax_get_unmapped_area(), dev_dax_may_split(); mmap, munmap,
 *               mprotect, mremap
 *   direct.c    direct mappings: grants of a device's window by the daemon
 *   sigbus.c    SIGBUS: revived mappings, poison as memory failure, and the
 *               program's own handler behind ours
 *   ndctl.c     /dev/ndctl0's and /dev/nmem0's ioctls, answered by the daemon
 *   cxl.c       /dev/cxl/memN's ioctls (the CXL mailbox), answered by the daemon
 *   mounts.c    the mount table with a debugfs, where exec's /sys has the CXL bus's
 *   exec.c      the personality kept across exec, whatever environment
 *               a program gives its child
 *
 * As umockdev's preload library: a wrapper per libc entry point, one macro
 * per wrapper shape, everything that is not an emulated device untouched,
 * loud failure at an internal limit, and a debug channel (DAXFUSE_DEBUG=1).
 * It decides nothing the daemon owns: the mount, the numbering and the char
 * major come from DAXFUSE_PERSONALITY, a device's state from the daemon.
 */
#ifndef DAXFUSE_PRELOAD_H
#define DAXFUSE_PRELOAD_H
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "daxfuse_wire.h"

#define REAL(name) real_##name
#define RESOLVE(name)                                                  \
	do {                                                           \
		if (!REAL(name))                                       \
			REAL(name) = dlsym(RTLD_NEXT, #name);          \
	} while (0)
#define DECLARE(ret, name, ...) static ret (*REAL(name))(__VA_ARGS__)

#define HIDDEN __attribute__((visibility("hidden")))

/* config.c */
struct config {
	int active;
	unsigned major;
	unsigned long long ino_base;
	struct {  /* the NVDIMM bus's nodes, by kind - FD_NDCTL: /dev/ndctl0, /dev/nmem0 */
		unsigned long long ino;
		unsigned major, minor;
	} bus_nodes[2];
	unsigned long long cxl_ino_base;  /* /dev/cxl/memN: inode number cxl_ino_base + N, minor N */
	unsigned cxl_major;
	int rw, direct, debug;
	dev_t mnt_dev;
	char mount[PATH_MAX];
};
extern struct config cfg HIDDEN;
void debug(const char *fmt, ...) HIDDEN __attribute__((format(printf, 1, 2)));
void loud(const char *fmt, ...) HIDDEN __attribute__((format(printf, 1, 2)));

/* fds.c */
enum { FD_OTHER, FD_DAX, FD_NDCTL, FD_NMEM, FD_CXL };
#define CXL_MEMDEVS 65536 /* /dev/cxl/memN's inode numbers: cxl_ino_base + N, N below this */
int fd_kind(int fd) HIDDEN;
int path_kind(const char *path) HIDDEN;
long fd_minor(int fd) HIDDEN;
dev_t chardev_of(dev_t dev, ino_t ino, mode_t mode) HIDDEN;
void fds_init(void) HIDDEN;

/* table.c: entries of a fixed size in chunks mapped as needed, never freed,
 * found by index; a reader (a signal handler too) sees every entry below
 * table_count(). table_add() fails (-1) only past TABLE_CHUNKS chunks. */
#define TABLE_CHUNK 1024
#define TABLE_CHUNKS 1024
struct table {
	size_t entry_size;
	const char *what;
	unsigned long count;
	void *chunks[TABLE_CHUNKS];
};
long table_add(struct table *t) HIDDEN;
void *table_at(struct table *t, unsigned long i) HIDDEN;
unsigned long table_count(struct table *t) HIDDEN;

/* direct.c: a grant of a device's window; what the mapping of a device
 * made from it needs, and what revives it (sigbus.c). A mapping loses the
 * base pages that hold poison (holes, where any access faults); a load or
 * store there that touches no poisoned 512-byte block is stepped over
 * (sigbus.c), as hardware poisons lines, not pages. */
#define POISON_PAGE 4096UL
struct grant {
	int retired;          /* superseded: its cache goes at the next mmap */
	long minor;
	uint64_t serial, gen, align, size;
	int write;
	uint8_t token[DAXFUSE_TOKEN_SIZE];
	uintptr_t cache;      /* the window mapped PROT_NONE, size + align long: new mappings copy it */
	uint32_t npoison;
	struct daxfuse_range *poison;
};
int direct_grant(int fd, long minor, int write, int fresh, long *grant, int *window) HIDDEN;
struct grant *grant_at(long i) HIDDEN;
int direct_map(long grant, uintptr_t start, size_t len, uint64_t offset, int prot, int window) HIDDEN;
int direct_page(long grant, uintptr_t page, uint64_t offset, int prot, int hole) HIDDEN;
long direct_revive(long grant, int *window) HIDDEN;
void direct_tidy(void) HIDDEN;
int direct_alive(long minor) HIDDEN;
uint64_t direct_gen(long minor) HIDDEN;

/* mappings.c: the device mappings of this process */
enum { MAP_FREE, MAP_LIVE, MAP_BUSY };
struct dax_map {
	int state;            /* atomic: a SIGBUS handler and munmap race for it */
	long minor;           /* of the device it maps */
	uintptr_t start, end;
	size_t align;
	uint64_t offset;      /* the device offset at start */
	int prot;
	long grant;           /* direct: the grant it maps (atomic), -1 through FUSE */
};
int check_vma(int alive, int shared, uintptr_t start, size_t len, uint64_t off, size_t align) HIDDEN;
struct dax_map *map_claim_at(uintptr_t addr) HIDDEN;
void map_release(struct dax_map *m) HIDDEN;
int map_remap(struct dax_map *m, long grant, int window) HIDDEN;

/* exec.c */
void exec_init(const char *personality) HIDDEN;

/* ndctl.c */
int ndctl_ioctl(int fd, int kind, unsigned int request, void *arg) HIDDEN;
int node_ask(int fd, uint32_t nr, void *buf, size_t len) HIDDEN;

/* mounts.c */
int is_mount_table(const char *path) HIDDEN;
FILE *mount_table(const char *mode) HIDDEN;

/* cxl.c */
int cxl_ioctl(int fd, unsigned int request, void *arg) HIDDEN;

/* sigbus.c */
void sigbus_install(void) HIDDEN;

#endif
