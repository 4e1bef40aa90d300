"""What pyproject.toml cannot declare stably: the C libraries, built as
extensions so that every pip install (wheel or editable) compiles them with
the system C compiler, and loaded, never imported: the device-dax
personality's LD_PRELOAD library, which `daxfuse exec` preloads, and the
daemon's hook that lets the kernel cache links."""
import glob

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
setup(ext_modules=[Extension("daxfuse.libdaxfuse_preload", sorted(glob.glob("daxfuse/preload/*.c")),
                             depends=sorted(glob.glob("daxfuse/preload/*.h")),
                             extra_compile_args=FLAGS, extra_link_args=["-pthread"]),
                   # the daemon's: the kernel may cache links (daemon/cache_symlinks.c)
                   Extension("daxfuse.daemon.libdaxfuse_cache_symlinks", ["daxfuse/daemon/cache_symlinks.c"],
                             extra_compile_args=FLAGS, libraries=["dl"])])
