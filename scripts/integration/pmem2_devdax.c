/*
 * libpmem2 on an emulated device-dax, inside `daxfuse exec`:
 *   pmem2_devdax DEVICE SIZE ALIGN OFFSET
 * The source must be a devdax of SIZE and ALIGN (from libndctl, through the
 * NVDIMM bus view); the device's shutdown count and id must answer; a
 * mapping must grant cache-line granularity (MAP_SYNC); a pattern memcpy'd
 * at OFFSET, persisted and deep-flushed must land in the device (the caller
 * checks it with O_DIRECT, outside exec).
 */
#include <fcntl.h>
#include <libpmem2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		int ok_ = (cond);                                              \
		printf("%s: ", ok_ ? "ok" : "FAIL");                           \
		printf(__VA_ARGS__);                                           \
		printf("\n");                                                  \
		if (!ok_) {                                                    \
			printf("   libpmem2: %s\n", pmem2_errormsg());         \
			exit(1);                                               \
		}                                                              \
	} while (0)

int main(int argc, char **argv)
{
	struct pmem2_source *src;
	struct pmem2_config *cfg;
	struct pmem2_map *map;
	size_t size, align, len = 0, want_size, want_align, offset;
	uint64_t usc;
	char pattern[8192], *addr, *id;
	int fd, i;

	if (argc != 5) {
		fprintf(stderr, "usage: pmem2_devdax DEVICE SIZE ALIGN OFFSET\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	want_size = strtoull(argv[2], NULL, 0);
	want_align = strtoull(argv[3], NULL, 0);
	offset = strtoull(argv[4], NULL, 0);
	fd = open(argv[1], O_RDWR);
	CHECK(fd >= 0, "open %s", argv[1]);
	CHECK(pmem2_source_from_fd(&src, fd) == 0, "pmem2_source_from_fd");
	CHECK(pmem2_source_size(src, &size) == 0 && size == want_size, "pmem2_source_size %zu", size);
	CHECK(pmem2_source_alignment(src, &align) == 0 && align == want_align, "pmem2_source_alignment %zu", align);
	CHECK(pmem2_source_device_usc(src, &usc) == 0, "pmem2_source_device_usc %llu", (unsigned long long)usc);
	CHECK(pmem2_source_device_id(src, NULL, &len) == 0 && len > 0, "pmem2_source_device_id length %zu", len);
	id = calloc(1, len);
	CHECK(pmem2_source_device_id(src, id, &len) == 0, "pmem2_source_device_id \"%s\"", id);

	CHECK(pmem2_config_new(&cfg) == 0, "pmem2_config_new");
	CHECK(pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_CACHE_LINE) == 0,
	      "cache-line granularity required");
	CHECK(pmem2_map_new(&map, cfg, src) == 0, "pmem2_map_new (MAP_SYNC)");
	CHECK(pmem2_map_get_store_granularity(map) == PMEM2_GRANULARITY_CACHE_LINE, "cache-line granularity granted");
	CHECK(pmem2_map_get_size(map) == size, "the whole device mapped");
	addr = pmem2_map_get_address(map);
	for (i = 0; i < (int)sizeof(pattern); i++)
		pattern[i] = (char)(i * 7 + 3);
	pmem2_get_memcpy_fn(map)(addr + offset, pattern, sizeof(pattern), 0);
	pmem2_get_persist_fn(map)(addr + offset, sizeof(pattern));
	CHECK(pmem2_deep_flush(map, addr + offset, sizeof(pattern)) == 0, "pmem2_deep_flush");
	CHECK(memcmp(addr + offset, pattern, sizeof(pattern)) == 0, "the pattern reads back through the mapping");
	pmem2_map_delete(&map);
	pmem2_config_delete(&cfg);
	pmem2_source_delete(&src);
	close(fd);
	printf("all checks passed\n");
	return 0;
}
