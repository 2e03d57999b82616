"""The vendor module's compatibility patches (patches/elb-toa/): chosen by what the
kernel headers contain, applied before Kbuild, recorded in the build.

Fast tests judge the choice against header files (the installed 6.1 headers, and
small trees holding the older declarations). Slow tests use the vendor's real
tarballs: every patch applies alone and in every combination, the source does
not compile against 6.1 without them and does with them.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from module_support import installed_headers
from probe_support import PROJECT_DIR, real_input

from toa_kernel.core.console import Console
from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import Settings
from toa_kernel.module.compat import (
    HeaderTree,
    choose_patches,
    header_tree,
    parse_patch_header,
    source_version,
)
from toa_kernel.module.steps import SourceRequest, build_module
from toa_kernel.system.rootfs import Root

PATCHES = PROJECT_DIR / "patches"
HEADERS = installed_headers()
needs_headers = pytest.mark.skipif(HEADERS is None, reason="no linux-headers package installed")
VERSIONS = {"master": "1.0.0.0", "IPv6": "2.1.0"}

# Declarations as kernels before the API changes have them (3.10-era), and as 6.1 has them.
OLD_HEADERS = {
    "include/net/inet_common.h": "int inet_getname(struct socket *sock, struct sockaddr *uaddr,\n"
    "\t\t int *uaddr_len, int peer);\n",
    "include/net/ipv6.h": "extern int inet6_getname(struct socket *sock, struct sockaddr *uaddr,\n"
    "\t\t\t int *uaddr_len, int peer);\n",
    "include/linux/proc_fs.h": "struct proc_dir_entry *proc_create(const char *name, umode_t mode,\n"
    "\tstruct proc_dir_entry *parent, const struct file_operations *proc_fops);\n",
    "include/net/inet_connection_sock.h": "\tstruct sock *(*syn_recv_sock)(struct sock *sk,\n"
    "\t\t\t\t      struct sk_buff *skb, struct request_sock *req,\n"
    "\t\t\t\t      struct dst_entry *dst);\n",
    "Module.symvers": "0x12345678\tkallsyms_lookup_name\tvmlinux\tEXPORT_SYMBOL_GPL\n",
    "arch/x86/include/asm/tlbflush.h": "static inline void __flush_tlb_all(void)\n{\n"
    "\tif (cpu_has_pge)\n\t\t__flush_tlb_global();\n\telse\n\t\t__flush_tlb();\n}\n",
}
ALWAYS = ["0005-write-protect-both-tables.patch", "0006-record-option-kind.patch"]


def tree_of(base: Path, files: dict[str, str]) -> HeaderTree:
    for relative, text in files.items():
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return HeaderTree([base])


def vendor_source(tmp_path: Path, branch: str) -> Path:
    """The vendor's src/ directory, unpacked from the real branch tarball."""
    with tarfile.open(real_input(f"elb-toa-{branch}.tar.gz")) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    return tmp_path / "unpacked" / f"elb-toa-{branch}" / "src"


def version_dir(branch: str) -> Path:
    return PATCHES / "elb-toa" / VERSIONS[branch]


def applied(choices: list) -> list[str]:
    return [c.patch.name for c in choices if c.applies]


# --- the patch files ------------------------------------------------------------------


@pytest.mark.parametrize("branch", sorted(VERSIONS))
def test_every_patch_says_what_it_does_and_when_it_is_needed(branch):
    patches = sorted(version_dir(branch).glob("*.patch"))
    assert [p.name[:4] for p in patches] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    for path in patches:
        patch = parse_patch_header(path)
        assert patch.subject and patch.subject != path.stem
        text = path.read_text()
        assert "--- a/toa.c\n+++ b/toa.c\n" in text
        # only the record of the option kind is unconditional: the write-protect fix needs the TLB flush
        assert ("record-option-kind" in path.name) == (patch.requires == ())
    assert len(parse_patch_header(version_dir(branch) / patches[0].name).requires) == (
        2 if branch == "IPv6" else 1  # inet_getname, and inet6_getname where the branch hooks it
    )


def test_a_malformed_requires_line_is_refused(tmp_path):
    bad = tmp_path / "0001-x.patch"
    bad.write_text("Subject: x\nRequires: include/linux/x.h contains y\n\n--- a/toa.c\n+++ b/toa.c\n")
    with pytest.raises(UserError, match="PATH has\\|lacks REGEX"):
        parse_patch_header(bad)


# --- chosen by the headers --------------------------------------------------------------


def write_version(moddir: Path, version: str) -> Path:
    moddir.mkdir(parents=True, exist_ok=True)
    (moddir / "toa.h").write_text(f'#define TOA_VERSION "{version}"\n')
    return moddir


@needs_headers
@pytest.mark.parametrize("branch", sorted(VERSIONS))
def test_debian_6_1_headers_call_for_every_patch(tmp_path, branch):
    kdir = Path(f"/lib/modules/{HEADERS}/build").resolve()
    headers = header_tree(Root.of("/"), HEADERS, kdir)
    assert headers.find("include/net/inet_common.h") is not None  # found in the -common tree
    version, choices = choose_patches(PATCHES, write_version(tmp_path / "src", VERSIONS[branch]), headers)
    assert version == VERSIONS[branch]
    assert [c.applies for c in choices] == [True] * 6, [c.why for c in choices]
    assert "tlbflush.h has" in choices[4].why  # 6.1 exports __flush_tlb_all, declared there


@pytest.mark.parametrize("branch", sorted(VERSIONS))
def test_older_headers_need_only_the_write_protect_fix_and_the_option_record(tmp_path, branch):
    headers = tree_of(tmp_path / "headers", OLD_HEADERS)
    _, choices = choose_patches(PATCHES, write_version(tmp_path / "src", VERSIONS[branch]), headers)
    assert applied(choices) == ALWAYS
    assert "inet_common.h has" in choices[0].why and choices[0].why.endswith(": no")


@pytest.mark.parametrize(
    ("changed", "text", "patch"),
    [
        (
            "include/net/inet_common.h",
            "int inet_getname(struct socket *sock, struct sockaddr *uaddr,\n int peer);",
            "0001",
        ),
        ("include/linux/proc_fs.h", "struct proc_ops {\n\tunsigned int proc_flags;\n};\n", "0002"),
        ("Module.symvers", "0x6c8b53a1\tsock_create_kern\tvmlinux\tEXPORT_SYMBOL\n", "0003"),
        (
            "include/net/inet_connection_sock.h",
            "\tstruct sock *(*syn_recv_sock)(const struct sock *sk, struct sk_buff *skb,\n"
            "\t\t\t\t      bool *own_req,\n"
            "\t\t\t\t      void (*opt_child_init)(struct sock *newsk,\n"
            "\t\t\t\t\t\t\t     const struct sock *sk));\n",
            "0004",
        ),
    ],
)
def test_one_changed_declaration_switches_its_patch_on(tmp_path, changed, text, patch):
    headers = tree_of(tmp_path / "headers", {**OLD_HEADERS, changed: text})
    _, choices = choose_patches(PATCHES, write_version(tmp_path / "src", "1.0.0.0"), headers)
    assert [name[:4] for name in applied(choices)] == sorted({patch, "0005", "0006"})


def test_a_missing_header_file_never_counts_as_needing_a_patch(tmp_path):
    headers = tree_of(tmp_path / "headers", {"include/linux/other.h": ""})
    _, choices = choose_patches(PATCHES, write_version(tmp_path / "src", "1.0.0.0"), headers)
    assert applied(choices) == ["0006-record-option-kind.patch"]
    assert "arch/x86/include/asm/tlbflush.h is not in the headers" in choices[4].why


FLUSH_CALL = re.compile(r"\b(toa_flush_tlb|flush_tlb_everywhere)\(\);")


@pytest.mark.parametrize("branch", sorted(VERSIONS))
def test_the_write_protect_fix_flushes_the_tlb_after_every_page_table_change(tmp_path, branch):
    source = vendor_source(tmp_path, branch)
    patch = version_dir(branch) / "0005-write-protect-both-tables.patch"
    subprocess.run(["patch", "-s", "-p1", "--fuzz=0", "-d", str(source), "-i", str(patch)], check=True)
    text = (source / "toa.c").read_text()
    changes = [m.end() for m in re.finditer(r"pte->pte\s*(\|=|&=)", text)]
    assert len(changes) >= 2  # made writable, made read-only again
    for at in changes:  # a flush before the function returns
        assert FLUSH_CALL.search(text[at : text.index("return", at)]), text[at - 200 : at + 200]
    helper = text[text.index("__flush_tlb_all();") - 200 : text.index("on_each_cpu(") + 60]
    assert "static void" in helper and "NULL, 1);" in helper  # every CPU, waiting for all


def test_a_module_without_toa_version_gets_no_patches(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello.c").write_text("int x;\n")
    assert choose_patches(PATCHES, tmp_path / "src", HeaderTree([tmp_path])) == (None, [])
    assert source_version(write_version(tmp_path / "other", "9.9")) == "9.9"
    assert choose_patches(PATCHES, tmp_path / "other", HeaderTree([tmp_path])) == ("9.9", [])


# --- on the vendor's real source ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("branch", sorted(VERSIONS))
def test_each_patch_applies_alone_and_in_every_combination(tmp_path, branch):
    source = vendor_source(tmp_path, branch)
    assert source_version(source) == VERSIONS[branch]
    patches = sorted(version_dir(branch).glob("*.patch"))
    pristine = (source / "toa.c").read_text()
    for count in range(1, len(patches) + 1):
        for subset in itertools.combinations(patches, count):
            work = tmp_path / "work"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            (work / "toa.c").write_text(pristine)
            for patch in subset:
                done = subprocess.run(
                    ["patch", "-p1", "--fuzz=0", "--forward", "-s", "-d", str(work), "-i", str(patch)],
                    capture_output=True,
                    text=True,
                )
                assert done.returncode == 0, (branch, [p.name for p in subset], done.stdout + done.stderr)


def settings_for(tmp_path: Path, patches_dir: Path = PATCHES) -> Settings:
    return Settings(workdir=tmp_path / "work", root=Path("/"), patches_dir=patches_dir)  # type: ignore[arg-type]


@pytest.mark.slow
@needs_headers
def test_without_the_patches_the_vendor_module_does_not_compile_against_6_1(tmp_path):
    request = SourceRequest(tarball=real_input("elb-toa-master.tar.gz"))
    with pytest.raises(UserError, match="does not compile against") as caught:
        build_module(
            settings_for(tmp_path, tmp_path / "no-patches"), request, Console(quiet=True), release=HEADERS
        )
    assert "inet_getname" in caught.value.message


@pytest.mark.slow
@needs_headers
@pytest.mark.parametrize("branch", sorted(VERSIONS))
def test_build_module_applies_the_patches_and_records_them(tmp_path, branch, capsys):
    request = SourceRequest(tarball=real_input(f"elb-toa-{branch}.tar.gz"), nat64=branch == "IPv6")
    record = build_module(settings_for(tmp_path), request, Console(), release=HEADERS)
    assert record["vermagic"].split()[0] == HEADERS and record["module_version"] == VERSIONS[branch]
    assert [p["applies"] for p in record["patches"]] == [True] * 6
    assert all(len(p["sha256"]) == 64 and p["why"] for p in record["patches"])
    out = capsys.readouterr().out
    assert "build-module: apply 0001-inet-getname-returns-length.patch" in out
    built = Path(record["ko"]).parent / "src" / "toa.c"
    assert "retval >= 0" in built.read_text() and "kallsyms_lookup_name(" not in built.read_text()
    again = build_module(settings_for(tmp_path), request, Console(quiet=True), release=HEADERS)
    assert again["built"] == record["built"]  # same source, same patches: not rebuilt
