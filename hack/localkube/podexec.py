"""Starts one container of a pod as a local process: `python podexec.py PLAN.json`.

Run by the node agent (single-threaded, standard library only, so it starts fast). It
  1. dies with the agent (PR_SET_PDEATHSIG),
  2. enters a private mount namespace and UTS namespace (the pod's hostname),
  3. builds the container's root: a tmpfs whose top-level entries are bind mounts of this
     machine's / (so the venv, /usr, /proc, /dev ... are all there), then binds each volume at
     its mountPath and the pod's own /etc/hosts. A mountPath that does not exist on this machine
     is created inside a tmpfs *in the namespace*: for `/data` in the tmpfs root itself; for
     `/etc/demo` the existing parent `/etc` is "shadowed" (a tmpfs holding bind mounts of each
     of /etc's entries, plus the new directory). Nothing is created on this machine's /,
  4. chroots into that root, changes to workingDir and execs the command with the pod's env.

The plan (written by the agent):
  {"root": DIR, "hostname": NAME, "workingDir": PATH|null, "argv": [...], "env": {...},
   "mounts": [{"source": HOSTPATH, "target": PATH, "readOnly": bool}], "parentPid": PID}
"""

import ctypes
import json
import os
import signal
import stat
import sys

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWUSER = 0x10000000
PR_SET_PDEATHSIG = 1

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(),
                      fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                      data.encode() if data else None), f"mount {source} {target}")


def bind(source: str, target: str, readonly: bool = False, recursive: bool = True) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def make_mountpoint(path: str, like_dir: bool) -> None:
    if os.path.lexists(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if like_dir:
        os.mkdir(path)
    else:
        open(path, "a").close()


def shadow(root: str, host_dir: str) -> None:
    """Covers root+host_dir with a tmpfs holding bind mounts of host_dir's entries, so new
    entries can be created there without touching this machine's filesystem."""
    target = root + host_dir if host_dir != "/" else root
    mode = stat.S_IMODE(os.stat(host_dir).st_mode)
    mount("tmpfs", target, "tmpfs", 0, f"mode={mode:o}")
    for entry in os.scandir(host_dir):
        dest = os.path.join(target, entry.name)
        try:
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), dest)
            elif entry.is_dir():
                os.mkdir(dest)
                bind(entry.path, dest)
            else:
                open(dest, "a").close()
                bind(entry.path, dest, recursive=False)
        except OSError as e:  # a socket that vanished, an unreadable entry: skip it
            print(f"podexec: skipping {entry.path}: {e}", file=sys.stderr)


def under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def deepest_existing(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def resolve(root: str, path: str) -> str:
    """`path` with every symlink resolved as seen from inside `root` (absolute links are
    relative to root): /var/run/secrets -> /run/secrets where /var/run -> /run."""
    parts = [p for p in path.split("/") if p]
    cur, hops = "/", 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, part)
        if os.path.islink(root + nxt) and hops < 40:
            hops += 1
            link = os.readlink(root + nxt)
            if link.startswith("/"):
                cur = "/"
            parts = [p for p in link.split("/") if p] + parts
            continue
        cur = nxt
    return cur


def main() -> None:
    plan = json.load(open(sys.argv[1]))
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if plan.get("parentPid") and os.getppid() != plan["parentPid"]:
        sys.exit("podexec: the node agent is gone")
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    else:
        # Not root (e.g. a CI runner): a user namespace, in which we are root, owns the mount
        # and UTS namespaces. Files written to volumes stay owned by the real user outside.
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS), "unshare (user namespace)")
        open("/proc/self/setgroups", "w").write("deny")
        open("/proc/self/uid_map", "w").write(f"0 {uid} 1")
        open("/proc/self/gid_map", "w").write(f"0 {gid} 1")
    # Nothing mounted from here on may propagate back to this machine.
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    name = plan["hostname"].encode()
    _check(libc.sethostname(name, len(name)), "sethostname")

    root = plan["root"]
    os.makedirs(root, exist_ok=True)
    shadow(root, "/")

    for m in plan["mounts"]:
        m["target"] = resolve(root, m["target"])
    mounts = sorted(plan["mounts"], key=lambda m: (m["target"].count("/"), m["target"]))
    targets = [m["target"] for m in mounts]
    workdir = resolve(root, plan.get("workingDir") or "/")
    wanted = targets + [workdir]
    # Pass 1: shadow the existing host directories in which new mount points are needed.
    shadows = set()
    for t in wanted:
        if any(under(t, u) and t != u for u in targets) or os.path.lexists(t):
            continue  # nested in another volume (created there), or already present
        parent = deepest_existing(t)
        if parent != "/":
            shadows.add(parent)
    for d in sorted(shadows, key=lambda p: p.count("/")):
        shadow(root, d)
    # Pass 2: mount points and bind mounts, shallow first.
    for m in mounts:
        dest = root + m["target"]
        make_mountpoint(dest, os.path.isdir(m["source"]))
        bind(m["source"], dest, readonly=m.get("readOnly", False),
             recursive=os.path.isdir(m["source"]))
    os.makedirs(root + workdir, exist_ok=True)

    os.chroot(root)
    os.chdir(workdir)
    argv, env = plan["argv"], plan["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        print(f"podexec: cannot run {argv[0]!r}: {e}", file=sys.stderr)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
