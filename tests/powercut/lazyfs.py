#!/usr/bin/env python3
"""A FUSE file system that loses what was not fsynced when the power is cut.

    python3 lazyfs.py BACKING MOUNTPOINT

Mounts BACKING at MOUNTPOINT. Every write goes to an in-memory page cache of its file and reaches
BACKING only when the file is fsynced (fsync or fdatasync). Killing this process (SIGKILL) is a
power cut: BACKING then holds exactly what was made durable, nothing that was merely written.
Metadata (create, rename, unlink, mkdir, truncate of a clean file) reaches BACKING at once, as on a
journaling file system; file contents are the volatile part, which is what an acknowledgement
before fsync would lose. While a file `.fail-fsync` exists in BACKING, every fsync fails with EIO
(a failing disk).

Used by the power-cut tests (crates/cli/tests/powercut.rs); needs fusepy and libfuse2 and runs as
root (libfuse mounts directly, no fusermount).
"""

import errno
import os
import sys
import threading

from fuse import FUSE, FuseOSError, Operations


class LazyFS(Operations):
    def __init__(self, backing):
        self.backing = os.path.realpath(backing)
        # Unsynced contents by path (relative to the root): the whole file as it would be read.
        self.dirty = {}
        self.mutex = threading.RLock()

    def _real(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    def _contents(self, path):
        """The dirty buffer of `path`, loading the durable contents on the first write."""
        if path not in self.dirty:
            with open(self._real(path), "rb") as f:
                self.dirty[path] = bytearray(f.read())
        return self.dirty[path]

    # Metadata ---------------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        with self.mutex:
            try:
                st = os.lstat(self._real(path))
            except OSError as e:
                raise FuseOSError(e.errno)
            attrs = {k: getattr(st, k) for k in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                "st_atime", "st_mtime", "st_ctime")}
            if path in self.dirty:
                attrs["st_size"] = len(self.dirty[path])
            return attrs

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def access(self, path, mode):
        if not os.access(self._real(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path, mode):
        os.chmod(self._real(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._real(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self._real(path), times)

    def mkdir(self, path, mode):
        os.mkdir(self._real(path), mode)

    def rmdir(self, path):
        os.rmdir(self._real(path))

    def unlink(self, path):
        with self.mutex:
            os.unlink(self._real(path))
            self.dirty.pop(path, None)

    def rename(self, old, new):
        with self.mutex:
            os.rename(self._real(old), self._real(new))
            self.dirty.pop(new, None)
            if old in self.dirty:
                self.dirty[new] = self.dirty.pop(old)
            # A renamed directory carries its files' unsynced contents along.
            prefix = old.rstrip("/") + "/"
            for p in [p for p in self.dirty if p.startswith(prefix)]:
                self.dirty[new.rstrip("/") + "/" + p[len(prefix):]] = self.dirty.pop(p)

    def link(self, target, source):
        os.link(self._real(source), self._real(target))

    def symlink(self, target, source):
        os.symlink(source, self._real(target))

    def readlink(self, path):
        return os.readlink(self._real(path))

    def statfs(self, path):
        st = os.statvfs(self._real(path))
        return {k: getattr(st, k) for k in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
            "f_files", "f_flag", "f_frsize", "f_namemax")}

    # Contents ---------------------------------------------------------------------------------

    def create(self, path, mode, fi=None):
        with self.mutex:
            fd = os.open(self._real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            os.close(fd)
            self.dirty.pop(path, None)
            return 0

    def open(self, path, flags):
        with self.mutex:
            if flags & os.O_TRUNC:
                self.truncate(path, 0)
            return 0

    def read(self, path, size, offset, fh):
        with self.mutex:
            if path in self.dirty:
                return bytes(self.dirty[path][offset:offset + size])
            with open(self._real(path), "rb") as f:
                f.seek(offset)
                return f.read(size)

    def write(self, path, data, offset, fh):
        with self.mutex:
            buf = self._contents(path)
            if offset > len(buf):
                buf.extend(b"\0" * (offset - len(buf)))
            buf[offset:offset + len(data)] = data
            return len(data)

    def truncate(self, path, length, fh=None):
        with self.mutex:
            buf = self._contents(path)
            if length < len(buf):
                del buf[length:]
            else:
                buf.extend(b"\0" * (length - len(buf)))

    def fallocate(self, path, mode, offset, length, fh):
        with self.mutex:
            buf = self._contents(path)
            if offset + length > len(buf) and not mode & 1:  # not FALLOC_FL_KEEP_SIZE
                buf.extend(b"\0" * (offset + length - len(buf)))
            return 0

    def fsync(self, path, datasync, fh):
        # A failing disk: while BACKING/.fail-fsync exists, every fsync fails with EIO (and the
        # unsynced contents stay unsynced).
        if os.path.exists(os.path.join(self.backing, ".fail-fsync")):
            raise FuseOSError(errno.EIO)
        with self.mutex:
            buf = self.dirty.pop(path, None)
            if buf is None:
                return 0
            fd = os.open(self._real(path), os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, bytes(buf))
                os.fsync(fd)
            finally:
                os.close(fd)
            return 0

    def fsyncdir(self, path, datasync, fh):
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0


def main():
    backing, mountpoint = sys.argv[1], sys.argv[2]
    FUSE(LazyFS(backing), mountpoint, foreground=True, nothreads=False, allow_other=False)


if __name__ == "__main__":
    main()
