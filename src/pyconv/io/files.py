"""Writing files so that nothing is lost on failure: a temporary file in the
same folder, flushed and fsync'd, then renamed over the target."""
import os
import tempfile

from ..errors import WriteError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call write(fileobj) on a temporary file, fsync it, rename it to path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())        # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_file(path, write):
    """atomic_write, a failure raised as a WriteError naming the file."""
    try:
        atomic_write(path, write)
    except OSError as e:
        raise WriteError(f"could not write {path}: {e.strerror or e}") from None
