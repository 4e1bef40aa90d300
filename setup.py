"""What pyproject.toml cannot declare stably: the device-dax personality's
LD_PRELOAD library, built as an extension so that every pip install (wheel
or editable) compiles it with the system C compiler. It is loaded through
LD_PRELOAD by `daxfuse exec`, never imported."""
import glob

from setuptools import Extension, setup

setup(ext_modules=[Extension("daxfuse.libdaxfuse_preload", sorted(glob.glob("daxfuse/preload/*.c")),
                             depends=sorted(glob.glob("daxfuse/preload/*.h")),
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
                             extra_link_args=["-pthread"])])
