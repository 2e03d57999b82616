"""``invoke serve --host SERVER``: the peer-address server runs on the server itself.

A server behind the balancer must accept the test connections itself: its
kernel's ``accept()``/``getpeername()`` is what TOA rewrites. CentOS 6 has no
Python 3 and the tool puts no Python on the server, so ``serve --host`` runs a
small POSIX-sh script there (``SERVE_SCRIPT``) around the server's own
``busybox httpd`` (CentOS 6: ``yum install busybox``; the same httpd the boot
lab's guest runs): its CGI (``cgi-bin/index.cgi``, what busybox runs for ``/``)
answers each request with ``REMOTE_ADDR``/``REMOTE_PORT``, the address busybox
got from ``accept()``, and appends it to a file the script streams back line by
line. ``/proc/net/toa_stats`` is read through the System before and after.
The NAT64 lookup (a socket option) needs the connection's socket and is not
available this way ("unsupported" in the report). Without busybox the error says
what to run on the server instead.
"""

from __future__ import annotations

import math
import time
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import EnvironmentFailure, UserError
from toa_kernel.system.api import System
from toa_kernel.verify.facts import read_toa_stats
from toa_kernel.verify.serve import (
    Nat64Peer,
    RequestRecord,
    ServeReport,
    check_options,
    describe_stats,
    format_address,
    v4_mapped_warning,
)

NO_BUSYBOX = 69
HTTPD_FAILED = 70
HTTPD_DIED = 71
# The script: $1 port, $2 address, $3 requests to wait for (0: no limit), $4 seconds (0: no limit).
SERVE_SCRIPT = r"""port=$1 bind=$2 count=$3 seconds=$4
bb=$(command -v busybox 2>/dev/null) || exit 69
"$bb" httpd --help 2>&1 | grep -q -i usage || exit 69
dir=$(mktemp -d /tmp/toa-serve.XXXXXX) || exit 1
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; fi; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM HUP PIPE
mkdir "$dir/cgi-bin" && : >"$dir/peers" || exit 1
cat >"$dir/cgi-bin/index.cgi" <<EOF
#!/bin/sh
echo "PEER \$REMOTE_ADDR \$REMOTE_PORT \$REQUEST_METHOD \$REQUEST_URI" >>"$dir/peers"
printf 'Content-Type: text/plain\r\n\r\n'
echo "peer \$REMOTE_ADDR port \$REMOTE_PORT"
EOF
chmod 755 "$dir/cgi-bin/index.cgi"
"$bb" httpd -f -p "$bind:$port" -h "$dir" 2>"$dir/httpd.err" &
pid=$!
sleep 0.3
if ! kill -0 "$pid" 2>/dev/null; then cat "$dir/httpd.err"; exit 70; fi
echo "LISTENING $port"
start=$(date +%s) seen=0
while :; do
  total=$(wc -l <"$dir/peers")
  if [ "$total" -gt "$seen" ]; then sed -n "$((seen + 1)),${total}p" "$dir/peers"; seen=$total; fi
  if [ "$count" -gt 0 ] && [ "$seen" -ge "$count" ]; then echo "STOPPED count reached"; exit 0; fi
  if [ "$seconds" -gt 0 ] && [ $(($(date +%s) - start)) -ge "$seconds" ]; then
    echo "STOPPED timeout"; exit 0
  fi
  kill -0 "$pid" 2>/dev/null || exit 71
  sleep 0.2
done
"""
NO_LOOKUP = Nat64Peer(
    "unsupported", detail="serve --host answers with busybox httpd: no socket option lookup"
)


class RemoteServe:
    """Turns the script's lines into request records, told to the console as they come."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.records: list[RequestRecord] = []
        self.stopped = "interrupted"
        self.listening = False
        self.errors: list[str] = []

    def line(self, text: str) -> None:
        words = text.split()
        if words[:1] == ["PEER"] and len(words) >= 3 and words[2].isdigit():
            method, path = (words[3:5] + ["GET", "/"][len(words[3:5]) :])[:2]
            record = RequestRecord(
                time.strftime("%H:%M:%S"), method, path, words[1], int(words[2]), NO_LOOKUP
            )
            self.records.append(record)
            self.console.say(record.log_line())
        elif words[:1] == ["LISTENING"]:
            self.listening = True
        elif words[:1] == ["STOPPED"]:
            self.stopped = " ".join(words[1:])
        elif text.strip():
            self.errors.append(text.strip())


def serve_remote(
    system: System,
    console: Console,
    *,
    bind: str = "0.0.0.0",
    port: int = 8000,
    count: int = 0,
    timeout: float = 0.0,
    **_ignored: Any,
) -> ServeReport:
    """Serve on ``system`` (a server over SSH) until ``count`` requests or ``timeout`` seconds."""
    check_options(port, count, timeout)
    if port == 0:
        raise UserError("--port 0 cannot be used with --host", "give the port the balancer forwards to")
    warning = v4_mapped_warning(bind)
    if warning:
        console.warn(warning)
    before = read_toa_stats(system)
    listen = format_address(bind, port)
    limits = [f"{count} request(s)" if count else "", f"{timeout:g} s" if timeout else ""]
    until = " or ".join(x for x in limits if x) or "Ctrl-C"
    console.say(
        f"serve: listening on {system.host} {listen} until {until}; toa_stats {describe_stats(before)}"
    )
    served = RemoteServe(console)
    seconds = str(math.ceil(timeout)) if timeout else "0"
    try:
        status = system.stream(
            ["sh", "-c", SERVE_SCRIPT, "toa", str(port), bind, str(count), seconds], served.line
        )
    except KeyboardInterrupt:
        status = 0
    check_status(status, served, system, listen)
    after = read_toa_stats(system)
    return ServeReport(f"{system.host} {listen}", served.stopped, served.records, before, after)


def check_status(status: int, served: RemoteServe, system: System, listen: str) -> None:
    detail = "; ".join(served.errors[-3:])
    if status == NO_BUSYBOX:
        raise EnvironmentFailure(
            f"serve --host needs busybox (with httpd) on {system.host}, and it has none",
            "install it there (yum install busybox), or run on the server one of: "
            "'nc -l -v PORT' (prints each client's address), 'python -m SimpleHTTPServer PORT' "
            "(CentOS 6's Python 2.6; its log shows the client addresses)",
        )
    if status == HTTPD_FAILED:
        raise UserError(
            f"busybox httpd cannot listen on {listen} on {system.host}: {detail}", "choose another --port"
        )
    if status not in (0, 130):
        raise EnvironmentFailure(f"serve on {system.host} stopped (exit {status}): {detail or 'no message'}")
