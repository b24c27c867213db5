"""`.pulse/`: task-pulse's private directory inside a tasks dir, trusted only once verified.

A tasks dir may be shared with other local users (a group of agents' accounts). They may write task
files there: that is the point. They must not be able to put their own `.pulse` (or a symlink) in
its place, or swap ours while we run: the state db holds unmasked snapshots, and a planted
`locks` or `state.db` symlink would turn our writes and cleanups against the user's own files.

So `.pulse` is opened once with `O_NOFOLLOW` relative to the tasks dir, checked on the handle (a
directory, ours, not writable by anyone else), and from then on every path under it goes through
that handle (`/proc/self/fd/N/…`, which the kernel resolves to the directory we checked, whatever
now sits at the name). SQLite, which only takes paths, gets such a path too.
"""

from __future__ import annotations

import errno
import os
import stat

from task_pulse.errors import BadInput

NAME = ".pulse"
SUBDIRS = ("locks", "tmp")
_PROC_FD = "/proc/self/fd"


class UnsafeDir(BadInput):
    """The tasks dir or its `.pulse` could let another user into task-pulse's state (exit 2: a setup
    problem, which systemd must not restart into a loop)."""


def others_who_can_write(st: os.stat_result) -> str | None:
    """Who else may write a directory with this stat: None when only its owner (and root) may.

    A group-writable directory whose group is the user's own private group (Debian and Fedora give
    every user one, and a umask of 002 makes dirs 0775) is not shared with anyone.
    """
    mode = st.st_mode
    if mode & stat.S_IWOTH:
        return "every local user"
    if not mode & stat.S_IWGRP:
        return None
    import grp  # only for a group-writable dir
    import pwd

    try:
        group = grp.getgrgid(st.st_gid)
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return f"group {st.st_gid}"
    if group.gr_name == owner and set(group.gr_mem) <= {owner}:
        return None
    return f"group {group.gr_name}"


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def open_private_dir(root: str, *, create: bool) -> int | None:
    """An open handle on `<root>/.pulse` once it passed the checks; None if it is absent and not
    to be created. Raises UnsafeDir (one line, with the fix) when it must not be used."""
    shown = os.path.join(root, NAME)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        try:
            fd = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except FileNotFoundError:
            if not create:
                return None
            _refuse_creating_in(root, os.fstat(root_fd))
            try:  # noqa: SIM105 - contextlib is not worth its import on a writer's path
                os.mkdir(NAME, 0o700, dir_fd=root_fd)
            except FileExistsError:
                pass  # another writer made it just now: it is checked below like any other
            fd = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_DIRECTORY makes a symlink ENOTDIR too
                link = stat.S_ISLNK(os.stat(NAME, dir_fd=root_fd, follow_symlinks=False).st_mode)
                raise UnsafeDir(f"{shown} is {'a symlink' if link else 'not a directory'}: task-pulse keeps its "
                                f"state only in a directory of its own; remove it (rm {shown}) and try again") from None
            raise
    finally:
        os.close(root_fd)
    try:
        _check_private(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_creating_in(root: str, st: os.stat_result) -> None:
    """In a dir others can write, a `.pulse` of ours is only safe from being swapped with the sticky
    bit (then only its owner may rename or remove it)."""
    others = others_who_can_write(st)
    if others and not st.st_mode & stat.S_ISVTX:
        raise UnsafeDir(f"{root} is writable by {others} (mode {stat.S_IMODE(st.st_mode):o}) without the sticky "
                        f"bit, so they could replace task-pulse's private {NAME}/ there: run `chmod +t {root}` "
                        f"(or `chmod go-w {root}` if it is not meant to be shared)")


def _check_private(fd: int, shown: str) -> None:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        raise UnsafeDir(f"{shown} belongs to {_owner_name(st.st_uid)}, not to you: someone else made it, and "
                        f"task-pulse will not keep its state there; have it removed (rm -r {shown}) and try again")
    others = others_who_can_write(st)
    if others:
        raise UnsafeDir(f"{shown} is writable by {others} (mode {stat.S_IMODE(st.st_mode):o}), so what is in it "
                        f"may not be task-pulse's own: check it, then `chmod 700 {shown}`")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o700)  # readable by others (made by hand or by an older tool): private again
    for sub in SUBDIRS:
        try:  # noqa: SIM105 - as above
            os.mkdir(sub, 0o700, dir_fd=fd)
        except FileExistsError:
            pass


def handle_path(fd: int, fallback: str) -> str:
    """A path that reaches the directory open as `fd` whatever sits at its name now (Linux /proc);
    `fallback` (its name) where /proc is not mounted."""
    path = f"{_PROC_FD}/{fd}"
    return path if os.path.isdir(path) else fallback
