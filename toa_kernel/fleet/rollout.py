"""``invoke rollout``: one bundle onto many hosts, a canary first, then waves.

1. Preflight on EVERY host that still needs work, in parallel, before anything
   is written anywhere (connection and host key, tools, architecture, running
   release, grub.conf, installkernel, free space, how to reboot it). One host
   failing refuses the whole rollout, unless ``--skip-failed-preflight`` leaves
   the failing hosts out.
2. Batches (fleet/schedule.py): the canary, then waves; a batch's hosts run in
   parallel, each through install -> reboot -> wait for a new boot id ->
   verify. A failed canary, or failures past ``--max-failures``, stop the
   rollout after that batch; the later batches are left untouched.
3. A host failing is reported with the step and, for verify, the failing
   checks; with ``--rollback-failed`` it is put back: rollback (grub.conf and
   hooks as before), reboot, and it must come back running the release it ran
   before the rollout.

Every transition is saved in the host's state (fleet/state.py) before the
action it announces when that action cannot be taken back (the reboot), so a
rollout killed at any instant and run again continues where each host was: a
verified host is skipped, an installed one is not installed again, a host whose
reboot was sent is not rebooted again unless its boot id shows the reboot never
happened. Hosts that failed in an earlier run count against ``--max-failures``
and are not tried again unless ``--retry-failed``; ``--rollback-failed`` puts
them back.
"""

from __future__ import annotations

import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toa_kernel.core.console import Console
from toa_kernel.core.errors import ToaError
from toa_kernel.core.settings import Settings
from toa_kernel.fleet import state as st
from toa_kernel.fleet.bundle import Bundle
from toa_kernel.fleet.inventory import Host
from toa_kernel.fleet.node import Interrupted, Node
from toa_kernel.fleet.report import HostRow, LiveStatus
from toa_kernel.fleet.schedule import Budget, batches, failure_budget
from toa_kernel.fleet.state import HostState, RebootRecord, RolloutDir
from toa_kernel.verify.checks import Expectation, Status
from toa_kernel.verify.run import REQUIRED_KERNEL_ARGS, Report

MAX_PREFLIGHT_THREADS = 16


@dataclass(frozen=True)
class RolloutRequest:
    """The flags of ``invoke rollout``."""

    canary: int = 1
    wave: int = 5
    max_failures: str = "0"
    checks: str | None = None
    rollback_failed: bool = False
    skip_failed_preflight: bool = False
    retry_failed: bool = False
    dry_run: bool = False


@dataclass
class RolloutReport:
    """What the rollout did, for the table, the JSON document and the exit code."""

    bundle: Bundle
    source: str
    request: RolloutRequest
    budget: Budget
    rows: list[HostRow] = field(default_factory=list)
    verdict: str = "verified"
    stopped: str = ""
    preflight: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    state_dir: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(row.ok for row in self.rows)

    @property
    def exit_code(self) -> int:
        """0: every host verified (or, for a dry run, every preflight passed); 1 otherwise."""
        return 0 if self.ok or self.verdict == "dry run" else 1

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in self.rows:
            found[row.status] = found.get(row.status, 0) + 1
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
            "bundle": self.bundle.summary(),
            "inventory": self.source,
            "canary": self.request.canary,
            "wave": self.request.wave,
            "max_failures": {"given": self.budget.text, "hosts": self.budget.allowed},
            "dry_run": self.request.dry_run,
            "preflight": self.preflight,
            "batches": self.batches,
            "hosts": [row.as_dict() for row in self.rows],
            "counts": self.counts(),
            "state_dir": self.state_dir,
            "seconds": self.seconds,
        }

    def summary_rows(self) -> list[tuple[str, Any]]:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts().items()))
        rows: list[tuple[str, Any]] = [
            ("bundle", f"{self.bundle.release} sha256 {self.bundle.sha256}"),
            ("hosts", f"{len(self.rows)} from {self.source}: {counts}"),
            ("batches", f"canary {self.request.canary}, waves of {self.request.wave}"),
            ("max failures", f"{self.budget.text} ({self.budget.allowed} hosts)"),
        ]
        if self.stopped:
            rows.append(("stopped", self.stopped))
        rows += [("state", self.state_dir), ("seconds", f"{self.seconds:.1f}"), ("exit code", self.exit_code)]
        return rows


def failing_checks(report: Report) -> list[dict[str, str]]:
    return [
        {"check": r.name, "status": r.status.value, "reason": r.reason}
        for r in report.results
        if r.status in (Status.FAIL, Status.NA)
    ]


class HostFailed(ToaError):
    """A step of one host failed (carries the step and the failing checks)."""

    def __init__(self, step: str, error: ToaError, checks: list[dict[str, str]] | None = None) -> None:
        super().__init__(error.message, error.fix)
        self.step = step
        self.checks = checks or []


class Rollout:
    """One run of a rollout over the selected hosts."""

    def __init__(
        self,
        settings: Settings,
        hosts: list[Host],
        bundle: Bundle,
        request: RolloutRequest,
        console: Console,
        source: str = "",
    ) -> None:
        self.settings = settings
        self.hosts = {host.name: host for host in hosts}
        self.order = [host.name for host in hosts]
        self.bundle = bundle
        self.request = request
        self.console = console
        self.dir = RolloutDir(Path(settings.workdir), bundle.id)
        self.states = {name: self.dir.load(name, bundle.sha256) for name in self.order}
        self.budget = failure_budget(request.max_failures, len(self.order))
        self.plan = batches(self.order, request.canary, request.wave)
        self.batch_of = {name: batch.label for batch in self.plan for name in batch.hosts}
        self.expect = Expectation(
            release=bundle.release,
            release_source=f"bundle {bundle.id}",
            extraversion=settings.extraversion,
            kernel_args=REQUIRED_KERNEL_ARGS + tuple(settings.kernel_args.replace(",", " ").split()),
        )
        self.live: LiveStatus | None = None
        self.stopping = threading.Event()
        self.excluded: dict[str, list[ToaError]] = {}
        self.report = RolloutReport(bundle, source, request, self.budget, state_dir=str(self.dir.path))

    # --- what each host needs --------------------------------------------------------------

    def needs_work(self, name: str) -> bool:
        state = self.states[name]
        if state.status == st.VERIFIED:
            return False
        if state.status in st.FAILURES:
            return self.request.retry_failed or self.wants_rollback(state)
        return True

    def wants_rollback(self, state: HostState) -> bool:
        return (
            self.request.rollback_failed
            and state.status in (st.FAILED, st.ROLLING_BACK)
            and bool(state.failed)
            and state.failed.get("step") not in ("preflight", "rollback")
        )

    def installing(self, name: str) -> bool:
        state = self.states[name]
        fresh = state.status in (st.PENDING, st.INSTALLING)
        retried = self.request.retry_failed and (
            state.status == st.ROLLED_BACK or (state.failed or {}).get("step") == "install"
        )
        return fresh or retried

    def failures(self) -> int:
        return sum(1 for name in self.order if self.states[name].status in (st.FAILED, st.ROLLED_BACK))

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> RolloutReport:
        started = time.monotonic()
        self.live = LiveStatus(self.console, self.order)
        try:
            refused = self.preflight_all()
            if refused:
                self.report.verdict = "refused"
                self.report.stopped = refused
            elif self.request.dry_run:
                self.live.close()  # the plans are long: printed after the status lines
                self.preview()
            else:
                self.run_batches()
        finally:
            self.live.close()
        self.report.seconds = round(time.monotonic() - started, 1)
        self.report.rows = [self.row(name) for name in self.order]
        if self.request.dry_run and not refused:
            self.report.verdict = "dry run"
        elif self.report.verdict == "verified" and not self.report.ok:
            self.report.verdict = "incomplete" if self.excluded else "failed"
        if not self.request.dry_run:
            self.dir.write_report(self.report.as_dict())
        return self.report

    def say(self, text: str) -> None:
        if self.live is not None:
            self.live.say(text)
        else:
            self.console.say(text)

    def update(self, name: str, status: str, detail: str = "") -> None:
        if self.live is not None:
            self.live.update(name, status, detail)

    def preflight_all(self) -> str:
        """Preflight every host that needs work; the reason the rollout is refused ('' if not)."""
        todo = [name for name in self.order if self.needs_work(name)]
        for name in self.order:
            if name not in todo:
                self.update(name, self.states[name].status, "nothing to do")

        def check(name: str) -> list[ToaError]:
            self.update(name, "preflight")
            node = Node(self.hosts[name], self.settings, self.dir.host_workdir(name))
            try:
                state = self.states[name]
                if state.release_before is None and state.status == st.PENDING:
                    problems = node.preflight(self.bundle, self.installing(name))
                    if not problems and not self.request.dry_run:
                        state.release_before = node.running_release()
                        self.dir.save(state, step="preflight")
                    return problems
                return node.preflight(self.bundle, self.installing(name))
            except ToaError as exc:
                return [exc]
            finally:
                node.close()

        with ThreadPoolExecutor(max_workers=max(1, min(MAX_PREFLIGHT_THREADS, len(todo)))) as pool:
            results = dict(zip(todo, pool.map(check, todo)))
        for name, problems in results.items():
            self.update(name, "preflight", "ok" if not problems else f"{len(problems)} problem(s)")
            if problems:
                self.excluded[name] = problems
                self.report.preflight[name] = [p.as_dict() for p in problems]
        if not self.excluded:
            return ""
        names = ", ".join(self.excluded)
        if self.request.skip_failed_preflight:
            self.say(f"rollout: preflight failed on {names}: left out (--skip-failed-preflight)")
            return ""
        return f"preflight failed on {names}: nothing was changed on any host"

    def preview(self) -> None:
        """``--dry-run``: the batches and, host by host, what the install would change."""
        for batch in self.plan:
            runnable = [n for n in batch.hosts if n not in self.excluded and self.needs_work(n)]
            self.report.batches.append({"batch": batch.label, "hosts": list(batch.hosts), "ran": []})
            self.say(f"rollout: {batch.label}: would run {', '.join(runnable) or 'nothing'}")
            for name in runnable:
                node = Node(self.hosts[name], self.settings, self.dir.host_workdir(name))
                try:
                    node.preview(self.bundle, self.console)
                except ToaError as exc:
                    self.say(f"  cannot show the changes: {exc.message}")
                finally:
                    node.close()

    def run_batches(self) -> None:
        failed = [n for n in self.order if n not in self.excluded and self.wants_rollback(self.states[n])]
        if failed:  # put back what failed before going forward (the budget does not stop a rollback)
            self.report.batches.append({"batch": "rollback", "hosts": failed, "ran": failed})
            self.run_batch("rollback of failed hosts", failed)
        for batch in self.plan:
            if self.budget.exceeded(self.failures()):
                self.stop(
                    f"{self.failures()} host(s) failed, more than --max-failures {self.budget.text} allows "
                    f"({self.budget.allowed}); {batch.label} and later batches untouched"
                )
                return
            runnable = [n for n in batch.hosts if n not in self.excluded and self.needs_work(n)]
            self.report.batches.append({"batch": batch.label, "hosts": list(batch.hosts), "ran": runnable})
            if runnable:
                self.run_batch(batch.label, runnable)
            if batch.kind == "canary" and any(self.states[n].status != st.VERIFIED for n in runnable):
                self.stop("the canary failed: no other host was touched")
                return
        if self.budget.exceeded(self.failures()):
            self.stop(f"{self.failures()} host(s) failed, more than --max-failures {self.budget.text} allows")

    def stop(self, why: str) -> None:
        self.report.verdict = "stopped"
        self.report.stopped = why
        self.say(f"rollout: stopped: {why}")

    def run_batch(self, label: str, names: list[str]) -> None:
        """Hosts in parallel. Ctrl-C: each finishes the step it is in (a wait for a reboot ends
        at once), its state is kept, and a rerun goes on from there."""
        self.say(f"rollout: {label}: {', '.join(names)}")
        pool = ThreadPoolExecutor(max_workers=len(names))
        futures = [pool.submit(self.run_host, name) for name in names]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            self.stopping.set()
            self.console.warn(
                "interrupted: each host finishes the step it is in; run the rollout again to go on"
            )
            raise
        finally:
            pool.shutdown(wait=True)

    # --- one host -------------------------------------------------------------------------------

    def run_host(self, name: str) -> None:
        state = self.states[name]
        node = Node(self.hosts[name], self.settings, self.dir.host_workdir(name))
        started = time.monotonic()
        try:
            try:
                self.advance(node, state)
            except HostFailed as exc:
                self.fail(node, state, exc)
        except Interrupted as exc:
            node.note(exc.message)
        except Exception as exc:  # a bug must not take the other hosts down with it
            node.note("internal error:\n" + traceback.format_exc())
            self.fail(node, state, HostFailed(state.step or "install", ToaError(f"internal error: {exc!r}")))
        finally:
            state.seconds["last_run"] = round(time.monotonic() - started, 1)
            self.dir.save(state)
            self.update(name, state.status, self.detail(state))
            node.close()

    def advance(self, node: Node, state: HostState) -> None:
        """Take the host from where it is to verified (or rolled back), step by step."""
        if self.request.retry_failed and state.status in (st.FAILED, st.ROLLED_BACK):
            self.restart(state)
        if (state.status == st.FAILED and self.wants_rollback(state)) or state.status == st.ROLLING_BACK:
            self.roll_back(node, state)
            return
        if state.status in (st.PENDING, st.INSTALLING):
            self.install(node, state)
        if state.status in (st.INSTALLED, st.REBOOTING):
            self.halt_point(node)
            state.reboot = self.reboot(node, state, state.reboot, "install")
            self.dir.save(state, st.REBOOTED, "reboot")
        if state.status == st.REBOOTED:
            self.verify(node, state)

    def halt_point(self, node: Node) -> None:
        """Before a step that cannot be taken back: stop here when the rollout was interrupted."""
        if self.stopping.is_set():
            raise Interrupted(f"{node.host.name}: stopped before its reboot (interrupted)")

    def restart(self, state: HostState) -> None:
        """``--retry-failed``: go back to the step that failed (from scratch after a rollback)."""
        step = (state.failed or {}).get("step")
        if state.status == st.ROLLED_BACK or step == "install":
            state.reboot = None
            status = st.PENDING
        elif step == "reboot":
            status = st.REBOOTING
        else:
            status = st.REBOOTED
        state.failed = None
        self.dir.save(state, status, "retry")

    def install(self, node: Node, state: HostState) -> None:
        state.installs += 1
        self.dir.save(state, st.INSTALLING, "install")
        self.update(node.host.name, st.INSTALLING, "ship, unpack, installkernel, hooks, grub.conf")
        started = time.monotonic()
        sent = [0]

        def progress(count: int) -> None:
            sent[0] += count
            self.update(node.host.name, st.INSTALLING, f"sent {sent[0] * 100 // max(1, self.bundle.size)}%")

        try:
            node.install(self.bundle, progress)
        except ToaError as exc:
            raise HostFailed("install", exc) from exc
        state.seconds["install"] = round(time.monotonic() - started, 1)
        self.dir.save(state, st.INSTALLED, "install")

    def reboot(self, node: Node, state: HostState, record: RebootRecord | None, phase: str) -> RebootRecord:
        """Reboot (unless the saved record shows it was sent) and wait for a new boot id."""
        name = node.host.name
        timeout = self.settings.boot_timeout
        try:
            if record is None or record.requested_at is None:
                record = RebootRecord(boot_id_before=node.boot_id(), requested_at=time.time())
                self.keep(state, phase, record, st.REBOOTING if phase == "install" else st.ROLLING_BACK)
            current = node.boot_id()
            if current and current != record.boot_id_before:
                node.note(f"the host already runs a new boot ({current}): the reboot happened")
            elif record.sent_at is None or (
                current == record.boot_id_before and self.never_went_down(record)
            ):
                self.update(name, "rebooting", "reboot sent")
                state.reboots += 1
                node.request_reboot(phase)
                record.sent_at = time.time()
                self.keep(state, phase, record)
            self.update(name, "rebooting", f"waiting for a new boot (up to {timeout:g} s)")
            deadline = (record.sent_at or time.time()) + timeout
            record.boot_id_after = node.wait_for_new_boot(
                record.boot_id_before, deadline, timeout, self.stopping
            )
        except Interrupted:
            raise
        except ToaError as exc:
            raise HostFailed("reboot" if phase == "install" else "rollback", exc) from exc
        record.seconds = round(time.time() - (record.requested_at or time.time()), 1)  # sent to back
        self.keep(state, phase, record)
        return record

    def never_went_down(self, record: RebootRecord) -> bool:
        """A reboot recorded as sent long ago while the boot id never changed: it never took effect."""
        return record.sent_at is not None and time.time() > record.sent_at + self.settings.boot_timeout

    def keep(self, state: HostState, phase: str, record: RebootRecord, status: str | None = None) -> None:
        if phase == "install":
            state.reboot = record
        else:
            state.rollback_reboot = record
        self.dir.save(state, status, "reboot" if phase == "install" else "rollback")

    def verify(self, node: Node, state: HostState) -> None:
        self.update(node.host.name, "verifying")
        started = time.monotonic()
        try:
            report = node.verify(self.expect, self.request.checks)
            state.release_now = report_release(node)
        except ToaError as exc:
            raise HostFailed("verify", exc) from exc
        state.seconds["verify"] = round(time.monotonic() - started, 1)
        if report.exit_code != 0:
            checks = failing_checks(report)
            names = ", ".join(c["check"] for c in checks)
            raise HostFailed(
                "verify",
                ToaError(
                    f"verify after the reboot: {report.verdict_text} ({names})",
                    "read the checks below; --rollback-failed puts the host back on its old kernel",
                ),
                checks,
            )
        self.dir.save(state, st.VERIFIED, "verify")

    def fail(self, node: Node, state: HostState, error: HostFailed) -> None:
        state.failed = {
            "step": error.step,
            "message": error.message,
            "fix": error.fix,
            "checks": error.checks,
        }
        node.note(f"FAILED at {error.step}: {error.message}")
        self.dir.save(state, st.FAILED, error.step)
        self.update(node.host.name, st.FAILED, f"{error.step}: {error.message[:80]}")
        if self.wants_rollback(state):
            try:
                self.roll_back(node, state)
            except HostFailed as exc:
                state.failed["rollback"] = {"message": exc.message, "fix": exc.fix}
                self.dir.save(state, st.FAILED, "rollback")

    def roll_back(self, node: Node, state: HostState) -> None:
        """Rollback, reboot into the old kernel, and check that it runs."""
        name = node.host.name
        state.rollbacks += 1 if state.status != st.ROLLING_BACK else 0
        self.dir.save(state, st.ROLLING_BACK, "rollback")
        self.update(name, st.ROLLING_BACK, "grub.conf and hooks as before")
        try:
            node.rollback()
        except ToaError as exc:
            raise HostFailed("rollback", exc) from exc
        if (state.failed or {}).get("step") != "install":  # it booted the new setup: boot the old one
            state.rollback_reboot = self.reboot(node, state, state.rollback_reboot, "rollback")
        try:
            running = node.running_release()
        except ToaError as exc:
            raise HostFailed("rollback", exc) from exc
        state.release_now = running
        if state.release_before and running != state.release_before:
            raise HostFailed(
                "rollback",
                ToaError(
                    f"after the rollback {name} runs {running}, not {state.release_before} as before",
                    f"look at the host (its log: {node.workdir / 'rollout.log'})",
                ),
            )
        self.dir.save(state, st.ROLLED_BACK, "rollback")

    # --- the report ----------------------------------------------------------------------------

    def detail(self, state: HostState) -> str:
        if state.status == st.FAILED and state.failed:
            return f"{state.failed.get('step')}: {str(state.failed.get('message'))[:80]}"
        return state.release_now or ""

    def row(self, name: str) -> HostRow:
        state = self.states[name]
        row = HostRow(name, self.hosts[name].where, self.batch_of.get(name, "-"), status=state.status)
        row.step = state.step
        row.release = state.release_now
        row.seconds = sum(v for k, v in state.seconds.items() if k == "last_run")
        row.installs, row.reboots = state.installs, state.reboots
        if name in self.excluded:
            problems = self.excluded[name]
            row.status, row.step = "preflight-failed", "preflight"
            row.verdict = f"preflight: {len(problems)} problem(s)"
            row.error = {"message": "; ".join(p.message for p in problems), "fix": problems[0].fix}
            return row
        row.verdict = verdict_of(state)
        if state.failed:
            row.error = {"message": state.failed.get("message", ""), "fix": state.failed.get("fix", "")}
            row.failing_checks = list(state.failed.get("checks") or [])
        return row


def verdict_of(state: HostState) -> str:
    if state.status == st.VERIFIED:
        return "verified"
    if state.status == st.ROLLED_BACK:
        return f"rolled back ({(state.failed or {}).get('step', '?')} failed)"
    if state.status == st.FAILED:
        return f"FAILED at {(state.failed or {}).get('step', state.step)}"
    if state.status == st.PENDING and not state.installs:
        return "untouched"
    return f"stopped at {state.status}"


def report_release(node: Node) -> str | None:
    try:
        return node.running_release()
    except ToaError:
        return None
