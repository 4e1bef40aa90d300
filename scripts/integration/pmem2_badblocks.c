/*
 * libpmem2's bad block API on an emulated device-dax, inside `daxfuse exec`:
 *   pmem2_badblocks DEVICE list    print "OFFSET LENGTH" (bytes into the device) per bad block
 *   pmem2_badblocks DEVICE clear   clear each (ND_IOCTL_CLEAR_ERROR, through /dev/ndctl0)
 * libpmem2 finds them in the nd region's badblocks, through the NVDIMM bus view.
 */
#include <fcntl.h>
#include <libpmem2.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct pmem2_source *src;
	struct pmem2_badblock_context *bbctx;
	struct pmem2_badblock bb;
	int fd, clear, rc;

	if (argc != 3 || (strcmp(argv[2], "list") && strcmp(argv[2], "clear"))) {
		fprintf(stderr, "usage: pmem2_badblocks DEVICE list|clear\n");
		return 2;
	}
	clear = !strcmp(argv[2], "clear");
	fd = open(argv[1], O_RDWR);
	if (fd < 0 || pmem2_source_from_fd(&src, fd) || pmem2_badblock_context_new(&bbctx, src)) {
		printf("%s: %s\n", argv[1], fd < 0 ? "cannot open" : pmem2_errormsg());
		return 1;
	}
	while ((rc = pmem2_badblock_next(bbctx, &bb)) == 0) {
		printf("%zu %zu\n", bb.offset, bb.length);
		if (clear && pmem2_badblock_clear(bbctx, &bb)) {
			printf("pmem2_badblock_clear: %s\n", pmem2_errormsg());
			return 1;
		}
	}
	pmem2_badblock_context_delete(&bbctx);
	pmem2_source_delete(&src);
	close(fd);
	return rc == PMEM2_E_NO_BAD_BLOCK_FOUND ? 0 : (printf("pmem2_badblock_next: %s\n", pmem2_errormsg()), 1);
}
