"""Daemon helpers without a mount."""
from daxfuse.daemon.mount import sole_error
from daxfuse.client.runfiles import run_file


def test_run_files_of_different_mount_points_never_collide():
    paths = ["/tmp/a-b", "/tmp/a/b", "/tmp/a\\x2db", "/tmp/a\\b"]
    assert len({run_file(p, "pid") for p in paths}) == len(paths)


def test_a_nursery_wrapped_error_reaches_the_cli_alone():
    err = OSError(13, "Permission denied")
    assert sole_error(BaseExceptionGroup("", [ExceptionGroup("", [err])])) is err
    two = ExceptionGroup("", [err, ValueError()])
    assert sole_error(two) is two
