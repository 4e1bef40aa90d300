/*
 * The personality across exec, whatever environment a program gives its
 * child: `env -i`, a daemon that builds its children's environment, PMDK's
 * test framework running its helper tools. Each exec entry point of libc
 * hands the new program an environment that still loads this library and
 * still points it at the mount (LD_PRELOAD and DAXFUSE_PERSONALITY as the
 * program started with them). The environment is built on the stack: a
 * vfork child may exec too, and must not allocate.
 */
#include "preload.h"

#include <errno.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static char settings[PATH_MAX + 256];  /* "DAXFUSE_PERSONALITY=..." as this process got it */
static char library[PATH_MAX];         /* this library's path */

void exec_init(const char *personality)
{
	Dl_info info;

	snprintf(settings, sizeof(settings), "DAXFUSE_PERSONALITY=%s", personality);
	if (dladdr((void *)exec_init, &info) && info.dli_fname)
		snprintf(library, sizeof(library), "%s", info.dli_fname);
}

static int named(const char *entry, const char *name)
{
	size_t n = strlen(name);

	return !strncmp(entry, name, n) && entry[n] == '=';
}

/* How many entries envp has; whether it keeps the personality as it is. */
static size_t inspect(char *const envp[], int *kept)
{
	int preload = 0, personality = 0;
	size_t n = 0;

	for (; envp && envp[n]; n++) {
		if (named(envp[n], "LD_PRELOAD") && library[0] && strstr(envp[n], library))
			preload = 1;
		if (named(envp[n], "DAXFUSE_PERSONALITY") && envp[n][strlen("DAXFUSE_PERSONALITY=")])
			personality = 1;
	}
	*kept = !cfg.active || !library[0] || (preload && personality);
	return n;
}

/* envp, or into out (room for n + 3 entries) a copy of envp with the
 * personality put back: this library first in LD_PRELOAD (the program's
 * own after it), and DAXFUSE_PERSONALITY unless it set one (an empty one
 * counts as none). preload is
 * the room for the new LD_PRELOAD entry. */
static char *const *with_personality(char *const envp[], size_t n, char **out, char *preload, size_t room)
{
	const char *theirs = NULL;
	int personality = 0;
	size_t i, k = 0;

	for (i = 0; i < n; i++) {
		if (named(envp[i], "LD_PRELOAD")) {
			theirs = envp[i] + strlen("LD_PRELOAD=");
			continue;
		}
		if (named(envp[i], "DAXFUSE_PERSONALITY")) {
			if (!envp[i][strlen("DAXFUSE_PERSONALITY=")])
				continue;  /* emptied: as if unset */
			personality = 1;
		}
		out[k++] = envp[i];
	}
	if (theirs && *theirs && !strstr(theirs, library))
		snprintf(preload, room, "LD_PRELOAD=%s:%s", library, theirs);
	else
		snprintf(preload, room, "LD_PRELOAD=%s", theirs && *theirs ? theirs : library);
	out[k++] = preload;
	if (!personality)
		out[k++] = settings;
	out[k] = NULL;
	debug("a child keeps the personality its environment left out");
	return out;
}

/* Declares fixed (the environment to pass) from envp, on this frame. */
#define FIXED_ENV(fixed, envp)                                                        \
	int kept_;                                                                     \
	size_t n_ = inspect(envp, &kept_);                                             \
	char *slots_[kept_ ? 1 : n_ + 3], preload_[kept_ ? 1 : PATH_MAX * 2];          \
	char *const *fixed = kept_ ? (envp) : with_personality(envp, n_, slots_, preload_, sizeof(preload_))

DECLARE(int, execve, const char *, char *const[], char *const[]);
DECLARE(int, execvpe, const char *, char *const[], char *const[]);
DECLARE(int, fexecve, int, char *const[], char *const[]);
DECLARE(int, execveat, int, const char *, char *const[], char *const[], int);
DECLARE(int, posix_spawn, pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
	char *const[], char *const[]);
DECLARE(int, posix_spawnp, pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
	char *const[], char *const[]);

int execve(const char *path, char *const argv[], char *const envp[])
{
	FIXED_ENV(env, envp);
	RESOLVE(execve);
	return REAL(execve)(path, argv, env);
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
	FIXED_ENV(env, envp);
	RESOLVE(execvpe);
	return REAL(execvpe)(file, argv, env);
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
	FIXED_ENV(env, envp);
	RESOLVE(fexecve);
	return REAL(fexecve)(fd, argv, env);
}

int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
	FIXED_ENV(env, envp);
	RESOLVE(execveat);
	return REAL(execveat)(dirfd, path, argv, env, flags);
}

/* The calls that pass this process's environ: a program may have taken
 * LD_PRELOAD out of it. */
int execv(const char *path, char *const argv[])
{
	return execve(path, argv, environ);
}

int execvp(const char *file, char *const argv[])
{
	return execvpe(file, argv, environ);
}

/* execl and its kin: their list on the stack, then the v form. */
#define ARGV_FROM_LIST(argv, arg0, ap)                                              \
	size_t argc_ = 1;                                                           \
	va_list count_;                                                             \
	va_copy(count_, ap);                                                        \
	while (va_arg(count_, char *))                                              \
		argc_++;                                                            \
	va_end(count_);                                                             \
	char *argv[argc_ + 1];                                                      \
	argv[0] = (char *)(arg0);                                                   \
	for (size_t i_ = 1; i_ <= argc_; i_++)                                      \
		argv[i_] = va_arg(ap, char *)

int execl(const char *path, const char *arg, ...)
{
	va_list ap;

	va_start(ap, arg);
	ARGV_FROM_LIST(argv, arg, ap);
	va_end(ap);
	return execve(path, argv, environ);
}

int execlp(const char *file, const char *arg, ...)
{
	va_list ap;

	va_start(ap, arg);
	ARGV_FROM_LIST(argv, arg, ap);
	va_end(ap);
	return execvpe(file, argv, environ);
}

int execle(const char *path, const char *arg, ...)
{
	char *const *envp = NULL;
	va_list ap;

	va_start(ap, arg);
	ARGV_FROM_LIST(argv, arg, ap);
	envp = va_arg(ap, char *const *);  /* after the list's NULL */
	va_end(ap);
	return execve(path, argv, envp);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
		const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	FIXED_ENV(env, envp);
	RESOLVE(posix_spawn);
	return REAL(posix_spawn)(pid, path, actions, attr, argv, env);
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
		 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	FIXED_ENV(env, envp);
	RESOLVE(posix_spawnp);
	return REAL(posix_spawnp)(pid, file, actions, attr, argv, env);
}
