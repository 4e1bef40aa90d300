/*
 * libpmemobj on an emulated device-dax, inside `daxfuse exec`, with its
 * shutdown-state checking on (PMDK's default):
 *   pmemobj_devdax DEVICE write TEXT   open the pool, store TEXT in the root object in a transaction
 *   pmemobj_devdax DEVICE check TEXT   reopen it: the root object holds TEXT
 *   pmemobj_devdax DEVICE hold TEXT    write, print "holding", and keep the pool open until killed
 */
#include <libpmemobj.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LAYOUT "daxfuse"

int main(int argc, char **argv)
{
	PMEMobjpool *pop;
	char *root;
	int rc = 0;

	if (argc != 4)
		return 2;
	pop = pmemobj_open(argv[1], LAYOUT);
	if (!pop) {
		printf("pmemobj_open: %s\n", pmemobj_errormsg());
		return 1;
	}
	root = pmemobj_direct(pmemobj_root(pop, 4096));
	if (!strcmp(argv[2], "write") || !strcmp(argv[2], "hold")) {
		TX_BEGIN(pop) {
			pmemobj_tx_add_range_direct(root, strlen(argv[3]) + 1);
			strcpy(root, argv[3]);
		} TX_ONABORT {
			printf("transaction aborted: %s\n", pmemobj_errormsg());
			rc = 1;
		} TX_END
		if (!rc && !strcmp(argv[2], "hold")) {
			printf("holding\n");
			fflush(stdout);
			for (;;)
				pause();
		}
	} else if (strcmp(root, argv[3])) {
		printf("the root object holds \"%s\", not \"%s\"\n", root, argv[3]);
		rc = 1;
	}
	pmemobj_close(pop);
	if (!rc)
		printf("%s: ok\n", argv[2]);
	return rc;
}
