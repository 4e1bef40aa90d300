/*
 * Tables a signal handler may read while another thread adds to them:
 * entries in chunks mapped as they are needed and never moved or freed, a
 * count that only grows, published after the entry's chunk. table_add is
 * async-signal-safe (no malloc, no lock): a SIGBUS handler adds grants.
 */
#include "preload.h"

#include <sys/mman.h>

DECLARE(void *, mmap, void *, size_t, int, int, int, off_t);
DECLARE(int, munmap, void *, size_t);

static void *chunk(struct table *t, unsigned long c)
{
	void *p = __atomic_load_n(&t->chunks[c], __ATOMIC_ACQUIRE), *fresh, *none = NULL;

	if (p)
		return p;
	RESOLVE(mmap);
	RESOLVE(munmap);
	fresh = REAL(mmap)(NULL, TABLE_CHUNK * t->entry_size, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fresh == MAP_FAILED)
		return NULL;
	if (__atomic_compare_exchange_n(&t->chunks[c], &none, fresh, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return fresh;
	REAL(munmap)(fresh, TABLE_CHUNK * t->entry_size);  /* another thread mapped it first */
	return none;
}

/* The index of a new, zeroed entry; -1 (said aloud) when the table is full. */
long table_add(struct table *t)
{
	unsigned long i = __atomic_load_n(&t->count, __ATOMIC_ACQUIRE);

	for (;;) {
		if (i >= (unsigned long)TABLE_CHUNK * TABLE_CHUNKS || !chunk(t, i / TABLE_CHUNK)) {
			loud("%s: no room for more than %lu (an internal limit): the call fails", t->what, i);
			return -1;
		}
		if (__atomic_compare_exchange_n(&t->count, &i, i + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return (long)i;
	}
}

void *table_at(struct table *t, unsigned long i)
{
	char *c = __atomic_load_n(&t->chunks[i / TABLE_CHUNK], __ATOMIC_ACQUIRE);

	return c + (i % TABLE_CHUNK) * t->entry_size;
}

unsigned long table_count(struct table *t)
{
	return __atomic_load_n(&t->count, __ATOMIC_ACQUIRE);
}
