/*
 * A mapper that a disable must revoke:
 *   revoke DEVICE spin|threads|fork|masked|blocked|late
 * Maps DEVICE (under the personality: its memory itself) and stores a
 * counter nonstop, without calling libc: at offset 0 (spin), at 4096 * (i+1)
 * from each of 3 threads (threads), or at 0 in the parent and 4096 in a
 * forked child (fork). Prints "ready" once every counter runs. masked and
 * blocked first block the revocation signal, through libc or a raw
 * syscall. late maps 2 MiB, prints "first", and after a line on stdin maps
 * the next 2 MiB and counts at its 4096 (the race of a grant in flight).
 * A revocation must freeze the counters and end every process.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile uint64_t *mem;

static void *count(void *at)
{
	volatile uint64_t *c = (volatile uint64_t *)at;

	for (;;)
		(*c)++;
	return NULL;
}

static void wait_running(volatile uint64_t *c)
{
	uint64_t start = *c;

	while (*c == start)
		;
}

int main(int argc, char **argv)
{
	int fd = open(argv[1], O_RDWR), i;
	pthread_t t;

	mem = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (argc != 3 || fd < 0 || mem == MAP_FAILED) {
		perror("revoke");
		return 2;
	}
	strcpy((char *)mem + (1 << 20), "stored before the disable");
	if (!strcmp(argv[2], "threads")) {
		for (i = 0; i < 3; i++) {
			pthread_create(&t, NULL, count, (void *)(mem + 512 * (i + 1)));
			wait_running(mem + 512 * (i + 1));
		}
		printf("ready\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	if (!strcmp(argv[2], "masked") || !strcmp(argv[2], "blocked")) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGRTMAX - 3);
		if (!strcmp(argv[2], "masked"))
			sigprocmask(SIG_BLOCK, &set, NULL);
		else
			syscall(SYS_rt_sigprocmask, SIG_BLOCK, &set, NULL, 8);
	}
	if (!strcmp(argv[2], "late")) {
		char line[8];
		volatile uint64_t *next;

		printf("first\n");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			return 2;
		next = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 2 << 20);
		if (next == MAP_FAILED)
			return 3;
		count((void *)(next + 512));
	}
	if (!strcmp(argv[2], "fork") && fork() == 0)
		count((void *)(mem + 512));  /* the child, through the mapping it inherited */
	if (!strcmp(argv[2], "fork"))
		wait_running(mem + 512);
	printf("ready\n");
	fflush(stdout);
	count((void *)mem);
}
