/*
 * SIGBUS: what the library makes of a fault in a device mapping, before the
 * program's own handler (or the default action) sees it.
 *
 * - A direct mapping whose window closed (the device was disabled, or its
 *   media errors changed) is mapped again if the device is alive: as the
 *   kernel's device-dax faults a mapping in again once the device is
 *   bound. The access is then retried.
 * - A fault in a poisoned page is memory failure, as the kernel reports
 *   one: si_code BUS_MCEERR_AR and si_addr_lsb from the mapping's page size;
 *   but only where the access is in a poisoned 512-byte block. Hardware
 *   poisons lines, not pages, and device-dax maps a page holding poison as
 *   any other: a load or store elsewhere in that page reads or writes
 *   memory (libpmempool reads a pool's header and layout before it looks
 *   for bad blocks a few KiB on). Such an access is stepped over: the page
 *   is mapped for one instruction (x86's trap flag), then made a hole again
 *   in the SIGTRAP that follows. Meanwhile another thread could read the
 *   page's poison without a fault, and an access that starts in a clean
 *   block and runs into a poisoned one is let through.
 * - Anything else goes to the program, as the kernel sent it.
 *
 * Installed at a process's first direct mapping. The program's own SIGBUS
 * action is kept behind it: sigaction, signal, sigset, bsd_signal and
 * sysv_signal set and report that one. A runtime that installs its handler
 * with a raw rt_sigaction (Go) replaces the library's: its mappings are not
 * revived, and a fault is its SIGBUS, never stale memory.
 *
 * A fault the kernel finds blocked kills the process without a handler,
 * so once installed SIGBUS is never blocked for real: sigprocmask and
 * pthread_sigmask block it in what the program sees alone (QEMU blocks it
 * in every thread, for its signalfd), and the thread that installs the
 * handler has it unblocked. A SIGBUS sent to a thread that asked for it
 * blocked waits until the thread unblocks it, as a blocked one would.
 */
#include "preload.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

DECLARE(int, sigaction, int, const struct sigaction *, struct sigaction *);

DECLARE(int, sigprocmask, int, const sigset_t *, sigset_t *);
DECLARE(int, pthread_sigmask, int, const sigset_t *, sigset_t *);

static struct sigaction program;  /* what the program asked for SIGBUS */
static int installed;
#if defined(__x86_64__)
#define TRAP_FLAG 0x100    /* EFLAGS.TF: a SIGTRAP after the next instruction */
#define STEP_PAGES 4       /* pages one instruction may touch at once */
static struct sigaction program_trap;  /* what the program asked for SIGTRAP */
static int trap_installed;   /* 0, 1 being installed, 2 installed */
#define TLS __thread __attribute__((tls_model("initial-exec")))  /* no allocation in a handler */
static TLS uintptr_t stepped[STEP_PAGES];  /* pages mapped for this thread's step */
static TLS int nstepped;
static TLS int trap_blocked;  /* the thread had SIGTRAP blocked: for the step, it is not */
#endif
static __thread int program_blocks;  /* this thread asked for SIGBUS blocked */
static __thread int held;  /* a sent SIGBUS waits for the program to unblock it */

static int page_shift(size_t n)
{
	int s = 0;

	while ((size_t)1 << s < n)
		s++;
	return s;
}

static int poisoned(const struct grant *g, uint64_t at)
{
	uint32_t p;

	for (p = 0; p < g->npoison; p++)
		if (at >= g->poison[p].offset && at < g->poison[p].offset + g->poison[p].length)
			return 1;
	return 0;
}

/* A fault of a kernel's in device mapping m at addr: 1 mapped again (retry
 * the access), 0 as it was, 2 poison, 3 a clean block of a poisoned page
 * (step over it). m is claimed by the caller. */
static int resolve(struct dax_map *m, uintptr_t addr)
{
	long i = __atomic_load_n(&m->grant, __ATOMIC_ACQUIRE), fresh;
	int window = -1, rc;
	struct grant *g;
	uint64_t at;
	uint32_t p;

	if (i < 0)
		return 0;
	g = grant_at(i);
	at = m->offset + (addr - m->start);
	for (p = 0; p < g->npoison; p++)
		if (at >= (g->poison[p].offset & ~(POISON_PAGE - 1)) &&
		    at < ((g->poison[p].offset + g->poison[p].length + POISON_PAGE - 1) & ~(POISON_PAGE - 1)))
			return g->gen != direct_gen(g->minor) ? 0 : poisoned(g, at) ? 2 : 3;
	if (g->gen == direct_gen(g->minor) || (fresh = direct_revive(i, &window)) < 0)
		return 0;  /* the window is current (past the device's end), or the device is dead */
	rc = map_remap(m, fresh, window);
	if (window >= 0)
		close(window);
	if (rc < 0)
		return 0;
	debug("minor %ld mapped again at %#lx (window %llu)", g->minor, (unsigned long)m->start,
	      (unsigned long long)grant_at(fresh)->gen);
	return 1;
}

/* act, the program's action for sig, as the kernel would have taken it.
 * A fault (retried: the access runs again) cannot be ignored: its default
 * action comes with the retry; a signal that is not retried is raised
 * again under the default action. */
static void program_action(struct sigaction *act, int sig, siginfo_t *si, void *uc, int retried)
{
	struct sigaction now = *act;

	if (now.sa_flags & SA_RESETHAND)
		act->sa_handler = SIG_DFL;
	if (now.sa_handler == SIG_IGN && !retried)
		return;  /* ignored */
	if (now.sa_handler == SIG_DFL || now.sa_handler == SIG_IGN) {
		struct sigaction dfl = {.sa_handler = SIG_DFL};

		REAL(sigaction)(sig, &dfl, NULL);
		if (!retried)
			raise(sig);
		return;
	}
	if (now.sa_flags & SA_SIGINFO)
		now.sa_sigaction(sig, si, uc);
	else
		now.sa_handler(sig);
}

/* The program's SIGBUS action: a fault is retried, a sent one is not. */
static void to_program(int sig, siginfo_t *si, void *uc)
{
	program_action(&program, sig, si, uc, si->si_code > 0);
}

#if defined(__x86_64__)
/* The SIGTRAP after a step: its pages are holes again. Any other goes to
 * the program, as the kernel sent it (a trap is not retried: the default
 * action is raised). */
static void trap(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;

	if (nstepped) {
		while (nstepped) {
			uintptr_t page = stepped[--nstepped];
			struct dax_map *m = map_claim_at(page);
			long g;

			if (m) {
				if ((g = __atomic_load_n(&m->grant, __ATOMIC_ACQUIRE)) >= 0)
					direct_page(g, page, m->offset + (page - m->start), m->prot, 1);
				map_release(m);
			}
		}
		((ucontext_t *)uc)->uc_mcontext.gregs[REG_EFL] &= ~TRAP_FLAG;
		if (trap_blocked)
			sigaddset(&((ucontext_t *)uc)->uc_sigmask, SIGTRAP);
		trap_blocked = 0;
		errno = saved;
		return;
	}
	errno = saved;
	program_action(&program_trap, sig, si, uc, 0);
}

static void reinstall_trap(void)
{
	struct sigaction ours = {.sa_sigaction = trap};

	ours.sa_mask = program_trap.sa_mask;
	ours.sa_flags = SA_SIGINFO | (program_trap.sa_flags & (SA_ONSTACK | SA_RESTART));
	REAL(sigaction)(SIGTRAP, &ours, NULL);
}

/* Map the page of m at addr for the instruction that faulted there, and
 * trap after it. 0: it cannot be done (the fault is poison then). */
static int step_over(struct dax_map *m, uintptr_t addr, void *uc)
{
	uintptr_t page = addr & ~(POISON_PAGE - 1);
	int state = 0;

	if (nstepped == STEP_PAGES ||
	    direct_page(m->grant, page, m->offset + (page - m->start), m->prot, 0) < 0)
		return 0;
	if (__atomic_compare_exchange_n(&trap_installed, &state, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		REAL(sigaction)(SIGTRAP, NULL, &program_trap);
		reinstall_trap();
		__atomic_store_n(&trap_installed, 2, __ATOMIC_RELEASE);
	}
	while (__atomic_load_n(&trap_installed, __ATOMIC_ACQUIRE) != 2)
		;
	if (!nstepped && sigismember(&((ucontext_t *)uc)->uc_sigmask, SIGTRAP)) {
		sigdelset(&((ucontext_t *)uc)->uc_sigmask, SIGTRAP);  /* a blocked trap would kill */
		trap_blocked = 1;
	}
	stepped[nstepped++] = page;
	((ucontext_t *)uc)->uc_mcontext.gregs[REG_EFL] |= TRAP_FLAG;
	debug("minor %ld: a clean block of the poisoned page at %#lx, stepped over", m->minor, (unsigned long)page);
	return 1;
}
#else
static int step_over(struct dax_map *m, uintptr_t addr, void *uc)
{
	return 0;  /* no trap flag: the whole page is poison */
}
#endif

static void handler(int sig, siginfo_t *si, void *uc)
{
	int saved = errno, r = 0;
	struct dax_map *m;
	siginfo_t copy;

	if (si->si_code <= 0 && program_blocks) {
		held = 1;
		return;
	}
	if (si->si_code > 0 && (m = map_claim_at((uintptr_t)si->si_addr))) {
		r = resolve(m, (uintptr_t)si->si_addr);
		if (r == 3)
			r = step_over(m, (uintptr_t)si->si_addr, uc) ? 1 : 2;
		if (r == 2) {
			copy = *si;
			copy.si_code = BUS_MCEERR_AR;
			copy.si_addr_lsb = page_shift(m->align > 2 << 20 ? 2 << 20 : m->align);
			si = &copy;
		}
		map_release(m);
	}
	errno = saved;
	if (r != 1)
		to_program(sig, si, uc);
}

/* SIGBUS unblocked for real in this thread, blocked in what the program sees if it was. */
static void unblock_here(void)
{
	sigset_t bus, old;

	RESOLVE(pthread_sigmask);
	sigemptyset(&bus);
	sigaddset(&bus, SIGBUS);
	if (REAL(pthread_sigmask)(SIG_UNBLOCK, &bus, &old) == 0 && sigismember(&old, SIGBUS))
		program_blocks = 1;
}

/* A mask change, as the program asked (how, set), made with SIGBUS left
 * unblocked once the handler is installed; old as the program would see it. */
static int change_mask(int (*real)(int, const sigset_t *, sigset_t *), int how, const sigset_t *set, sigset_t *old)
{
	int asked = program_blocks, rc;
	sigset_t mine;

	if (!set || !__atomic_load_n(&installed, __ATOMIC_ACQUIRE) || how == SIG_UNBLOCK) {
		rc = real(how, set, old);
		if (rc == 0 && set && how == SIG_UNBLOCK && sigismember(set, SIGBUS))
			program_blocks = 0;
	} else {
		mine = *set;
		sigdelset(&mine, SIGBUS);
		rc = real(how, &mine, old);
		if (rc == 0)
			program_blocks = sigismember(set, SIGBUS) || (how == SIG_BLOCK && asked);
	}
	if (rc == 0 && old && asked)
		sigaddset(old, SIGBUS);
	if (rc == 0 && held && !program_blocks) {
		held = 0;
		raise(SIGBUS);
	}
	return rc;
}

int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
	RESOLVE(sigprocmask);
	return change_mask(REAL(sigprocmask), how, set, old);
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
	RESOLVE(pthread_sigmask);
	return change_mask(REAL(pthread_sigmask), how, set, old);
}

/* Ours, with the program's mask and flags, so that its handler runs as it asked. */
static void reinstall(void)
{
	struct sigaction ours = {.sa_sigaction = handler};

	ours.sa_mask = program.sa_mask;
	ours.sa_flags = SA_SIGINFO | (program.sa_flags & (SA_ONSTACK | SA_NODEFER | SA_RESTART));
	REAL(sigaction)(SIGBUS, &ours, NULL);
}

void sigbus_install(void)
{
	RESOLVE(sigaction);
	if (__atomic_exchange_n(&installed, 1, __ATOMIC_ACQ_REL))
		return;
	REAL(sigaction)(SIGBUS, NULL, &program);
	reinstall();
	unblock_here();
	debug("SIGBUS handler installed");
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	RESOLVE(sigaction);
#if defined(__x86_64__)
	if (sig == SIGTRAP && __atomic_load_n(&trap_installed, __ATOMIC_ACQUIRE) == 2) {
		if (old)
			*old = program_trap;
		if (act) {
			program_trap = *act;
			reinstall_trap();
		}
		return 0;
	}
#endif
	if (sig != SIGBUS || !__atomic_load_n(&installed, __ATOMIC_ACQUIRE))
		return REAL(sigaction)(sig, act, old);
	if (old)
		*old = program;
	if (act) {
		program = *act;
		reinstall();
	}
	return 0;
}

static int trap_wrapped(void)
{
#if defined(__x86_64__)
	return __atomic_load_n(&trap_installed, __ATOMIC_ACQUIRE) == 2;
#else
	return 0;
#endif
}

/* The BSD and System V spellings, which glibc implements with its own
 * internal sigaction (out of a preload's reach). */
static __sighandler_t set_handler(int sig, __sighandler_t handler_, int flags)
{
	struct sigaction act = {.sa_handler = handler_, .sa_flags = flags}, old;

	if (sigaction(sig, &act, &old) < 0)
		return SIG_ERR;
	return old.sa_handler;
}

#define SIGNAL_WRAPPER(name, flags)                                       \
	DECLARE(__sighandler_t, name, int, __sighandler_t);               \
	__sighandler_t name(int sig, __sighandler_t h)                     \
	{                                                                  \
		RESOLVE(name);                                             \
		if ((sig != SIGBUS || !__atomic_load_n(&installed, __ATOMIC_ACQUIRE)) && \
		    (sig != SIGTRAP || !trap_wrapped()))                   \
			return REAL(name)(sig, h);                         \
		return set_handler(sig, h, flags);                         \
	}
SIGNAL_WRAPPER(signal, SA_RESTART)
SIGNAL_WRAPPER(bsd_signal, SA_RESTART)
SIGNAL_WRAPPER(sysv_signal, SA_RESETHAND | SA_NODEFER)
SIGNAL_WRAPPER(__sysv_signal, SA_RESETHAND | SA_NODEFER)
SIGNAL_WRAPPER(sigset, 0)
