/*
 * The kernel's device-dax mmap rules, seen from a C program, after ndctl's
 * test/device-dax.c and test/dax-pmd.c:  device_dax DEVICE CONTROL NAME
 * It runs inside `daxfuse exec` with the personality; CONTROL and NAME let
 * it disable and enable its own device. Prints a line per check, exits 1 on
 * the first failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif
#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif

#define CHECK(cond, ...)                                   \
	do {                                               \
		int ok_ = (cond);                          \
		printf("%s: ", ok_ ? "ok" : "FAIL");       \
		printf(__VA_ARGS__);                       \
		printf("\n");                              \
		if (!ok_)                                  \
			exit(1);                           \
	} while (0)

static void control(const char *path, const char *command, const char *name)
{
	char line[256];
	int fd = open(path, O_WRONLY);
	int n = snprintf(line, sizeof(line), "%s %s\n", command, name);

	CHECK(fd >= 0 && write(fd, line, n) == n, "%s %s", command, name);
	close(fd);
}

/* How the process touching p ends: 0, or the signal that killed it. */
static int touch_in_child(volatile char *p)
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		p[0] = 1;
		_exit(0);
	}
	waitpid(pid, &status, 0);
	return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

int main(int argc, char **argv)
{
	const char *device = argv[1], *ctl = argv[2], *name = argv[3];
	char path[256], buf[64];
	struct stat st;
	long align, page = sysconf(_SC_PAGESIZE);
	int fd, attr, status;
	char *p, *q;
	size_t len, dio;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 4) {
		fprintf(stderr, "usage: device_dax DEVICE CONTROL NAME\n");
		return 2;
	}
	fd = open(device, O_RDWR);
	CHECK(fd >= 0, "open %s", device);
	CHECK(fstat(fd, &st) == 0 && S_ISCHR(st.st_mode), "a character device");
	snprintf(path, sizeof(path), "/sys/dev/char/%u:%u/align", major(st.st_rdev), minor(st.st_rdev));
	attr = open(path, O_RDONLY);
	CHECK(attr >= 0 && read(attr, buf, sizeof(buf)) > 0, "%s", path);
	close(attr);
	align = strtol(buf, NULL, 0);
	len = align > page ? 2 * align : 16 * page;
	dio = len / 2;  /* O_DIRECT goes through the second half */
	printf("align %ld\n", align);

	CHECK(read(fd, buf, 1) < 0 && errno == EINVAL, "read() refused with EINVAL");
	CHECK(pwrite(fd, buf, 1, 0) < 0 && errno == EINVAL, "pwrite() refused with EINVAL");
	errno = 0;
	CHECK(mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) == MAP_FAILED && errno == EINVAL,
	      "MAP_PRIVATE refused with EINVAL");
	if (align > page) {
		errno = 0;
		CHECK(mmap(NULL, align + page, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EINVAL,
		      "a length off align refused with EINVAL");
		errno = 0;
		CHECK(mmap(NULL, align, PROT_READ, MAP_SHARED, fd, page) == MAP_FAILED && errno == EINVAL,
		      "an offset off align refused with EINVAL");
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED, "MAP_SHARED accepted");
	CHECK((uintptr_t)p % align == 0, "the address %p is aligned to %ld", p, align);
	q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
	CHECK(q != MAP_FAILED, "MAP_SHARED_VALIDATE|MAP_SYNC accepted");
	if (align > page) {
		errno = 0;
		CHECK(munmap(p + page, page) < 0 && errno == EINVAL, "munmap of a page inside it refused");
		errno = 0;
		CHECK(mprotect(p + page, page, PROT_READ) < 0 && errno == EINVAL, "mprotect of a page inside it refused");
	}

	strcpy(p + 100, "stored through one mapping");
	CHECK(strcmp(q + 100, "stored through one mapping") == 0, "a store is visible at once through a second mapping");

	pid_t pid = fork();
	if (pid == 0) {
		_exit(strcmp(p + 100, "stored through one mapping") == 0 && (strcpy(p + 4096, "from the child"), 1) ? 0 : 1);
	}
	CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "fork: the child sees the parent's data");
	CHECK(strcmp(p + 4096, "from the child") == 0, "fork: the parent sees the child's store");

	int file = open("device_dax.dio", O_RDWR | O_CREAT | O_DIRECT | O_TRUNC, 0600);
	CHECK(file >= 0, "a file opened O_DIRECT");
	memset(p + dio, 0x5a, 8192);
	CHECK(pwrite(file, p + dio, 8192, 0) == 8192, "O_DIRECT pwrite out of dax memory");
	memset(p + dio, 0, 8192);
	CHECK(pread(file, p + dio, 8192, 0) == 8192 && p[dio] == 0x5a && p[dio + 8191] == 0x5a,
	      "O_DIRECT pread into dax memory");
	close(file);
	unlink("device_dax.dio");

	control(ctl, "disable-device", name);
	CHECK(touch_in_child(p) == SIGBUS, "disabled while mapped: the next access raises SIGBUS");
	errno = 0;
	CHECK(mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == ENXIO,
	      "mmap of a disabled device refused with ENXIO");
	control(ctl, "enable-device", name);
	munmap(q, len);
	q = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(q != MAP_FAILED && strcmp(q + 100, "stored through one mapping") == 0
	      && strcmp(q + 4096, "from the child") == 0 && q[dio] == 0x5a,
	      "after enable, the data is intact");
	printf("all checks passed\n");
	return 0;
}
