"""The shell snippets an SshSystem runs on the server, and how to read their answers.

Each snippet is a constant run as ``sh -c SNIPPET toa ARG...``: values travel as
positional parameters, never pasted into the text, and the whole argv is quoted
with ``shlex.join``. They use only what CentOS 6 has: POSIX sh (bash 4.1 in
posix mode), coreutils 8.4 (``readlink`` but no ``realpath``; ``sync`` without
arguments; ``stat -c``; ``mktemp``; ``chmod``/``chown --reference``;
``timeout``; ``df -P``), tar, util-linux-ng ``flock``. Never Python.

Exit codes the snippets use to answer (sysexits-like, distinct from the tools'):
"""

from __future__ import annotations

import re

from toa_kernel.core.errors import UserError

NOT_LINK = 65
MISSING = 66
IS_DIR = 67
NOT_DIR = 68
NO_PERMISSION = 77
TEMP_FAILED = 73
SHORT_WRITE = 74
LOCK_BUSY = 75
NOT_REGULAR = 69
NOT_WRITABLE = 70
NOT_FOUND = 127

# Where CentOS 6 keeps the system's programs, searched after PATH (a login's PATH may lack them).
SBIN_DIRS = ("/sbin", "/usr/sbin", "/bin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")

LOCK_DIR = "/var/lock"
LOCK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# For each path argument in turn: the first that is a symlink answers
# "INDEX\0TARGET\n" (readlink's own newline); no symlink: no output.
FIND_LINK = """i=0
for p do
  if [ -L "$p" ]; then printf '%s\\0' "$i"; exec readlink -- "$p"; fi
  i=$((i+1))
done"""

# Only a regular file is read: a FIFO or a device could block or never end.
READ = """[ -e "$1" ] || exit 66
[ -d "$1" ] && exit 67
[ -f "$1" ] || exit 69
[ -r "$1" ] || exit 77
if [ -n "$2" ]; then exec head -c "$2" -- "$1"; fi
exec cat -- "$1"
"""

TAIL = """[ -e "$1" ] || exit 66
[ -d "$1" ] && exit 67
[ -f "$1" ] || exit 69
[ -r "$1" ] || exit 77
exec tail -c "$2" -- "$1"
"""

# The digest of the bytes (read from stdin: sha256sum escapes odd file names).
SHA256 = """[ -f "$1" ] || exit 66
exec sha256sum <"$1"
"""

FIND = """[ -d "$1" ] || exit 0
exec find "$1" -name "$2" -type f -print0
"""

# What a command given this host path acts on (coreutils 8.4: readlink -m, no realpath).
HOST_REALPATH = """exec readlink -m -- "$1"
"""

WRITABLE = """[ -w "$1" ] || exit 70
[ ! -d "$1" ] || [ -x "$1" ] || exit 70
"""

# $1 the file (links resolved), $2 the backup's path. Copy beside it under a temporary
# name, keep mode and owner, sync, rename into place; print the name used.
BACKUP = """[ -f "$1" ] || exit 66
dir=${1%/*}; [ -n "$dir" ] || dir=/
b=$2 n=1
while [ -e "$b" ] || [ -L "$b" ]; do b=$2.$n; n=$((n+1)); done
btmp=
trap 'rm -f -- ${btmp:+"$btmp"}' EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM
btmp=$(mktemp "$dir/.toa-backup-XXXXXXXXXX") || exit 73
cp -p -- "$1" "$btmp" || exit 1
sync
mv -f -- "$btmp" "$b" || exit 1
btmp=
sync
printf '%s' "$b"
"""

# $1 the file, $2 octal mode, $3 uid ('' = keep), $4 gid.
SET_MODE = """[ -e "$1" ] || exit 66
chmod "$2" -- "$1" || exit 1
if [ -n "$3$4" ]; then chown "$3${4:+:$4}" -- "$1" || exit 1; fi
"""

# $1 the link's text, $2 the link (its directory resolved). Made under a temporary name
# and renamed over whatever file or link is there (mv -T: never into a directory).
SYMLINK = """dir=${2%/*}; [ -n "$dir" ] || dir=/
[ -d "$dir" ] || exit 68
tmp="$dir/.${2##*/}.toa-$$"
rm -f -- "$tmp"
ln -s -- "$1" "$tmp" || exit 1
mv -f -T -- "$tmp" "$2" || { rm -f -- "$tmp"; exit 1; }
sync
"""

# $1 a program name: its path from PATH, else from the system directories.
WHICH = """prog=$1; shift
p=$(command -v -- "$prog" 2>/dev/null) && case $p in /*) printf '%s\\n' "$p"; exit 0;; esac
for d do
  if [ -f "$d/$prog" ] && [ -x "$d/$prog" ]; then printf '%s\\n' "$d/$prog"; exit 0; fi
done
exit 127
"""

STAT = """[ -e "$1" ] || [ -L "$1" ] || exit 66
exec stat -c '%f %u %g %s %d' -- "$1"
"""

LIST = """[ -e "$1" ] || exit 66
[ -d "$1" ] || exit 68
for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  printf '%s\\0' "${f##*/}"
done"""

READLINK = """[ -L "$1" ] || exit 65
exec readlink -- "$1"
"""

REMOVE = """[ -e "$1" ] || [ -L "$1" ] || exit 66
if [ -d "$1" ] && [ ! -L "$1" ]; then
  if [ "$2" = r ]; then exec rm -rf -- "$1"; fi
  exec rmdir -- "$1"
fi
exec rm -f -- "$1"
"""

MAKEDIRS = """[ -d "$1" ] && exit 0
[ -e "$1" ] && exit 68
exec mkdir -p -m "$2" -- "$1"
"""

FREE = """[ -e "$1" ] || exit 66
exec df -P -k -- "$1"
"""

# $1 target (symlinks already resolved), $2 mode for a new file, $3 size in
# bytes, $4 backup name ('' = none). Data on stdin. The temporary file is
# renamed over the target only when all $3 bytes arrived, so a connection
# that drops mid-transfer leaves the old file (and no temporary file).
WRITE = """target=$1 mode=$2 size=$3 backup=$4
dir=${target%/*}; [ -n "$dir" ] || dir=/
name=${target##*/}
[ -d "$dir" ] || exit 68
tmp= btmp= b=
trap 'rm -f -- ${tmp:+"$tmp"} ${btmp:+"$btmp"}' EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM
tmp=$(mktemp "$dir/.$name.toa-XXXXXXXXXX") || exit 73
cat >"$tmp" || exit 74
[ "$(stat -c %s -- "$tmp")" = "$size" ] || exit 74
if [ -e "$target" ]; then
  chmod --reference="$target" -- "$tmp" || exit 1
  chown --reference="$target" -- "$tmp" 2>/dev/null
  chcon --reference="$target" -- "$tmp" 2>/dev/null
  if [ -n "$backup" ]; then
    b=$backup n=1
    while [ -e "$b" ] || [ -L "$b" ]; do b=$backup.$n; n=$((n+1)); done
    btmp=$(mktemp "$dir/.$name.toa-XXXXXXXXXX") || exit 73
    cp -p -- "$target" "$btmp" || exit 1
    sync
    mv -f -- "$btmp" "$b" || exit 1
    btmp=
  fi
else
  chmod "$mode" -- "$tmp" || exit 1
fi
sync
mv -f -- "$tmp" "$target" || exit 1
tmp=
sync
[ -z "$backup" ] || printf '%s' "$b"
"""

# $1 destination directory; a tar stream on stdin.
UNTAR = """mkdir -p -- "$1" || exit 1
exec tar -x -p --no-same-owner -f - -C "$1"
"""

# $1 source directory, then the names to send (".": all of it). A tar stream on stdout.
TAR_OUT = """[ -d "$1" ] || exit 66
dir=$1; shift
exec tar -c -f - -C "$dir" -- "$@"
"""

# $1 lock file, $2 who is asking. Answers "locked" and holds the lock until
# stdin closes (the client closes the channel, or the connection drops).
LOCK = """exec 9>>"$1" || exit 1
flock -n 9
status=$?
if [ $status -eq 1 ]; then cat -- "$1" >&2; exit 75; fi
[ $status -eq 0 ] || exit $status
printf '%s\\n' "$2" >"$1"
echo locked
cat >/dev/null 9>&-"""


def check_lock_name(name: str) -> str:
    """A lock name is one plain file name under /var/lock."""
    if not LOCK_NAME_RE.match(name):
        raise UserError(f"lock name {name!r} is not a plain file name", "use letters, digits, . _ -")
    return name
