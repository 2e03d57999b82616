"""``invoke build --host BUILDHOST``: the sample tree prepared here, compiled over SSH by the
build host's own make and gcc (the real sshd on 127.0.0.1, its root a sandbox directory),
the log streamed back, the artifacts fetched and checked, then installed on a node."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from build_support import build_settings, fetched_tree, quiet_console
from centos6_root import Sandbox
from node_support import Node
from sshd_support import needs_sshd

from toa_kernel.core.state import Workdir
from toa_kernel.kernel.build import run_build
from toa_kernel.kernel.remote import SHIP_DIR, TOKEN_FILE

pytestmark = [pytest.mark.slow, pytest.mark.ssh, needs_sshd]


@pytest.fixture
def build_host(tmp_path: Path, node_sshd) -> tuple[Node, Path]:
    """The test sshd as a build host, under a root prefix of its own."""
    root = tmp_path / "buildhost"
    root.mkdir()
    return Node("ssh", node_sshd, tmp_path / "known_hosts"), root


def remote_settings(tmp_path: Path, node: Node, root: Path):
    values = node.ssh_settings()
    return build_settings(tmp_path, build_host=values.pop("host"), root=root, **values)


def test_the_sample_tree_is_compiled_on_the_build_host_and_its_artifacts_come_back(tmp_path, build_host):
    node, root = build_host
    settings = remote_settings(tmp_path, node, root)
    tree = fetched_tree(settings)
    console, _ = quiet_console()
    commands_before = len(node.server.commands())
    result = run_build(settings, console=console)
    assert result.status == "ok", result.as_dict()
    shipped = root / SHIP_DIR.lstrip("/") / tree.name
    # compiled there, with its make: objects exist on the build host only
    assert (shipped / "vmlinux").is_file() and list(shipped.rglob("*.o"))
    assert not list(tree.rglob("*.o")) and not (tree / "vmlinux").exists()
    ran = [command for _user, command in node.server.commands()[commands_before:]]
    assert any("make -j2" in command and str(shipped) in command for command in ran)
    # the toolchain compatibility set was chosen from the build host's compiler, asked over SSH
    assert any("gcc -dM -E -x c -" in command for command in ran), ran
    # the artifacts were fetched into the build record and checked
    build = Workdir(settings.workdir).section("build")
    for key in ("bzimage", "toa_ko", "system_map"):
        assert Path(build[key]).is_file() and str(result.metadata.parent) in build[key]
    modules = Path(build["modules_tree"])
    assert (modules / "kernel/net/toa/toa.ko").is_file() and (modules / "modules.order").is_file()
    assert build["build_host"] == node.ssh_settings()["host"]
    metadata = json.loads(result.metadata.read_text())
    assert metadata["build_host"]["host"] == build["build_host"] and metadata["build_host"]["gcc"]
    assert metadata["tools"]["gcc"] == metadata["build_host"]["gcc"]
    log = result.log.read_text()
    assert f"[on {build['build_host']}]" in log and "  CC " in log and "exit 0 after" in log
    # a second build ships nothing new; a changed file alone goes over
    again = run_build(settings, console=quiet_console()[0])
    assert again.status == "ok"
    assert json.loads(again.metadata.read_text())["build_host"]["shipped"].startswith(
        "shipped changed files: 0 files"
    )
    source = tree / "net/toa/toa.c"
    source.write_text(source.read_text() + "\n/* changed */\n")
    third = run_build(settings, console=quiet_console()[0])
    shipped_note = json.loads(third.metadata.read_text())["build_host"]["shipped"]
    assert shipped_note.startswith("shipped changed files: 1 files"), shipped_note
    assert (shipped / "net/toa/toa.c").read_text().endswith("/* changed */\n")
    assert (shipped / TOKEN_FILE).is_file()


def test_a_build_made_on_a_build_host_installs_on_a_node(tmp_path, build_host, node_sshd):
    node, root = build_host
    settings = remote_settings(tmp_path / "b", node, root)
    fetched_tree(settings)
    assert run_build(settings, console=quiet_console()[0]).status == "ok"
    build = Workdir(settings.workdir).section("build")
    sandbox = Sandbox(tmp_path / "node", build, Node("ssh", node_sshd, tmp_path / "kh2"))
    report = sandbox.install()
    modules = sandbox.path(f"/lib/modules/{sandbox.release}")
    assert (modules / "kernel/net/toa/toa.ko").read_bytes() == Path(build["toa_ko"]).read_bytes()
    assert "toa.ko:" in (modules / "modules.dep").read_text()
    assert (
        sandbox.path(f"/boot/vmlinuz-{sandbox.release}").read_bytes() == Path(build["bzimage"]).read_bytes()
    )
    assert report.default_entry == 0 and sandbox.install().changes == []


def test_a_build_host_without_gcc_is_named(tmp_path, build_host):
    from sshd_support import start_sshd

    from toa_kernel.core.errors import ToolMissing

    server = start_sshd(missing_tools=("gcc",))
    try:
        node = Node("ssh", server, tmp_path / "kh")
        settings = remote_settings(tmp_path, node, build_host[1])
        fetched_tree(settings)
        with pytest.raises(ToolMissing) as caught:
            run_build(settings, console=quiet_console()[0])
        assert "gcc" in caught.value.message and "build host" in caught.value.fix
    finally:
        server.stop()


def test_dry_run_names_the_build_host_and_changes_nothing_there(tmp_path, build_host):
    node, root = build_host
    settings = remote_settings(tmp_path, node, root)
    fetched_tree(settings)
    console, output = quiet_console()
    run_build(settings, console=console, dry_run=True)
    assert f"ship the tree to {settings.build_host}" in output.getvalue()
    assert os.listdir(root) == []


def test_build_module_on_the_server_uses_its_headers_and_gcc(tmp_path, node_sshd):
    from module_support import HELLO_SRC, installed_headers

    from toa_kernel.core.console import Console
    from toa_kernel.core.settings import Settings
    from toa_kernel.kernel.modinfo import read_module_info
    from toa_kernel.module.steps import SourceRequest, build_module

    headers = installed_headers()
    if headers is None:
        pytest.skip("no linux-headers package installed")
    node = Node("ssh", node_sshd, tmp_path / "known_hosts")
    settings = Settings.from_config(None, workdir=tmp_path / "work", **node.ssh_settings())
    system = node.open(Path("/"))  # the server's own headers under /lib/modules/R/build
    logged = len(node_sshd.commands())
    record = build_module(
        settings, SourceRequest(src=HELLO_SRC), Console(quiet=True), release=headers, system=system
    )
    info = read_module_info(Path(record["ko"]))
    assert info.name == "hello" and info.release == headers
    assert record["build_host"]["host"] == system.host and record["build_host"]["gcc"]
    log = Path(record["log"]).read_text()
    assert (
        log.startswith("$ make -j") and f"[on {system.host}]" in log and "/var/tmp/toa-kernel-module/" in log
    )
    ran = [command for _, command in node_sshd.commands()[logged:]]
    assert any("make -j" in command and "M=/var/tmp/toa-kernel-module/" in command for command in ran)
    assert not Path("/var/tmp/toa-kernel-module", f"module-{headers}").exists()  # removed after the build
