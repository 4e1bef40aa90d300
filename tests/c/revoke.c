/*
 * A mapper that a disable must revoke, whatever it does:
 *   revoke DEVICE MODE
 * Maps 2 MiB of DEVICE (under the personality: the device's memory itself),
 * stores "stored before the disable" at 1 MiB, then counts at offset 0,
 * nonstop and without calling libc, in one of these ways (MODE):
 *
 *   spin        as is
 *   threads     from 3 threads, at 4096 * (1, 2, 3)
 *   fork        and a child of fork() at 4096
 *   rawfork     and a child of a raw clone syscall (no atfork handler runs) at 4096
 *   _Fork       and a child of glibc's _Fork() at 4096
 *   clone       and a child of glibc's clone() at 4096
 *   vfork       a vfork-style child (CLONE_VM | CLONE_VFORK) counts at 4096, the parent waits
 *   sigign      SIGBUS ignored through a raw rt_sigaction (as a runtime may)
 *   handler     a SIGBUS handler of a raw rt_sigaction's, which says "sigbus" and exits 42
 *   sigset      the same handler, through glibc's sigset()
 *   closerange  every fd from 3 up closed (close_range) after mapping
 *   noticefd    says whether any fd of its own reaches device memory, then spins
 *   once        maps, stores, unmaps and maps again, then exits 0 (for valgrind)
 *
 * It prints each counting process's pid, then "ready" once every counter
 * runs. Two more modes are driven from stdin, a line per step:
 *
 *   late        maps 2 MiB for reading, prints "first"; after a line maps
 *               the next 2 MiB for writing and counts at its 4096 (a grant
 *               in flight)
 *   revive      prints "ready"; after a line reads the marker and stores
 *               "stored after" at 8 (prints the marker); a SIGBUS handler of
 *               libc's catches a fault and prints "sigbus CODE", and the
 *               next line tries again
 *   blocked     as QEMU: SIGBUS blocked (pthread_sigmask) before the mapping
 *               is made; prints "ready" and whether SIGBUS still shows as
 *               blocked; after a line reads the marker (prints it), with no
 *               handler: a fault it met blocked would kill it
 *   ppoll       blocks every signal, sleeps in ppoll() for 3 s, exits 0
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile uint64_t *mem;
static sigjmp_buf retry;

static void *count(void *at)
{
	volatile uint64_t *c = (volatile uint64_t *)at;

	for (;;)
		(*c)++;
	return NULL;
}

static int count_child(void *at)
{
	count(at);
	return 0;
}

static void wait_running(volatile uint64_t *c)
{
	uint64_t start = *c;

	while (*c == start)
		;
}

static void say(const char *what)
{
	printf("%s\n", what);
	fflush(stdout);
}

static void said_pid(pid_t pid)
{
	printf("pid %d\n", (int)pid);
	fflush(stdout);
}

static void exit_on_sigbus(int sig)
{
	static const char msg[] = "sigbus\n";

	write(1, msg, sizeof(msg) - 1);
	_exit(42);
}

/* What returns from a handler: rt_sigreturn, as a runtime brings its own. */
void restore_rt(void);
__asm__(".text\n.globl restore_rt\nrestore_rt:\n\tmov $15, %rax\n\tsyscall\n");

static void raw_sigaction(int sig, void (*handler)(int))
{
	struct {  /* the kernel's struct sigaction, as a runtime passes it */
		void (*handler)(int);
		unsigned long flags;
		void (*restorer)(void);
		uint64_t mask;
	} act = {handler, 0x04000000 /* SA_RESTORER */, restore_rt, 0};

	syscall(SYS_rt_sigaction, sig, &act, NULL, 8);
}

static void catch_sigbus(int sig, siginfo_t *si, void *uc)
{
	printf("sigbus %d\n", si->si_code);
	fflush(stdout);
	siglongjmp(retry, 1);
}

/* The steps of "revive": touch the mapping, a line at a time. */
static int revive(void)
{
	struct sigaction sa = {.sa_sigaction = catch_sigbus, .sa_flags = SA_SIGINFO};
	char line[16];

	sigaction(SIGBUS, &sa, NULL);
	say("ready");
	while (fgets(line, sizeof(line), stdin)) {
		char marker[32];

		if (sigsetjmp(retry, 1))
			continue;
		memcpy(marker, (char *)mem + (1 << 20), sizeof(marker));  /* where a fault would be */
		strcpy((char *)mem + 8, "stored after");
		printf("read %.*s\n", (int)sizeof(marker), marker);
		fflush(stdout);
	}
	return 0;
}

/* The steps of "blocked". */
static int blocked(void)
{
	char line[16], marker[32];
	sigset_t now;

	pthread_sigmask(SIG_BLOCK, NULL, &now);
	printf("ready blocked=%d\n", sigismember(&now, SIGBUS));
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		memcpy(marker, (char *)mem + (1 << 20), sizeof(marker));
		printf("read %.*s\n", (int)sizeof(marker), marker);
		fflush(stdout);
	}
	return 0;
}

/* "late": read-only first, so that the writable mapping needs a grant of its own. */
static int late(int fd)
{
	char line[8];
	volatile uint64_t *next;

	mem = mmap(NULL, 2 << 20, PROT_READ, MAP_SHARED, fd, 0);
	say("first");
	if (mem == MAP_FAILED || !fgets(line, sizeof(line), stdin))
		return 2;
	next = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 2 << 20);
	if (next == MAP_FAILED)
		return 3;
	count((void *)(next + 512));
	return 0;
}

static int window_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	while ((e = readdir(d))) {
		char path[300], target[256];
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len > 0 && atoi(e->d_name) > 2 && atoi(e->d_name) != dirfd(d)) {
			target[len] = 0;
			if (!strstr(target, "dax"))  /* anything but the device itself */
				n++;
		}
	}
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	static char stack[1 << 16] __attribute__((aligned(16)));
	int fd = open(argv[1], O_RDWR), i;
	const char *mode = argc == 3 ? argv[2] : "";
	pthread_t t;
	pid_t child = -1;  /* none */

	if (!strcmp(mode, "late"))
		return late(fd);
	if (!strcmp(mode, "blocked")) {
		sigset_t bus;

		sigemptyset(&bus);
		sigaddset(&bus, SIGBUS);
		pthread_sigmask(SIG_BLOCK, &bus, NULL);
	}
	mem = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (argc != 3 || fd < 0 || mem == MAP_FAILED) {
		perror("revoke");
		return 2;
	}
	strcpy((char *)mem + (1 << 20), "stored before the disable");
	if (!strcmp(mode, "once")) {
		munmap((void *)mem, 2 << 20);
		mem = mmap(NULL, 4 << 20, PROT_READ, MAP_SHARED, fd, 0);
		return mem == MAP_FAILED || strcmp((char *)mem + (1 << 20), "stored before the disable");
	}
	if (!strcmp(mode, "revive"))
		return revive();
	if (!strcmp(mode, "blocked"))
		return blocked();
	if (!strcmp(mode, "ppoll")) {
		sigset_t all;
		struct timespec three = {3, 0};

		sigfillset(&all);
		syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, 8);
		say("ready");
		ppoll(NULL, 0, &three, &all);
		return 0;
	}
	if (!strcmp(mode, "threads")) {
		for (i = 0; i < 3; i++) {
			pthread_create(&t, NULL, count, (void *)(mem + 512 * (i + 1)));
			wait_running(mem + 512 * (i + 1));
		}
		said_pid(getpid());
		say("ready");
		for (;;)
			pause();
	}
	if (!strcmp(mode, "sigign"))
		raw_sigaction(SIGBUS, SIG_IGN);
	if (!strcmp(mode, "handler"))
		raw_sigaction(SIGBUS, exit_on_sigbus);
	if (!strcmp(mode, "sigset"))
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
		sigset(SIGBUS, exit_on_sigbus);  /* what older programs still call */
#pragma GCC diagnostic pop
	if (!strcmp(mode, "closerange"))
		close_range(3, ~0U, 0);
	if (!strcmp(mode, "noticefd"))
		printf("fds reaching memory: %d\n", window_fds());
	if (!strcmp(mode, "fork"))
		child = fork();
	else if (!strcmp(mode, "rawfork"))
		child = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
	else if (!strcmp(mode, "_Fork"))
		child = _Fork();
	else if (!strcmp(mode, "clone"))
		child = clone(count_child, stack + sizeof(stack), SIGCHLD, (void *)(mem + 512));
	else if (!strcmp(mode, "vfork")) {
		said_pid(getpid());
		say("ready");  /* the child counts; this process waits until it is gone */
		clone(count_child, stack + sizeof(stack), CLONE_VM | CLONE_VFORK | SIGCHLD, (void *)(mem + 512));
		count((void *)mem);
	}
	if (child == 0)
		count((void *)(mem + 512));  /* a child, through the mapping it inherited */
	if (child > 0) {
		said_pid(child);
		wait_running(mem + 512);
	}
	said_pid(getpid());
	say("ready");
	count((void *)mem);
}
