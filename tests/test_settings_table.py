"""Every setting and every flag of every task, given a bad value, through the real
``invoke`` command line: exit code 2, a message naming the setting as the user gave
it (the flag, the ``INVOKE_TOA_*`` variable or ``toa.key`` of a config file), and
never a traceback.

Settings are checked by every task (``Settings.from_config``), so each bad setting
is tried from the environment and from a config file (``invoke -f FILE``) on a task
chosen in turn, which covers every task several times; flags are tried on the task
that has them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_support import run_invoke

from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import Settings

TASKS = (
    "fetch",
    "build",
    "install-kernel",
    "grub",
    "rollback",
    "verify",
    "serve",
    "lab",
    "build-module",
    "install-module",
    "rollback-module",
    "bundle",
    "rollout",
    "fleet-verify",
    "demo",
)

# Arguments that keep a task harmless should a bad value get through.
SAFE_ARGS = {
    "fetch": ["--dry-run", "--workdir", "{work}"],
    "build": ["--dry-run", "--workdir", "{work}"],
    "install-kernel": ["--dry-run", "--workdir", "{work}", "--root", "{root}"],
    "grub": ["--dry-run", "--release", "2.6.32-toa", "--workdir", "{work}", "--root", "{root}"],
    "rollback": ["--dry-run", "--workdir", "{work}", "--root", "{root}"],
    "verify": ["--workdir", "{work}", "--root", "{root}"],
    "serve": ["--bind", "127.0.0.1", "--port", "0", "--timeout", "0.2", "--root", "{root}"],
    "lab": ["--workdir", "{work}", "--root", "{root}"],
    "build-module": ["--dry-run", "--release", "5.10.0-1-amd64", "--workdir", "{work}", "--root", "{root}"],
    "install-module": ["--dry-run", "--workdir", "{work}", "--root", "{root}"],
    "rollback-module": ["--dry-run", "--workdir", "{work}", "--root", "{root}"],
    "bundle": ["--workdir", "{work}"],
    "rollout": ["--dry-run", "--workdir", "{work}", "--hosts", "root@127.0.0.1:1"],
    "fleet-verify": ["--workdir", "{work}", "--hosts", "root@127.0.0.1:1"],
    "demo": ["--no-lab", "--workdir", "{work}"],
}

# One bad value per setting ({file} is an existing regular file).
BAD_SETTINGS = {
    "url": "ftp://example.org/linux.tar.gz",
    "sha256": "not-a-digest",
    "mirrors": "http://ok.example/x.tgz mirror-without-scheme",
    "workdir": "{file}",
    "root": "{file}",
    "extraversion": "-" + "x" * 300,
    "option_code": "254; x",
    "jobs": "-1",
    "min_free_gib": "nan",
    "connect_timeout": "0",
    "read_timeout": "inf",
    "retries": "many",
    "backoff": "-1",
    "download_deadline": "1e400",
    "max_download_gib": "nan",
    "patches_dir": "",
    "configs_dir": "",
    "grub_dir": "",
    "ccache": "maybe",
    "kernel_args": "nohz=off 'quiet'",
    "startup": "systemd",
    "config_base": "defconfig",
    "lab_timeout": "-5",
    "module_url": "https://example.org/{{nope}}.tar.gz",
    "module_branch": "x/../../../victim",
    "host": "root@web1:99999",
    "build_host": "web1:0",
    "ssh_user": "root;id",
    "ssh_port": "22x",
    "ssh_key": "id_rsa\u0007",
    "ssh_sudo": "perhaps",
    "ssh_known_hosts": "",
    "ssh_accept_new_host_key": "sometimes",
    "ssh_connect_timeout": "nan",
    "ssh_legacy": "2",
    "trial_panic": "0",
    "inventory": "hosts\u0007.ini",
    "reboot_command": "reboot 'now",
    "reboot_hook": 'lab "reboot',
    "boot_timeout": "-1",
}
NOT_CONFIGURABLE = {"project_dir"}  # set by tasks.py to the project's directory


def test_the_table_covers_every_setting():
    from toa_kernel.core.settings import CHECKERS

    assert set(BAD_SETTINGS) == set(CHECKERS) - NOT_CONFIGURABLE


def run(args: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_invoke(*args, env=env, cwd=tmp_path)


def places(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "root").mkdir(exist_ok=True)
    (tmp_path / "a-file").write_text("not a directory\n")
    return {"work": str(tmp_path / "work"), "root": str(tmp_path / "root"), "file": str(tmp_path / "a-file")}


def task_args(task: str, where: dict[str, str], dropping: str = "") -> list[str]:
    """The task's safe arguments, without the flag that would override ``dropping``."""
    args = [arg.format(**where) for arg in SAFE_ARGS[task]]
    flag = "--" + dropping.replace("_", "-")
    if flag in args:
        index = args.index(flag)
        del args[index : index + 2]
    return args


def assert_refused(done: subprocess.CompletedProcess, *names: str) -> None:
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert any(name in done.stderr for name in names), done.stderr
    assert "fix:" in done.stderr


SETTING_CASES = [
    (source, key, TASKS[index % len(TASKS)])
    for index, (key, source) in enumerate((key, source) for key in BAD_SETTINGS for source in ("env", "file"))
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "key", "task"), SETTING_CASES, ids=[f"{s}-{k}-{t}" for s, k, t in SETTING_CASES]
)
def test_a_bad_setting_is_refused_naming_it(tmp_path, source, key, task):
    where = places(tmp_path)
    value = BAD_SETTINGS[key].format(**where)
    args = task_args(task, where, dropping=key)
    if source == "env":
        done = run([task, *args], tmp_path, env={f"INVOKE_TOA_{key.upper()}": value})
        assert_refused(done, f"INVOKE_TOA_{key.upper()}")
    else:
        config = tmp_path / "bad.yaml"
        config.write_text(json.dumps({"toa": {key: value}}))  # YAML reads JSON
        done = run(["-f", str(config), task, *args], tmp_path)
        assert_refused(done, f"toa.{key}")


# A bad value for every flag that takes one, per task.
BAD_FLAGS = {
    "fetch": {
        "--url": "ftp://x/y.tgz",
        "--sha256": "xyz",
        "--mirror": "nope",
        "--tarball": "{root}",
        "--workdir": "{file}",
    },
    "build": {
        "--jobs": "-1",
        "--option-code": "254x",
        "--extraversion": "-" + "x" * 300,
        "--min-free-gib": "nan",
        "--until": "nosuch",
        "--only": "nosuch",
        "--tree": "{file}",
        "--config-base": "small",
        "--workdir": "{file}",
        "--root": "{file}",
    },
    "install-kernel": {
        "--release": "a b",
        "--startup": "systemd",
        "--kernel-args": "nohz=off;reboot",
        "--panic-seconds": "0",
        "--root": "{file}",
        "--workdir": "{file}",
    },
    "grub": {"--release": "../x", "--panic-seconds": "nan", "--root": "{file}", "--workdir": "{file}"},
    "rollback": {"--root": "{file}", "--workdir": "{file}"},
    "verify": {
        "--release": "a;b",
        "--facts": "{root}",
        "--checks": "nosuch",
        "--root": "{file}",
        "--workdir": "{file}",
    },
    "serve": {
        "--port": "abc",
        "--count": "-1",
        "--timeout": "nan",
        "--bind": "not an address",
        "--root": "{file}",
    },
    "lab": {
        "--timeout": "nan",
        "--scenario": "nosuch",
        "--release": "a b",
        "--boots": "twice",
        "--kernel": "{root}",
        "--module": "{root}",
        "--option-code": "300",
        "--root": "{file}",
        "--workdir": "{file}",
    },
    "build-module": {
        "--release": "a b",
        "--branch": "x/../y",
        "--option-code": "0x1g",
        "--sha256": "xyz",
        "--url": "ftp://x/{{branch}}.tgz",
        "--src": "{file}",
        "--tarball": "{root}",
        "--root": "{file}",
        "--workdir": "{file}",
    },
    "install-module": {
        "--release": "a b",
        "--startup": "nosuch",
        "--ko": "{root}",
        "--root": "{file}",
        "--workdir": "{file}",
    },
    "rollback-module": {"--root": "{file}", "--workdir": "{file}"},
    "bundle": {"--workdir": "{file}"},
    "rollout": {
        "--inventory": "{root}",
        "--hosts": "root@web1:99999",
        "--canary": "-1",
        "--wave": "0",
        "--max-failures": "150%",
        "--checks": "nosuch",
        "--boot-timeout": "nan",
        "--workdir": "{file}",
    },
    "fleet-verify": {
        "--inventory": "{file}x",
        "--hosts": "a@b@c",
        "--release": "a b",
        "--checks": "nosuch",
        "--workdir": "{file}",
    },
    "demo": {"--workdir": "{file}"},
}
# The SSH flags of every task that acts on a system (and of build, for its build host).
BAD_SSH_FLAGS = {
    "--host": "root@web1:99999",
    "--ssh-key": "id_rsa\u0007",
    "--ssh-port": "22x",
    "--ssh-user": "root;id",
    "--known-hosts": "",
}
SSH_TASKS = (
    "build",
    "install-kernel",
    "grub",
    "rollback",
    "verify",
    "serve",
    "build-module",
    "install-module",
    "rollback-module",
)
for _task in SSH_TASKS:
    BAD_FLAGS[_task].update(BAD_SSH_FLAGS)
FLAG_CASES = [(task, flag) for task, flags in BAD_FLAGS.items() for flag in flags]


@pytest.mark.slow
@pytest.mark.parametrize(("task", "flag"), FLAG_CASES, ids=[f"{t}{f}" for t, f in FLAG_CASES])
def test_a_bad_flag_is_refused_naming_it(tmp_path, task, flag):
    where = places(tmp_path)
    args = task_args(task, where, dropping=flag[2:].replace("-", "_"))
    done = run([task, *args, flag, BAD_FLAGS[task][flag].format(**where)], tmp_path)
    assert_refused(done, flag)


def project_tasks():
    """The invoke collection of this checkout's tasks.py."""
    import importlib.util

    from invoke import Collection

    spec = importlib.util.spec_from_file_location("project_tasks", Path(__file__).parent.parent / "tasks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Collection.from_module(module)


def test_the_flag_table_covers_every_task():
    assert set(BAD_FLAGS) == set(TASKS) == set(SAFE_ARGS)


def test_the_flag_table_covers_every_flag_that_takes_a_value():
    """A flag added to a task without a bad value in BAD_FLAGS fails here."""
    collection = project_tasks()
    missing = {}
    for name in collection.task_names:
        flags = {
            "--" + argument.name.replace("_", "-")
            for argument in collection[name].get_arguments()
            if argument.kind is not bool
        }
        if flags - set(BAD_FLAGS.get(name, {})):
            missing[name] = sorted(flags - set(BAD_FLAGS.get(name, {})))
    assert missing == {}


# A few of the table's cases, always run (the table itself is slow: one process each).
@pytest.mark.parametrize(
    ("args", "env", "name"),
    [
        (["build", "--dry-run"], {"INVOKE_TOA_OPTION_CODE": "254; x"}, "INVOKE_TOA_OPTION_CODE"),
        (["serve", "--port", "abc"], {}, "--port"),
        (["build", "--dry-run", "--min-free-gib", "nan"], {}, "--min-free-gib"),
        (["fetch", "--dry-run", "--workdir", "{file}"], {}, "--workdir"),
    ],
    ids=["env-cast", "serve-port", "nan", "workdir-file"],
)
def test_the_issue_cases_exit_2_without_traceback(tmp_path, args, env, name):
    where = places(tmp_path)
    done = run([arg.format(**where) for arg in args], tmp_path, env=env)
    assert_refused(done, name)


def test_a_config_file_number_with_a_bad_variable_is_exit_2_not_a_traceback(tmp_path):
    config = tmp_path / "numbers.yaml"
    config.write_text("toa:\n  option_code: 254\n")  # a number: invoke casts the variable itself
    done = run(["-f", str(config), "build", "--dry-run"], tmp_path, env={"INVOKE_TOA_OPTION_CODE": "254; x"})
    assert_refused(done, "INVOKE_TOA_OPTION_CODE")


# --- the checks themselves, in process -------------------------------------------------------

FLOAT_SETTINGS = (
    "min_free_gib",
    "connect_timeout",
    "read_timeout",
    "backoff",
    "download_deadline",
    "max_download_gib",
    "lab_timeout",
)


@pytest.mark.parametrize("key", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", float("nan")])
def test_no_numeric_setting_takes_nan_or_an_infinity(key, value):
    with pytest.raises(UserError) as caught:
        Settings.from_config({}, **{key: value})
    flag = "--timeout" if key == "lab_timeout" else "--" + key.replace("_", "-")  # lab's --timeout
    assert caught.value.message.startswith(f"{flag} ")


def test_extraversion_is_bounded_by_the_kernels_release_field():
    longest = "-" + "x" * (64 - len("2.6.32") - 1)
    assert Settings.from_config({}, extraversion=longest).extraversion == longest
    with pytest.raises(UserError) as caught:
        Settings.from_config({}, extraversion=longest + "x")
    assert "64-byte UTS_RELEASE" in caught.value.message and "at most 58" in caught.value.fix


def test_a_setting_from_the_environment_is_named_by_its_variable(monkeypatch):
    monkeypatch.setenv("INVOKE_TOA_JOBS", "many")
    with pytest.raises(UserError) as caught:
        Settings.from_config({"toa": {"jobs": "many"}})
    assert caught.value.message == "INVOKE_TOA_JOBS (toa.jobs) 'many': is not a whole number"
    monkeypatch.delenv("INVOKE_TOA_JOBS")
    with pytest.raises(UserError, match=r"^toa\.jobs \(invoke\.yaml"):
        Settings.from_config({"toa": {"jobs": "many"}})


@pytest.mark.parametrize(
    "template",
    ["https://x/{branch.__class__}.tgz", "https://x/{0}.tgz", "https://x/{branch!r}.tgz", "https://x/{"],
)
def test_the_module_url_template_fills_in_a_plain_branch_only(template):
    with pytest.raises(UserError, match="--module-url"):
        Settings.from_config({}, module_url=template)


@pytest.mark.parametrize(
    ("default", "good", "expected", "bad"),
    [
        (3, " 7 ", 7, "seven"),
        (1.5, "2.5", 2.5, "nan"),
        (False, "yes", True, "maybe"),
        (Path("x"), "/tmp/y", Path("/tmp/y"), ""),
        ((), "a b,c", ("a", "b", "c"), ["a", ["b"]]),
        ("", "text", "text", "two\nlines"),
    ],
)
def test_a_setting_added_without_its_own_checker_is_checked_by_its_type(default, good, expected, bad):
    from toa_kernel.core.settings import type_checker

    check = type_checker(default)
    assert check(good, "--new") == expected
    with pytest.raises(UserError, match=r"^--new "):
        check(bad, "--new")


def test_every_task_that_acts_on_a_system_takes_the_ssh_flags_and_keeps_h_for_help():
    collection = project_tasks()
    wanted = {"--host", "--ssh-key", "--ssh-port", "--ssh-user", "--sudo", "--known-hosts"}
    wanted |= {"--accept-new-host-key", "--legacy-ssh"}
    for name in SSH_TASKS:
        arguments = collection[name].get_arguments()
        flags = {"--" + argument.name.replace("_", "-") for argument in arguments}
        assert wanted <= flags, name
        ssh = [a for a in arguments if "--" + a.name.replace("_", "-") in wanted]
        assert all("h" not in a.names for a in ssh), name
