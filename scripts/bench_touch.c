/*
 * Micro-benchmarks for scripts/bench that must run as C, inside or outside
 * `daxfuse exec`:
 *   bench_touch touch PATH SIZE read|write   first touch of every 4K page of a
 *                                            MAP_SHARED mapping: prints seconds
 *   bench_touch stat PATH N                  N stat() calls: prints ns per call
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int touch(const char *path, size_t size, int write)
{
	int fd = open(path, O_RDWR);
	volatile uint8_t *p;
	uint64_t sum = 0;
	double start;
	size_t off;

	if (fd < 0) {
		perror(path);
		return 1;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	start = now();
	for (off = 0; off < size; off += 4096) {
		if (write)
			p[off] = (uint8_t)off | 1;
		else
			sum += p[off];
	}
	printf("%.6f\n", now() - start + (sum == 1 ? 1e-9 : 0));
	return 0;
}

static int stats(const char *path, long n)
{
	struct stat st;
	double start = now();
	long i;

	for (i = 0; i < n; i++)
		stat(path, &st);
	printf("%.1f\n", (now() - start) / n * 1e9);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "touch"))
		return touch(argv[2], strtoull(argv[3], NULL, 0), !strcmp(argv[4], "write"));
	if (argc == 4 && !strcmp(argv[1], "stat"))
		return stats(argv[2], strtol(argv[3], NULL, 0));
	fprintf(stderr, "usage: bench_touch touch PATH SIZE read|write | stat PATH N\n");
	return 2;
}
