/*
 * ndctl's test/dax-pmd.c, the two routines test/device-dax.c runs on a
 * device-dax instance (dax_fd >= 0, dax_addr NULL, offset 0, fsdax false),
 * one per run:  dax_pmd DEVICE ALIGN directio|remap
 * directio (test_dax_directio): five rounds, each a fresh MAP_SHARED
 *   mapping of 2 * ALIGN and a file in test_dax_mnt/ (in the working
 *   directory) opened O_DIRECT:
 *   0: O_DIRECT write out of, then read into, an unfaulted device address;
 *   1: O_DIRECT write of a pre-faulted address, read back into a buffer;
 *   2: fork with a pre-faulted (PMD) mapping: the child sees the data;
 *   3: a read-only fault made writable by a store;
 *   4: O_DIRECT read into an unfaulted device address.
 * remap (test_dax_remap): mremap of the first 4 KiB of a device mapping
 *   onto an anonymous one. ndctl accepts a failure, or for align > 4K a
 *   SIGBUS at the moved page; the kernel since 5.9 answers one way only
 *   (mremap asks dev_dax_may_split at both ends): EINVAL for align > 4K,
 *   and for 4K it moves the device page, which is what is checked here.
 * Beyond the original, the bytes each O_DIRECT transfer and the moved page
 * carry are checked too. Prints a line per check, "all checks passed" at
 * the end, exits 1 on the first failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define TEST_DIR "test_dax_mnt"
#define TEST_FILE TEST_DIR "/test_dax_data"
#define REGION_MEM_SIZE (4096 * 4)
#define REMAP_SIZE 4096
#define SZ_4K 4096UL

static sigjmp_buf sj_env;
static volatile int sigbus_count;

static void sigbus(int sig, siginfo_t *siginfo, void *d)
{
	sigbus_count++;
	siglongjmp(sj_env, 1);
}

static void check(int ok, const char *what, int round)
{
	if (round >= 0)
		printf("%s: round %d: %s\n", ok ? "ok" : "FAIL", round, what);
	else
		printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	if (!ok) {
		printf("  (errno %d: %s)\n", errno, strerror(errno));
		exit(1);
	}
}

static void test_dax_directio(int dax_fd, unsigned long align)
{
	char *buf = NULL;
	int i;

	check(posix_memalign((void **)&buf, 4096, 4096) == 0, "an aligned buffer", -1);
	for (i = 0; i < 5; i++) {
		char *addr = mmap(NULL, 2 * align, PROT_READ | PROT_WRITE, MAP_SHARED, dax_fd, 0);
		int fd2, status;
		pid_t pid;

		check(addr != MAP_FAILED, "mmap of 2 * align, MAP_SHARED", i);
		check(mkdir(TEST_DIR, 0600) == 0 || errno == EEXIST, "mkdir " TEST_DIR, i);
		fd2 = open(TEST_FILE, O_CREAT | O_TRUNC | O_DIRECT | O_RDWR, 0600);
		check(fd2 >= 0, "open " TEST_FILE " O_DIRECT", i);
		switch (i) {
		case 0: /* O_DIRECT write of an unfaulted address, then a read into it */
			check(write(fd2, addr, 4096) == 4096, "O_DIRECT write out of an unfaulted address", i);
			check(pread(fd2, addr, 4096, 0) == 4096, "O_DIRECT read into that address", i);
			break;
		case 1: /* O_DIRECT of a pre-faulted address */
			sprintf(addr, "odirect data");
			check(pwrite(fd2, addr, 4096, 0) == 4096, "O_DIRECT write of a pre-faulted address", i);
			buf[0] = 0;
			check(pread(fd2, buf, 4096, 0) == 4096, "O_DIRECT read back", i);
			check(strcmp(buf, "odirect data") == 0, "it read what the device held", i);
			break;
		case 2: /* fork with a pre-faulted pmd */
			sprintf(addr, "fork data");
			pid = fork();
			if (pid == 0)
				_exit(strcmp(addr, "fork data") == 0 ? EXIT_SUCCESS : EXIT_FAILURE);
			check(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status)
			      && WEXITSTATUS(status) == EXIT_SUCCESS, "fork: the child sees the data", i);
			break;
		case 3: { /* convert a read-only fault to read-write */
			int v = *(volatile int *)addr;

			*(volatile int *)addr = v;
			check(*(volatile int *)addr == v, "a read fault, then a store to it", i);
			break;
		}
		case 4: /* O_DIRECT read into an unfaulted address */
			memset(buf, 0, 4096);
			sprintf(buf, "O_DIRECT write of unfaulted address\n");
			check(pwrite(fd2, buf, 4096, 0) == 4096, "O_DIRECT write of a buffer", i);
			check(pread(fd2, addr, 4096, 0) == 4096, "O_DIRECT read into an unfaulted address", i);
			check(strcmp(addr, "O_DIRECT write of unfaulted address\n") == 0, "the device holds what was read", i);
			break;
		}
		munmap(addr, 2 * align);
		unlink(TEST_FILE);
		close(fd2);
	}
	rmdir(TEST_DIR);
	free(buf);
}

static void test_dax_remap(int dax_fd, unsigned long align)
{
	struct sigaction act;
	char *anon, *addr, *remap, *again;
	int val;

	anon = mmap(NULL, REGION_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	addr = mmap(NULL, 2 * align, PROT_READ | PROT_WRITE, MAP_SHARED, dax_fd, 0);
	check(anon != MAP_FAILED && addr != MAP_FAILED, "remap: an anonymous and a device mapping", -1);
	memset(anon, 'a', REGION_MEM_SIZE);
	memset(addr, 'i', align * 2);

	errno = 0;
	remap = mremap(addr, REMAP_SIZE, REMAP_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, anon);
	if (align > SZ_4K) {
		check(remap == MAP_FAILED && errno == EINVAL,
		      "mremap of 4K off the align refused with EINVAL (dev_dax_may_split)", -1);
		check(addr[0] == 'i' && anon[0] == 'a', "both mappings as they were", -1);
		return;
	}
	check(remap == anon, "mremap of a 4K device page onto the anonymous mapping", -1);

	memset(&act, 0, sizeof(act));
	act.sa_sigaction = sigbus;
	act.sa_flags = SA_SIGINFO;
	check(sigaction(SIGBUS, &act, 0) == 0, "sigaction", -1);
	if (sigsetjmp(sj_env, 1)) {
		check(0, "no SIGBUS after mremap() of a 4K device-dax page", -1);
	}
	check(anon[1] == 'i', "the moved page is the device's", -1);
	*(int *)anon = 0xAA;
	val = *(int *)anon;
	check(val == 0xAA, "a store through the moved page reads back", -1);
	again = mmap(NULL, 2 * align, PROT_READ, MAP_SHARED, dax_fd, 0);
	check(again != MAP_FAILED && *(int *)again == 0xAA, "and is in the device's memory", -1);
	munmap(again, 2 * align);
}

int main(int argc, char **argv)
{
	unsigned long align;
	int fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 4 || (strcmp(argv[3], "directio") && strcmp(argv[3], "remap"))) {
		fprintf(stderr, "usage: dax_pmd DEVICE ALIGN directio|remap\n");
		return 2;
	}
	align = strtoul(argv[2], NULL, 0);
	fd = open(argv[1], O_RDWR);
	check(fd >= 0, "open the device read-write", -1);
	if (strcmp(argv[3], "directio") == 0)
		test_dax_directio(fd, align);
	else
		test_dax_remap(fd, align);
	close(fd);
	printf("all checks passed\n");
	return 0;
}
