/*
 * Every stat entry point the personality wraps, on an emulated device by
 * several names, and on files that must pass through untouched:
 *   stat_family DEVICE MAJOR MINOR
 * Prints a line per check, exits 1 on the first failure.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static unsigned want_major, want_minor;

static void check(const char *what, int rc, mode_t mode, dev_t rdev, off_t size)
{
	int ok = rc == 0 && S_ISCHR(mode) && major(rdev) == want_major && minor(rdev) == want_minor && size == 0;

	printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	if (!ok)
		exit(1);
}

/* the call first, then its result: argument order is unspecified in C */
#define CHECK(what, call, s)                                               \
	do {                                                               \
		int rc_ = (call);                                          \
		check(what, rc_, (s).st_mode, (s).st_rdev, (s).st_size);   \
	} while (0)

typedef int (*xstat_fn)(int, const char *, struct stat64 *);
typedef int (*fxstat_fn)(int, int, struct stat64 *);
typedef int (*fxstatat_fn)(int, int, const char *, struct stat64 *, int);

int main(int argc, char **argv)
{
	const char *dev = argv[1];
	char byfd[64], dir[4096], *slash;
	struct stat st;
	struct stat64 st64;
	struct statx stx;
	int fd, dirfd;

	if (argc != 4)
		return 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	want_major = atoi(argv[2]);
	want_minor = atoi(argv[3]);
	fd = open(dev, O_RDONLY);
	snprintf(byfd, sizeof(byfd), "/proc/self/fd/%d", fd);
	snprintf(dir, sizeof(dir), "%s", dev);
	slash = strrchr(dir, '/');
	*slash = 0;
	dirfd = open(dir, O_RDONLY | O_DIRECTORY);

	CHECK("stat", stat(dev, &st), st);
	CHECK("stat64", stat64(dev, &st64), st64);
	CHECK("lstat", lstat(dev, &st), st);
	CHECK("lstat64", lstat64(dev, &st64), st64);
	CHECK("fstat", fstat(fd, &st), st);
	CHECK("fstat64", fstat64(fd, &st64), st64);
	CHECK("fstatat", fstatat(dirfd, slash + 1, &st, 0), st);
	CHECK("fstatat64", fstatat64(dirfd, slash + 1, &st64, 0), st64);
	CHECK("fstatat AT_EMPTY_PATH", fstatat(fd, "", &st, AT_EMPTY_PATH), st);
	int rc = statx(AT_FDCWD, dev, 0, STATX_BASIC_STATS, &stx);
	check("statx", rc, stx.stx_mode, makedev(stx.stx_rdev_major, stx.stx_rdev_minor), stx.stx_size);
	CHECK("stat of /proc/self/fd/N", stat(byfd, &st), st);
	chdir(dir);
	CHECK("stat of a relative path", stat(slash + 1, &st), st);

	/* the entry points of binaries built before glibc 2.33, as they find them */
	xstat_fn xstat = (xstat_fn)dlsym(RTLD_DEFAULT, "__xstat");
	xstat_fn lxstat = (xstat_fn)dlsym(RTLD_DEFAULT, "__lxstat64");
	fxstat_fn fxstat = (fxstat_fn)dlsym(RTLD_DEFAULT, "__fxstat");
	fxstatat_fn fxstatat = (fxstatat_fn)dlsym(RTLD_DEFAULT, "__fxstatat64");
	CHECK("__xstat", xstat(1, dev, &st64), st64);
	CHECK("__lxstat64", lxstat(1, dev, &st64), st64);
	CHECK("__fxstat", fxstat(1, fd, &st64), st64);
	CHECK("__fxstatat64", fxstatat(1, dirfd, slash + 1, &st64, 0), st64);

	/* everything else passes through */
	int ok = stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3;
	printf("%s: /dev/null is untouched\n", ok ? "ok" : "FAIL");
	ok = ok && stat(argv[0], &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
	printf("%s: a regular file is untouched\n", ok ? "ok" : "FAIL");
	if (!ok)
		return 1;
	printf("all checks passed\n");
	return 0;
}
