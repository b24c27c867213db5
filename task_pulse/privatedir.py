"""`.pulse/`: task-pulse's private directory inside a tasks dir, used only once checked, and through its handle.

A tasks dir may be shared with other local users (a group of agents' accounts). They may write task
files there: that is the point. They must not be able to put their own `.pulse` (or a symlink) in
its place, or swap ours while we run: the state db holds what the tasks said, and a planted `locks`
or `state.db` symlink would turn our writes and cleanups against the user's own files.

Two things make that hold:

* Nobody else may rename anything on the way to `.pulse`. Sharing is counted from everything that
  gives another account write access to a directory: its mode, its POSIX ACL (`setfacl -m u:…:rwx`
  leaves the mode 0770), and every holder of its group id (primary or supplementary, under any group
  name: `groupadd -o` makes a second name for the same gid). The tasks dir may be shared like that
  only with the sticky bit, and ours or root's (then nobody else can rename or remove `.pulse`); each
  directory above it must be private, or sticky with the entry under it ours or root's.
* Once checked, `.pulse` is held open (its file descriptor kept for the process's life), and every
  path task-pulse opens in it is `/proc/self/fd/N/<name>`: the kernel follows that to the directory
  the handle holds, whatever is renamed meanwhile. SQLite resolves such a path to a name itself (it
  reads the link, then opens by name), so `state/outbox.py` checks, once connected, that the file SQLite
  opened is the one in the held directory.

Within `.pulse`, the directory and every entry task-pulse uses there are real directories and files
of ours, never symlinks, and writable by nobody else.
"""

from __future__ import annotations

import errno
import os
import stat
import struct

from task_pulse.errors import BadInput

NAME = ".pulse"
SUBDIRS = ("locks", "tmp")
# Files task-pulse opens in `.pulse` by name: checked when present (made 0600 by whoever creates them).
FILES = ("state.db", "state.db-wal", "state.db-shm", "daemon.lock", "drain-told")
# The held `.pulse` handles of this process, by (device, inode): one per directory, never closed (paths built
# on them are handed out, and must stay valid; a process uses a few tasks dirs at most).
_HELD: dict[tuple[int, int], int] = {}
_PROC_FD = "/proc/self/fd"
# system.posix_acl_access: a little-endian header (version 2), then (tag, permissions, id) per entry.
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK = 0x02, 0x04, 0x08, 0x10
_ACL_WRITE = 0x2


class UnsafeDir(BadInput):
    """The tasks dir or its `.pulse` could let another user into task-pulse's state (exit 2: a setup
    problem, which systemd must not restart into a loop)."""


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner_name(uid: int) -> str:
    name = _user_name(uid)
    return f"uid {uid} ({name})" if name != str(uid) else f"uid {uid}"


def group_holders(gid: int) -> set[str] | None:
    """Every account that holds `gid`: as its primary group, or as a member of any group with that id (one
    gid may have several names). None when no group has that id (nobody can say who holds it)."""
    import grp
    import pwd

    groups = [g for g in grp.getgrall() if g.gr_gid == gid]
    if not groups:
        return None
    return {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid} | {m for g in groups for m in g.gr_mem}


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _shared_group(gid: int, owner: str) -> str | None:
    """`group NAME` when an account other than `owner` holds `gid`, None when only the owner does."""
    holders = group_holders(gid)
    if holders is not None and holders <= {owner}:
        return None
    others = sorted((holders or set()) - {owner})
    shown = f" ({', '.join(others[:3])}{', …' if len(others) > 3 else ''})" if others else ""
    return f"group {_group_name(gid)}{shown}"


def _access_acl(where: str | int) -> list[tuple[int, int, int]]:
    """The entries (tag, permissions, id) of a directory's access ACL; empty when it has none beyond its mode."""
    try:
        raw = os.getxattr(where, "system.posix_acl_access", follow_symlinks=False) if isinstance(where, str) \
            else os.getxattr(where, "system.posix_acl_access")
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return []
        raise
    return [struct.unpack_from("<HHI", raw, at) for at in range(4, len(raw) - 7, 8)]


def others_who_can_write(st: os.stat_result, where: str | int | None = None) -> str | None:
    """Who else may write a directory with this stat (and, given `where`, its path or fd: its ACL): None when
    only its owner (and root) may.

    A group-writable directory is not shared when its group is held by its owner alone (Debian and Fedora
    give every user a private group, and a umask of 002 makes dirs 0775)."""
    mode = st.st_mode
    if mode & stat.S_IWOTH:
        return "every local user"
    owner = _user_name(st.st_uid)
    group_can_write = bool(mode & stat.S_IWGRP)
    acl = _access_acl(where) if where is not None else []
    if acl:
        mask = next((perm for tag, perm, _ in acl if tag == _ACL_MASK), 0o7)
        for tag, perm, ident in acl:
            if not perm & mask & _ACL_WRITE:
                continue
            if tag == _ACL_USER and ident != st.st_uid:
                return f"user {_user_name(ident)} (an ACL: getfacl shows it)"
            if tag == _ACL_GROUP and (shared := _shared_group(ident, owner)) is not None:
                return f"{shared} (an ACL: getfacl shows it)"
        # With an ACL, the mode's group bits are its mask: the owning group's own entry says what it may do.
        group_can_write = any(tag == _ACL_GROUP_OBJ and perm & mask & _ACL_WRITE for tag, perm, _ in acl)
    return _shared_group(st.st_gid, owner) if group_can_write else None


def _check_path_to(root: str) -> None:
    """Nobody but us and root may move the tasks dir, or any directory on the way to it (symlinks followed
    as the kernel would): each directory a name is looked up in is private, or sticky with that entry ours."""
    me = os.geteuid()
    parts = [p for p in os.path.abspath(root).split("/") if p]
    current, hops = "/", 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        path = os.path.join(current, name)
        try:
            entry = os.lstat(path)
        except FileNotFoundError:
            return  # made later, by us (ensure_dirs): the checks of the dir itself follow
        folder = os.stat(current)
        mode = stat.S_IMODE(folder.st_mode)
        if folder.st_uid not in (me, 0):  # whoever owns a directory may rename what is in it, sticky or not
            raise UnsafeDir(f"{current} belongs to {_owner_name(folder.st_uid)}, who could move {path} away and put "
                            f"another in its place, with a {NAME}/ of theirs: use a tasks dir outside {current}")
        others = others_who_can_write(folder, current)
        if others is not None and not (folder.st_mode & stat.S_ISVTX and entry.st_uid in (me, 0)):
            fix = f"chmod +t {current}" if not folder.st_mode & stat.S_ISVTX else f"use a tasks dir outside {current}"
            raise UnsafeDir(f"{current} is writable by {others} (mode {mode:o}), so they could move {path} away and "
                            f"put another in its place, with a {NAME}/ of theirs: {fix} (or `chmod go-w {current}` "
                            "if it is not meant to be shared)")
        if stat.S_ISLNK(entry.st_mode):
            hops += 1
            if hops > 40:
                raise UnsafeDir(f"{root}: too many levels of symlinks")
            target = os.readlink(path)
            parts = [p for p in target.split("/") if p] + parts
            current = "/" if target.startswith("/") else current
            continue
        current = path


def check_private_dir(root: str, *, create: bool) -> int | None:
    """The held handle (fd) of `<root>/.pulse` once it is safe to use, creating it (0700) if asked. None when it
    is absent and not to be created; UnsafeDir (one line, with the fix) when it must not be used."""
    shown = os.path.join(root, NAME)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        _check_path_to(root)
        _check_tasks_dir(root, os.fstat(root_fd), root_fd)
        try:
            fd = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except FileNotFoundError:
            if not create:
                return None
            try:  # noqa: SIM105 - contextlib is not worth its import on a writer's path
                os.mkdir(NAME, 0o700, dir_fd=root_fd)
            except FileExistsError:
                pass  # another writer made it just now: it is checked below like any other
            fd = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=root_fd)
        except OSError as exc:
            entry = os.stat(NAME, dir_fd=root_fd, follow_symlinks=False)
            # Someone else's `.pulse` (mode 0700: not even readable), a symlink (O_DIRECTORY makes it ENOTDIR),
            # a file: refused, saying whose it is and how it goes.
            reason = _not_ours(shown, entry, sticky=bool(os.fstat(root_fd).st_mode & stat.S_ISVTX))
            if reason or exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeDir(reason or f"{shown} is not a directory: remove it and try again") from None
            raise
    finally:
        os.close(root_fd)
    try:
        _check_private(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    st = os.fstat(fd)
    held = _HELD.get((st.st_dev, st.st_ino))
    if held is not None and os.fstat(held).st_nlink > 0:
        os.close(fd)  # checked again (a long-lived process opening the db anew): the handle it holds is this one
        return held
    _HELD[st.st_dev, st.st_ino] = fd  # (a held one removed since, its inode number used again: replaced)
    return fd


def handle_path(fd: int, name: str) -> str:
    """The path of `name` in the directory held open as `fd`: opened through the handle, not through names."""
    return f"{_PROC_FD}/{fd}/{name}"


def _check_tasks_dir(root: str, st: os.stat_result, fd: int) -> None:
    """Only we (and root) may rename or remove entries of the tasks dir: else `.pulse` could be
    swapped for another between our check and SQLite's open."""
    others = others_who_can_write(st, fd)
    if st.st_uid not in (os.geteuid(), 0) and others is None:
        raise UnsafeDir(f"{root} belongs to {_owner_name(st.st_uid)}, who could replace task-pulse's private {NAME}/ "
                        "there; use a tasks dir of your own")
    if others is None or (st.st_mode & stat.S_ISVTX and st.st_uid in (os.geteuid(), 0)):
        return
    mode = stat.S_IMODE(st.st_mode)
    if st.st_mode & stat.S_ISVTX:  # the owner of a sticky dir may still rename what is in it
        raise UnsafeDir(f"{root} belongs to {_owner_name(st.st_uid)} and is writable by {others} (mode {mode:o}): "
                        f"its owner could replace task-pulse's private {NAME}/ there; use a tasks dir of your own")
    raise UnsafeDir(f"{root} is writable by {others} (mode {mode:o}) without the sticky bit, so they could "
                    f"replace task-pulse's private {NAME}/ there: run `chmod +t {root}` (or `chmod go-w {root}` "
                    "if it is not meant to be shared)")


def _not_ours(shown: str, st: os.stat_result, *, sticky: bool = False, where: str | int | None = None) -> str:
    """Why an entry in or at `.pulse` is not task-pulse's own to use; empty when it is."""
    if stat.S_ISLNK(st.st_mode):
        return f"{shown} is a symlink: task-pulse never follows one there; remove it (rm {shown}) and try again"
    if st.st_uid != os.geteuid():
        owner = _owner_name(st.st_uid)
        # In a sticky dir only its owner (or root) can remove it.
        who = f"{_user_name(st.st_uid)} or root" if sticky else "its owner, root, or you"
        return (f"{shown} belongs to {owner}, not to you, and task-pulse keeps its state only in files of its own: "
                f"if it is not that user's, have {who} remove it (rm -r {shown}); else use a tasks dir of your own")
    if others := others_who_can_write(st, where):
        fix = f"setfacl -b {shown}" if "(an ACL" in others else f"chmod go-w {shown}"
        return (f"{shown} is writable by {others} (mode {stat.S_IMODE(st.st_mode):o}), so what is "
                f"in it may not be task-pulse's own: check it, then `{fix}`")
    return ""


def _check_private(fd: int, shown: str) -> None:
    """`.pulse` (open as `fd`) and the entries task-pulse uses in it are ours and nobody else's."""
    st = os.fstat(fd)
    if reason := _not_ours(shown, st, where=fd):
        raise UnsafeDir(reason)
    if stat.S_IMODE(st.st_mode) & 0o077 or _access_acl(fd):
        _make_private(fd)  # readable by others (made by hand, by an older tool, or under a default ACL)
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
        reason = _not_ours(path, entry, where=handle_path(fd, name) if is_dir else None)
        if not reason and not (stat.S_ISDIR if is_dir else stat.S_ISREG)(entry.st_mode):
            reason = f"{path} is not a {'directory' if is_dir else 'regular file'}: remove it and try again"
        if not reason and not is_dir and entry.st_nlink > 1:
            reason = f"{path} has {entry.st_nlink} hard links, so it is also elsewhere: remove it and try again"
        if reason:
            raise UnsafeDir(reason)


def _make_private(fd: int) -> None:
    os.fchmod(fd, 0o700)
    try:
        os.removexattr(fd, "system.posix_acl_access")
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
