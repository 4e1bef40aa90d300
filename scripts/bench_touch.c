/*
 * Micro-benchmarks for scripts/bench that must run as C, inside or outside
 * `daxfuse exec`:
 *   bench_touch touch PATH SIZE read|write|warm   first touch of every 4K page of a
 *                                      MAP_SHARED mapping (warm: a read of every
 *                                      cache line after it; sparse: a byte
 *                                      stored every 64 MiB, then the MiB of
 *                                      shared memory it holds): prints seconds
 *   bench_touch stat PATH N            N stat() calls: prints ns per call
 *   bench_touch persist PATH SIZE N    N 64-byte stores, each persisted with
 *                                      libpmem2 (built with -DWITH_PMEM2): seconds
 *   bench_touch remap PATH N           N times: map 2 MiB, store a byte, unmap
 *                                      (a client that maps per I/O): us each
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

static int touch(const char *path, size_t size, const char *op)
{
	int write = !strcmp(op, "write"), warm = !strcmp(op, "warm"), sparse = !strcmp(op, "sparse");
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
	if (warm)
		for (off = 0; off < size; off += 4096)
			sum += p[off];
	start = now();
	for (off = 0; off < size; off += warm ? 64 : sparse ? 64 << 20 : 4096) {
		if (write || sparse)
			p[off] = (uint8_t)off | 1;
		else
			sum += p[off];
	}
	printf("%.6f\n", now() - start + (sum == 1 ? 1e-9 : 0));
	if (sparse) {  /* the RAM its stores took: this process's own, whatever else runs */
		char line[256];
		FILE *status = fopen("/proc/self/status", "r");

		while (status && fgets(line, sizeof(line), status))
			if (!strncmp(line, "RssShmem:", 9))
				printf("%ld\n", strtol(line + 9, NULL, 10) / 1024);
		if (status)
			fclose(status);
	}
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

static int remap(const char *path, long n)
{
	int fd = open(path, O_RDWR);
	double start = now();
	long i;

	for (i = 0; i < n; i++) {
		volatile uint8_t *p = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

		if (fd < 0 || p == MAP_FAILED) {
			perror(path);
			return 1;
		}
		p[(i * 4096) % (2 << 20)] = 1;
		munmap((void *)p, 2 << 20);
	}
	printf("%.3f\n", (now() - start) / n * 1e6);
	return 0;
}

#ifdef WITH_PMEM2
#include <libpmem2.h>

static int persist(const char *path, size_t size, long n)
{
	struct pmem2_config *cfg;
	struct pmem2_source *src;
	struct pmem2_map *map;
	char line[64] = "a line of 64 bytes persisted at a time, as a log would do it.";
	int fd = open(path, O_RDWR);
	double start;
	char *addr;
	long i;

	if (fd < 0 || pmem2_config_new(&cfg) || pmem2_source_from_fd(&src, fd) ||
	    pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) ||
	    pmem2_map_new(&map, cfg, src)) {
		fprintf(stderr, "%s: %s\n", path, pmem2_errormsg());
		return 1;
	}
	pmem2_persist_fn persist_fn = pmem2_get_persist_fn(map);
	addr = pmem2_map_get_address(map);
	start = now();
	for (i = 0; i < n; i++) {
		char *at = addr + (i * 64) % (size < (64 << 20) ? size : (64 << 20));
		memcpy(at, line, sizeof(line));
		persist_fn(at, sizeof(line));
	}
	printf("%.6f\n", now() - start);
	return 0;
}
#endif

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "touch"))
		return touch(argv[2], strtoull(argv[3], NULL, 0), argv[4]);
#ifdef WITH_PMEM2
	if (argc == 5 && !strcmp(argv[1], "persist"))
		return persist(argv[2], strtoull(argv[3], NULL, 0), strtol(argv[4], NULL, 0));
#endif
	if (argc == 4 && !strcmp(argv[1], "stat"))
		return stats(argv[2], strtol(argv[3], NULL, 0));
	if (argc == 4 && !strcmp(argv[1], "remap"))
		return remap(argv[2], strtol(argv[3], NULL, 0));
	fprintf(stderr, "usage: bench_touch touch PATH SIZE read|write|warm | stat PATH N | persist PATH SIZE N | "
		"remap PATH N\n");
	return 2;
}
