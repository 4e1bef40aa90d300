/*
 * ndctl's test/daxdev-errors.c (v76.1) on the emulated NVDIMM bus, run by
 * tests/t2_ndctl_mirrors.py as test/daxdev-errors.sh runs the original:
 *   daxdev_errors BUS REGION
 * As the original: find the bus by its provider, REGION on it and its
 * enabled, configured nd dax device; read the region's first bad range
 * from /sys/devices/platform/PLATFORM/BUS/REGION/badblocks; then, over
 * [resource + offset * 512, + blocks * 512) of the bus's physical
 * addresses, ND_CMD_ARS_CAP (its max_ars_out room for an ARS status),
 * ND_CMD_ARS_START (persistent), ND_CMD_ARS_STATUS (polled while in
 * progress, five tries a second apart) and ND_CMD_CLEAR_ERROR over the
 * ARS_CAP range, which must clear all of it. The script then finds the
 * region's badblocks empty.
 * What differs: the provider is "daxfuse" and the platform device
 * "daxfuse-nvdimm" (nfit_test.0 is both on nfit_test; an ACPI bus differs
 * too: ACPI.NFIT, ACPI0012:00). Beyond the original, which only prints the
 * ARS records and arms a SIGBUS handler: a record must cover the bad range,
 * and a load of the poisoned page through a mapping of the device before
 * the clear must raise SIGBUS (BUS_MCEERR_AR, as memory failure on real
 * pmem; nfit_test's poison is a list only, so the original never loads),
 * and a fresh mapping after the clear reads the page.
 * libndctl and libdaxctl are declared here where their -dev headers are
 * missing (the runtime libraries come with ndctl and daxctl).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/ndctl.h>

#if __has_include(<ndctl/libndctl.h>) && __has_include(<daxctl/libdaxctl.h>) && !defined(OWN_DECLARATIONS)
#include <ndctl/libndctl.h>
#include <daxctl/libdaxctl.h>
#else
struct ndctl_ctx;
struct ndctl_bus;
struct ndctl_region;
struct ndctl_dax;
struct ndctl_cmd;
struct daxctl_region;
struct daxctl_dev;
struct ndctl_range {
	unsigned long long address;
	unsigned long long length;
};
int ndctl_new(struct ndctl_ctx **ctx);
struct ndctl_ctx *ndctl_unref(struct ndctl_ctx *ctx);
struct ndctl_bus *ndctl_bus_get_by_provider(struct ndctl_ctx *ctx, const char *provider);
const char *ndctl_bus_get_provider(struct ndctl_bus *bus);
struct ndctl_region *ndctl_region_get_first(struct ndctl_bus *bus);
struct ndctl_region *ndctl_region_get_next(struct ndctl_region *region);
const char *ndctl_region_get_devname(struct ndctl_region *region);
unsigned long long ndctl_region_get_resource(struct ndctl_region *region);
struct ndctl_dax *ndctl_dax_get_first(struct ndctl_region *region);
struct ndctl_dax *ndctl_dax_get_next(struct ndctl_dax *dax);
int ndctl_dax_is_enabled(struct ndctl_dax *dax);
int ndctl_dax_is_configured(struct ndctl_dax *dax);
unsigned long long ndctl_dax_get_resource(struct ndctl_dax *dax);
unsigned long ndctl_dax_get_align(struct ndctl_dax *dax);
struct daxctl_region *ndctl_dax_get_daxctl_region(struct ndctl_dax *dax);
struct ndctl_cmd *ndctl_bus_cmd_new_ars_cap(struct ndctl_bus *bus, unsigned long long address,
					    unsigned long long len);
struct ndctl_cmd *ndctl_bus_cmd_new_ars_start(struct ndctl_cmd *ars_cap, int type);
struct ndctl_cmd *ndctl_bus_cmd_new_ars_status(struct ndctl_cmd *ars_cap);
unsigned int ndctl_cmd_ars_cap_get_size(struct ndctl_cmd *ars_cap);
int ndctl_cmd_ars_cap_get_range(struct ndctl_cmd *ars_cap, struct ndctl_range *range);
int ndctl_cmd_ars_in_progress(struct ndctl_cmd *ars_status);
unsigned int ndctl_cmd_ars_num_records(struct ndctl_cmd *ars_stat);
unsigned long long ndctl_cmd_ars_get_record_addr(struct ndctl_cmd *ars_stat, unsigned int rec_index);
unsigned long long ndctl_cmd_ars_get_record_len(struct ndctl_cmd *ars_stat, unsigned int rec_index);
struct ndctl_cmd *ndctl_bus_cmd_new_clear_error(unsigned long long address, unsigned long long len,
						struct ndctl_cmd *ars_cap);
unsigned long long ndctl_cmd_clear_error_get_cleared(struct ndctl_cmd *clear_err);
int ndctl_cmd_submit(struct ndctl_cmd *cmd);
void ndctl_cmd_unref(struct ndctl_cmd *cmd);
struct daxctl_dev *daxctl_dev_get_first(struct daxctl_region *region);
const char *daxctl_dev_get_devname(struct daxctl_dev *dev);
#define ndctl_region_foreach(bus, region) \
	for (region = ndctl_region_get_first(bus); region != NULL; region = ndctl_region_get_next(region))
#define ndctl_dax_foreach(region, dax) \
	for (dax = ndctl_dax_get_first(region); dax != NULL; dax = ndctl_dax_get_next(dax))
#endif

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define fail() fprintf(stderr, "%s: failed at: %d\n", __func__, __LINE__)

struct check_cmd {
	struct ndctl_cmd *cmd;
};

static sigjmp_buf sj_env;
static volatile int sig_count, sig_code;

static const char *PROVIDER = "daxfuse";	 /* NFIT_PROVIDER0 in the original */
static const char *PLATFORM = "daxfuse-nvdimm"; /* the bus's platform device */
static struct check_cmd *check_cmds;

static void sigbus_hdl(int sig, siginfo_t *siginfo, void *ptr)
{
	fprintf(stderr, "** Received a SIGBUS **\n");
	sig_count++;
	sig_code = siginfo->si_code;
	siglongjmp(sj_env, 1);
}

static int check_ars_cap(struct ndctl_bus *bus, uint64_t start, size_t size, struct check_cmd *check)
{
	struct ndctl_cmd *cmd;
	int rc;

	if (check->cmd != NULL) {
		fprintf(stderr, "%s: expected a NULL command, by default\n", __func__);
		return -EINVAL;
	}
	cmd = ndctl_bus_cmd_new_ars_cap(bus, start, size);
	if (!cmd) {
		fprintf(stderr, "%s: bus: %s failed to create cmd\n", __func__, ndctl_bus_get_provider(bus));
		return -ENOTTY;
	}
	rc = ndctl_cmd_submit(cmd);
	if (rc < 0) {
		fprintf(stderr, "%s: bus: %s failed to submit cmd: %d\n", __func__, ndctl_bus_get_provider(bus), rc);
		ndctl_cmd_unref(cmd);
		return rc;
	}
	if (ndctl_cmd_ars_cap_get_size(cmd) < sizeof(struct nd_cmd_ars_status)) {
		fprintf(stderr, "%s: bus: %s expected size >= %zd got: %d\n", __func__, ndctl_bus_get_provider(bus),
			sizeof(struct nd_cmd_ars_status), ndctl_cmd_ars_cap_get_size(cmd));
		ndctl_cmd_unref(cmd);
		return -ENXIO;
	}
	check->cmd = cmd;
	return 0;
}

static int check_ars_start(struct ndctl_bus *bus, struct check_cmd *check)
{
	struct ndctl_cmd *cmd_ars_cap = check_cmds[ND_CMD_ARS_CAP].cmd;
	struct ndctl_cmd *cmd;
	int rc;

	if (check->cmd != NULL) {
		fprintf(stderr, "%s: expected a NULL command, by default\n", __func__);
		return -ENXIO;
	}
	cmd = ndctl_bus_cmd_new_ars_start(cmd_ars_cap, ND_ARS_PERSISTENT);
	if (!cmd) {
		fprintf(stderr, "%s: bus: %s failed to create cmd\n", __func__, ndctl_bus_get_provider(bus));
		return -ENOTTY;
	}
	rc = ndctl_cmd_submit(cmd);
	if (rc < 0) {
		fprintf(stderr, "%s: bus: %s failed to submit cmd: %d\n", __func__, ndctl_bus_get_provider(bus), rc);
		ndctl_cmd_unref(cmd);
		return rc;
	}
	check->cmd = cmd;
	return 0;
}

/* As the original, which prints the records; and (beyond it) one must
 * cover [start, start + size). */
static int check_ars_status(struct ndctl_bus *bus, struct check_cmd *check, uint64_t start, uint64_t size)
{
	struct ndctl_cmd *cmd_ars_cap = check_cmds[ND_CMD_ARS_CAP].cmd;
	struct ndctl_cmd *cmd;
	unsigned long tmo = 5;
	unsigned int i;
	int rc, covered = 0;

	if (check->cmd != NULL) {
		fprintf(stderr, "%s: expected a NULL command, by default\n", __func__);
		return -ENXIO;
	}
retry:
	cmd = ndctl_bus_cmd_new_ars_status(cmd_ars_cap);
	if (!cmd) {
		fprintf(stderr, "%s: bus: %s failed to create cmd\n", __func__, ndctl_bus_get_provider(bus));
		return -ENOTTY;
	}
	rc = ndctl_cmd_submit(cmd);
	if (rc < 0) {
		fprintf(stderr, "%s: bus: %s failed to submit cmd: %d\n", __func__, ndctl_bus_get_provider(bus), rc);
		ndctl_cmd_unref(cmd);
		return rc;
	}
	if (!tmo) {
		fprintf(stderr, "%s: bus: %s ars timeout\n", __func__, ndctl_bus_get_provider(bus));
		return -EIO;
	}
	if (ndctl_cmd_ars_in_progress(cmd)) {
		tmo--;
		ndctl_cmd_unref(cmd);
		sleep(1);  /* the original's poll of a scrub in progress */
		goto retry;
	}
	for (i = 0; i < ndctl_cmd_ars_num_records(cmd); i++) {
		unsigned long long addr = ndctl_cmd_ars_get_record_addr(cmd, i);
		unsigned long long len = ndctl_cmd_ars_get_record_len(cmd, i);

		fprintf(stderr, "%s: record[%d].addr: 0x%llx\n", __func__, i, addr);
		fprintf(stderr, "%s: record[%d].length: 0x%llx\n", __func__, i, len);
		covered |= addr <= start && addr + len >= start + size;
	}
	if (!covered) {
		fprintf(stderr, "%s: no ARS record covers %#llx for %llu bytes\n", __func__,
			(unsigned long long)start, (unsigned long long)size);
		ndctl_cmd_unref(cmd);
		return -ENXIO;
	}
	check->cmd = cmd;
	return 0;
}

static int check_clear_error(struct ndctl_bus *bus, struct check_cmd *check)
{
	struct ndctl_cmd *ars_cap = check_cmds[ND_CMD_ARS_CAP].cmd;
	struct ndctl_cmd *clear_err;
	unsigned long long cleared;
	struct ndctl_range range;
	int rc;

	if (check->cmd != NULL) {
		fprintf(stderr, "%s: expected a NULL command, by default\n", __func__);
		return -ENXIO;
	}
	if (ndctl_cmd_ars_cap_get_range(ars_cap, &range)) {
		fprintf(stderr, "failed to get ars_cap range\n");
		return -ENXIO;
	}
	fprintf(stderr, "%s: clearing at %#llx for %llu bytes\n", __func__, range.address, range.length);
	clear_err = ndctl_bus_cmd_new_clear_error(range.address, range.length, ars_cap);
	if (!clear_err) {
		fprintf(stderr, "%s: bus: %s failed to create cmd\n", __func__, ndctl_bus_get_provider(bus));
		return -ENOTTY;
	}
	rc = ndctl_cmd_submit(clear_err);
	if (rc < 0) {
		fprintf(stderr, "%s: bus: %s failed to submit cmd: %d\n", __func__, ndctl_bus_get_provider(bus), rc);
		ndctl_cmd_unref(clear_err);
		return rc;
	}
	cleared = ndctl_cmd_clear_error_get_cleared(clear_err);
	if (cleared != range.length) {
		fprintf(stderr, "%s: bus: %s expected to clear: %lld actual: %lld\n", __func__,
			ndctl_bus_get_provider(bus), range.length, cleared);
		return -ENXIO;
	}
	check->cmd = clear_err;
	return 0;
}

static struct ndctl_dax *get_dax_region(struct ndctl_region *region)
{
	struct ndctl_dax *dax;

	ndctl_dax_foreach(region, dax)
		if (ndctl_dax_is_enabled(dax) && ndctl_dax_is_configured(dax))
			return dax;
	return NULL;
}

/* Beyond the original: load the page at the physical address through a
 * fresh mapping of the nd dax device's device-dax instance; 1 when that
 * raised SIGBUS, 0 when it read, < 0 when it could not map. */
static int load_faults(struct ndctl_dax *dax, uint64_t address)
{
	struct daxctl_region *dax_region = ndctl_dax_get_daxctl_region(dax);
	struct daxctl_dev *dev = dax_region ? daxctl_dev_get_first(dax_region) : NULL;
	unsigned long align = ndctl_dax_get_align(dax);
	uint64_t offset = address - ndctl_dax_get_resource(dax);
	int fd, before = sig_count, faulted;
	char path[64];
	char *p;

	if (!dev || !align) {
		fprintf(stderr, "%s: no device-dax instance, or no align, for the nd dax device\n", __func__);
		return -ENODEV;
	}
	snprintf(path, sizeof(path), "/dev/%s", daxctl_dev_get_devname(dev));
	fd = open(path, O_RDWR);
	p = fd < 0 ? MAP_FAILED : mmap(NULL, align, PROT_READ, MAP_SHARED, fd, offset & ~(uint64_t)(align - 1));
	if (p == MAP_FAILED) {
		fprintf(stderr, "%s: %s: %s\n", __func__, path, strerror(errno));
		return -ENXIO;
	}
	if (!sigsetjmp(sj_env, 1))
		(void)*(volatile char *)(p + (offset & (align - 1)));
	faulted = sig_count != before;
	fprintf(stderr, "%s: load of %s at %#llx: %s\n", __func__, path, (unsigned long long)offset,
		faulted ? "SIGBUS" : "read");
	munmap(p, align);
	close(fd);
	return faulted;
}

static int test_daxdev_clear_error(const char *bus_name, const char *region_name)
{
	int rc = 0, i;
	struct ndctl_ctx *ctx;
	struct ndctl_bus *bus;
	struct ndctl_region *region;
	struct ndctl_dax *dax = NULL;
	unsigned long long base, start, offset, blocks, size;
	struct check_cmd __bus_cmds[] = {
		[ND_CMD_ARS_CAP] = {},
		[ND_CMD_ARS_START] = {},
		[ND_CMD_ARS_STATUS] = {},
		[ND_CMD_CLEAR_ERROR] = {},
	};
	char path[256], buf[4096];
	FILE *f;

	rc = ndctl_new(&ctx);
	if (rc)
		return rc;
	bus = ndctl_bus_get_by_provider(ctx, PROVIDER);
	if (!bus) {
		rc = -ENODEV;
		fail();
		goto cleanup;
	}
	ndctl_region_foreach(bus, region) {
		if (strncmp(region_name, ndctl_region_get_devname(region), 256) == 0) {
			dax = get_dax_region(region);  /* find the dax region */
			break;
		}
	}
	if (!dax) {
		rc = -ENODEV;
		fail();
		goto cleanup;
	}

	/* get badblocks */
	if (snprintf(path, 256, "/sys/devices/platform/%s/%s/%s/badblocks", PLATFORM, bus_name,
		     ndctl_region_get_devname(region)) >= 256) {
		rc = -ENXIO;
		goto cleanup;
	}
	f = fopen(path, "r");
	if (!f || !fgets(buf, sizeof(buf), f)) {
		fprintf(stderr, "%s: %s unreadable or empty\n", __func__, path);
		if (f)
			fclose(f);
		rc = -ENXIO;
		goto cleanup;
	}
	fclose(f);
	/* retrieve badblocks from buf */
	rc = sscanf(buf, "%llu %llu", &offset, &blocks);
	if (rc != 2) {
		rc = rc == EOF ? -errno : -EINVAL;
		fail();
		goto cleanup;
	}
	/* get resource base */
	base = ndctl_region_get_resource(region);
	if (base == ULLONG_MAX) {
		rc = -ERANGE;
		goto cleanup;
	}
	check_cmds = __bus_cmds;
	start = base + offset * 512;
	size = 512 * blocks;

	rc = load_faults(dax, start);
	if (rc != 1) {
		fprintf(stderr, "%s: a load of the poisoned page did not raise SIGBUS\n", __func__);
		rc = rc < 0 ? rc : -ENXIO;
		goto cleanup;
	}
	if (sig_code != BUS_MCEERR_AR) {
		fprintf(stderr, "%s: SIGBUS si_code %d, not BUS_MCEERR_AR\n", __func__, sig_code);
		rc = -ENXIO;
		goto cleanup;
	}

	rc = check_ars_cap(bus, start, size, &check_cmds[ND_CMD_ARS_CAP]);
	if (rc < 0)
		goto cleanup;
	rc = check_ars_start(bus, &check_cmds[ND_CMD_ARS_START]);
	if (rc < 0)
		goto cleanup;
	rc = check_ars_status(bus, &check_cmds[ND_CMD_ARS_STATUS], start, size);
	if (rc < 0)
		goto cleanup;
	rc = check_clear_error(bus, &check_cmds[ND_CMD_CLEAR_ERROR]);
	if (rc < 0)
		goto cleanup;

	rc = load_faults(dax, start);
	if (rc != 0) {
		fprintf(stderr, "%s: a load of the cleared page %s\n", __func__, rc > 0 ? "raised SIGBUS" : "failed");
		rc = rc < 0 ? rc : -ENXIO;
		goto cleanup;
	}
	for (i = 1; i < (int)ARRAY_SIZE(__bus_cmds); i++) {
		if (__bus_cmds[i].cmd) {
			ndctl_cmd_unref(__bus_cmds[i].cmd);
			__bus_cmds[i].cmd = NULL;
		}
	}
cleanup:
	ndctl_unref(ctx);
	return rc;
}

int main(int argc, char *argv[])
{
	struct sigaction act;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: daxdev_errors BUS REGION\n");
		return 2;
	}
	memset(&act, 0, sizeof(act));
	act.sa_sigaction = sigbus_hdl;
	act.sa_flags = SA_SIGINFO;
	if (sigaction(SIGBUS, &act, 0)) {
		fail();
		return 1;
	}
	rc = test_daxdev_clear_error(argv[1], argv[2]);
	if (rc == 0)
		printf("all checks passed\n");
	return rc ? 1 : 0;
}
