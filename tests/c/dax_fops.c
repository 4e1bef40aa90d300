/*
 * A device's file calls other than read, write and mmap, answered as the
 * kernel's dax_fops answers them on a character device of devtmpfs:
 *   dax_fops DEVICE
 * The device's first bytes must be "marker" before and after. Prints a line
 * per check, exits 1 on the first failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TMPFS_MAGIC 0x01021994

static void check(const char *what, int ok)
{
	printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	if (!ok)
		exit(1);
}

/* -1 with errno err */
#define FAILS(call, err) ((call) == -1 && errno == (err))

static void marker_intact(const char *dev, const char *when)
{
	int fd = open(dev, O_RDONLY);
	char *p = mmap(NULL, 2 << 20, PROT_READ, MAP_SHARED, fd, 0);  /* the device align */
	char what[128];

	snprintf(what, sizeof(what), "the data is intact %s", when);
	check(what, p != MAP_FAILED && !memcmp(p, "marker", 6));
	munmap(p, 2 << 20);
	close(fd);
}

int main(int argc, char **argv)
{
	const char *dev = argv[1];
	int fd = open(dev, O_RDWR), ro = open(dev, O_RDONLY), pipes[2], plain, reused;
	struct statfs sfs;
	struct statvfs svfs;
	loff_t off = 0;
	FILE *f;

	check("open", fd >= 0 && ro >= 0 && pipe(pipes) == 0);
	plain = open("/proc/self/exe", O_RDONLY);
	marker_intact(dev, "at the start");

	check("lseek SEEK_END is noop_llseek: 0", lseek(fd, 0, SEEK_END) == 0);
	check("lseek SEEK_SET 4096 is noop_llseek: 0", lseek(fd, 4096, SEEK_SET) == 0);
	check("lseek64 SEEK_DATA is noop_llseek: 0", lseek64(fd, 0, SEEK_DATA) == 0);
	check("ftruncate: EINVAL", FAILS(ftruncate(fd, 0), EINVAL));
	check("truncate: EINVAL", FAILS(truncate(dev, 0), EINVAL));
	check("fallocate: ENODEV", FAILS(fallocate(fd, 0, 0, 4096), ENODEV));
	check("fallocate, a bad range first: EINVAL", FAILS(fallocate(fd, 0, 0, 0), EINVAL));
	check("fallocate read-only: EBADF", FAILS(fallocate(ro, 0, 0, 4096), EBADF));
	check("posix_fallocate: ENODEV", posix_fallocate(fd, 0, 4096) == ENODEV);
	check("fsync: EINVAL", FAILS(fsync(fd), EINVAL));
	check("fdatasync: EINVAL", FAILS(fdatasync(fd), EINVAL));
	check("ioctl FIONREAD: ENOTTY", FAILS(ioctl(fd, FIONREAD, &(int){0}), ENOTTY));
	check("ioctl FIOCLEX: the kernel's own", ioctl(fd, FIOCLEX) == 0);
	check("sendfile from a device: EINVAL", FAILS(sendfile(pipes[1], fd, NULL, 4096), EINVAL));
	check("sendfile to a device: EINVAL", FAILS(sendfile(fd, plain, NULL, 4096), EINVAL));
	check("splice from a device: EINVAL", FAILS(splice(fd, &off, pipes[1], NULL, 4096, 0), EINVAL));
	check("copy_file_range: EINVAL", FAILS(copy_file_range(plain, NULL, fd, &off, 4096, 0), EINVAL));
	{
		char *p = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

		check("msync MS_SYNC of a device mapping: EINVAL (no fsync)", p != MAP_FAILED &&
		      FAILS(msync(p, 4096, MS_SYNC), EINVAL));
		check("msync MS_ASYNC: nothing to do", msync(p, 4096, MS_ASYNC) == 0);
		munmap(p, 2 << 20);
	}
	check("fstatfs: devtmpfs, a tmpfs", fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC);
	check("statfs: devtmpfs, a tmpfs", statfs(dev, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC);
	check("statvfs: the same file system", statvfs(dev, &svfs) == 0 && svfs.f_bsize == (unsigned long)sfs.f_bsize);
	{
		struct statfs raw;

		check("statfs of a file elsewhere: the kernel's own answer",
		      statfs("/proc/self/exe", &sfs) == 0 && syscall(SYS_statfs, "/proc/self/exe", &raw) == 0 &&
		      sfs.f_type == raw.f_type && sfs.f_blocks == raw.f_blocks);
	}

	close(fd);
	fd = open(dev, O_RDWR | O_TRUNC);
	check("O_TRUNC is ignored on a character device", fd >= 0);
	close(fd);
	f = fopen(dev, "w");
	check("fopen \"w\" opens it, without truncating", f != NULL);
	fclose(f);
	marker_intact(dev, "after O_TRUNC and fopen \"w\"");

	/* a pipe that takes the number of a device fd closed behind libc's back */
	fd = open(dev, O_RDWR);
	syscall(SYS_close_range, fd, fd, 0);
	check("pipe", pipe(pipes) == 0);
	reused = pipes[0] == fd ? pipes[0] : pipes[1] == fd ? pipes[1] : -1;
	check("the pipe took the device fd's number", reused >= 0);
	check("it writes and reads as a pipe", write(pipes[1], "x", 1) == 1 && read(pipes[0], &(char){0}, 1) == 1);
	printf("all checks passed\n");
	return 0;
}
