"""`.pulse/`: task-pulse's private directory inside a tasks dir, used only once checked.

A tasks dir may be shared with other local users (a group of agents' accounts). They may write task
files there: that is the point. They must not be able to put their own `.pulse` (or a symlink) in
its place, or swap ours while we run: the state db holds unmasked snapshots, and a planted
`locks` or `state.db` symlink would turn our writes and cleanups against the user's own files.

Every path under `.pulse` is opened by name (SQLite resolves names itself, whatever handle we hold),
so the name must stay ours: the tasks dir may be writable by nobody else, or carry the sticky bit
and belong to us or root (then nobody else can rename or remove `.pulse`). Within it, `.pulse` is
checked on a handle opened with `O_NOFOLLOW` (a directory, ours, writable by nobody else), and so is
every entry task-pulse uses there (real directories and files of ours, never symlinks).
"""

from __future__ import annotations

import errno
import os
import stat

from task_pulse.errors import BadInput

NAME = ".pulse"
SUBDIRS = ("locks", "tmp")
# Files task-pulse opens in `.pulse` by name: checked when present (made 0600 by whoever creates them).
FILES = ("state.db", "state.db-wal", "state.db-shm", "daemon.lock", "drain-told")


class UnsafeDir(BadInput):
    """The tasks dir or its `.pulse` could let another user into task-pulse's state (exit 2: a setup
    problem, which systemd must not restart into a loop)."""


def others_who_can_write(st: os.stat_result) -> str | None:
    """Who else may write a directory with this stat: None when only its owner (and root) may.

    A group-writable directory whose group is the owner's private group (Debian and Fedora give
    every user one, and a umask of 002 makes dirs 0775) is not shared, unless another account has
    that group, as a supplementary or as its primary group.
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
    if group.gr_name == owner and set(group.gr_mem) <= {owner} and \
            all(p.pw_name == owner for p in pwd.getpwall() if p.pw_gid == st.st_gid):
        return None
    return f"group {group.gr_name}"


def _owner_name(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def check_private_dir(root: str, *, create: bool) -> bool:
    """Make sure `<root>/.pulse` is safe to use by name, creating it (0700) if asked. False when it
    is absent and not to be created; UnsafeDir (one line, with the fix) when it must not be used."""
    shown = os.path.join(root, NAME)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return False
    try:
        _check_tasks_dir(root, os.fstat(root_fd))
        try:
            fd = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except FileNotFoundError:
            if not create:
                return False
            try:  # noqa: SIM105 - contextlib is not worth its import on a writer's path
                os.mkdir(NAME, 0o700, dir_fd=root_fd)
            except FileExistsError:
                pass  # another writer made it just now: it is checked below like any other
            fd = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_DIRECTORY makes a symlink ENOTDIR too
                reason = _not_ours(shown, os.stat(NAME, dir_fd=root_fd, follow_symlinks=False))
                raise UnsafeDir(reason or f"{shown} is not a directory: remove it and try again") from None
            raise
    finally:
        os.close(root_fd)
    try:
        _check_private(fd, shown)
    finally:
        os.close(fd)
    return True


def _check_tasks_dir(root: str, st: os.stat_result) -> None:
    """Only we (and root) may rename or remove entries of the tasks dir: else `.pulse` could be
    swapped for another between our check and SQLite's open."""
    others = others_who_can_write(st)
    if others is None or (st.st_mode & stat.S_ISVTX and st.st_uid in (os.geteuid(), 0)):
        return
    mode = stat.S_IMODE(st.st_mode)
    if st.st_mode & stat.S_ISVTX:  # the owner of a sticky dir may still rename what is in it
        raise UnsafeDir(f"{root} belongs to {_owner_name(st.st_uid)} and is writable by {others} (mode {mode:o}): "
                        f"its owner could replace task-pulse's private {NAME}/ there; use a tasks dir of your own")
    raise UnsafeDir(f"{root} is writable by {others} (mode {mode:o}) without the sticky bit, so they could "
                    f"replace task-pulse's private {NAME}/ there: run `chmod +t {root}` (or `chmod go-w {root}` "
                    "if it is not meant to be shared)")


def _not_ours(shown: str, st: os.stat_result) -> str:
    """Why an entry in or at `.pulse` is not task-pulse's own to use; empty when it is."""
    if stat.S_ISLNK(st.st_mode):
        return f"{shown} is a symlink: task-pulse never follows one there; remove it (rm {shown}) and try again"
    if st.st_uid != os.geteuid():
        return (f"{shown} belongs to {_owner_name(st.st_uid)}, not to you, and task-pulse keeps its state only in "
                f"files of its own: if it is not that user's, have it removed (rm -r {shown}); else use a tasks "
                "dir of your own")
    if others := others_who_can_write(st):
        return (f"{shown} is writable by {others} (mode {stat.S_IMODE(st.st_mode):o}), so what is "
                f"in it may not be task-pulse's own: check it, then `chmod go-w {shown}`")
    return ""


def _check_private(fd: int, shown: str) -> None:
    """`.pulse` (open as `fd`) and the entries task-pulse uses in it are ours and nobody else's."""
    st = os.fstat(fd)
    if reason := _not_ours(shown, st):
        raise UnsafeDir(reason)
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o700)  # readable by others (made by hand or by an older tool): private again
    for name in (*SUBDIRS, *FILES):
        path, is_dir = os.path.join(shown, name), name in SUBDIRS
        if is_dir:
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
                continue
            except FileExistsError:
                pass
        try:
            entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        reason = _not_ours(path, entry)
        if not reason and not (stat.S_ISDIR if is_dir else stat.S_ISREG)(entry.st_mode):
            reason = f"{path} is not a {'directory' if is_dir else 'regular file'}: remove it and try again"
        if reason:
            raise UnsafeDir(reason)
