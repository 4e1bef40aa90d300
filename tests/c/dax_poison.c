/*
 * After ndctl's test/dax-poison.c, for a device-dax mapping: MADV_HWPOISON
 * of a page raises SIGBUS BUS_MCEERR_AR at that page, with si_addr_lsb the
 * mapping's page size, and leaves the page poisoned (a later load faults
 * the same way); MADV_SOFT_OFFLINE is EIO (no online page).
 *   dax_poison DEVICE ALIGN
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_SOFT_OFFLINE
#define MADV_SOFT_OFFLINE 101  /* linux/mman.h */
#endif

static sigjmp_buf env;
static volatile int code, lsb;
static void *volatile where;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	code = si->si_code;
	where = si->si_addr;
	lsb = si->si_addr_lsb;
	siglongjmp(env, 1);
}

static void check(const char *what, int ok)
{
	printf("%s: %s\n", ok ? "ok" : "FAIL", what);
	if (!ok)
		exit(1);
}

int main(int argc, char **argv)
{
	size_t align = strtoul(argv[2], NULL, 0);
	int fd = open(argv[1], O_RDWR), shift = __builtin_ctzl(align);
	struct sigaction act = {.sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO};
	char *p = mmap(NULL, 2 * align, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), *page;

	check("map", fd >= 0 && p != MAP_FAILED && sigaction(SIGBUS, &act, NULL) == 0);
	page = p + align;
	page[0] = 'x';
	check("MADV_SOFT_OFFLINE: EIO", madvise(page, 4096, MADV_SOFT_OFFLINE) == -1 && errno == EIO);
	if (!sigsetjmp(env, 1)) {
		madvise(page, 4096, MADV_HWPOISON);
		check("MADV_HWPOISON raised SIGBUS", 0);
	}
	check("BUS_MCEERR_AR", code == BUS_MCEERR_AR);
	check("at the poisoned page", where == page);
	check("si_addr_lsb: the mapping's page size", lsb == shift);
	code = 0;
	if (!sigsetjmp(env, 1)) {
		(void)*(volatile char *)page;
		check("a later load faults", 0);
	}
	check("a later load is memory failure too", code == BUS_MCEERR_AR && where == page);
	check("the rest of the mapping lives on", (p[0] = 'y') == 'y');
	printf("all checks passed\n");
	return 0;
}
