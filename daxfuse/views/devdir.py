"""The /dev that `daxfuse exec` puts over the host's: shared by the tree,
which serves it as MOUNT/dev, and by exec, which mounts host nodes on it."""

# Where exec mounts the host's /dev; every host name is a link into it...
HOST_DEV = ".host"
# ...but for the host nodes programs walk through often, on which exec mounts
# the node itself. A link costs a READLINK request at every path walk
# (pyfuse3 cannot let the kernel cache links: a stat() of /dev/null takes
# 60-70 us, against 0.25 us on the host); a mount on the name costs nothing.
HOST_MOUNTED = ("null", "zero", "full", "random", "urandom", "tty", "shm", "pts", "mqueue", "hugepages")
