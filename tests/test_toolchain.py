"""The toolchain compatibility set: conditions, which patches a host needs, the make variable;
the fixes of the vendor's syntax errors; the lab config base (fast; the real tree's compile is in
test_real_kernel.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import PROJECT_DIR

from toa_kernel.core.errors import UserError
from toa_kernel.core.layout import TOA_HEADER
from toa_kernel.kernel import configbase, defects, patching, toolchain
from toa_kernel.kernel import tree as kernel_tree

COMPAT_DIR = PROJECT_DIR / "patches" / "toolchain"
CENTOS6 = toolchain.Toolchain(
    {"gcc": (4, 4, 7), "binutils": (2, 20, 51), "make": (3, 81), "perl": (5, 10, 1)}
)
DEBIAN12 = toolchain.Toolchain(
    {"gcc": (12, 2, 0), "binutils": (2, 40), "make": (4, 3), "perl": (5, 36, 0)},
    frozenset({"gcc-default-pie", "sh-echo-escapes", "no-v4l1-header"}),
)
VENDOR_STAT = "#define DEFINE_TOA_STAT(type, name)       \\\n\t(__typeof__(type) *name)\n"


def kbuild_tree(base: Path) -> Path:
    (base / "scripts").mkdir(parents=True)
    (base / "scripts" / "Kbuild.include").write_text("# Kbuild\n")
    return base


# --- conditions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "centos6", "debian12"),
    [
        ("gcc >= 5", False, True),
        ("gcc >= 12.2", False, True),
        ("gcc >= 12.3", False, False),
        ("binutils >= 2.31", False, True),
        ("make >= 4.3", False, True),
        ("perl >= 5.22", False, True),
        ("gcc-default-pie", False, True),
        ("sh-echo-escapes", False, True),
        ("no-v4l1-header", False, True),
    ],
)
def test_a_condition_holds_by_version_or_feature(when, centos6, debian12):
    assert CENTOS6.holds(when) is centos6
    assert DEBIAN12.holds(when) is debian12


def test_a_missing_tool_never_satisfies_a_version_condition():
    assert not toolchain.Toolchain({"gcc": None}).holds("gcc >= 1")


@pytest.mark.parametrize("when", ["clang >= 10", "gcc > 5", "gcc >= five", "sh-is-bash"])
def test_an_unknown_condition_is_a_user_error(when):
    with pytest.raises(UserError, match="unknown toolchain condition"):
        DEBIAN12.holds(when)


@pytest.mark.parametrize(
    ("line", "version"),
    [
        ("gcc (Debian 12.2.0-14+deb12u1) 12.2.0", (12, 2, 0)),
        ("gcc (GCC) 4.4.7 20120313 (Red Hat 4.4.7-23)", (4, 4, 7)),
        ("GNU ld (GNU Binutils for Debian) 2.40", (2, 40)),
        ("GNU ld version 2.20.51.0.2-5.48.el6 20100205", (2, 20, 51)),
        ("GNU Make 4.3", (4, 3)),
        ("5.36.0", (5, 36, 0)),
    ],
)
def test_versions_are_read_from_the_tools_first_lines(line, version):
    assert toolchain.parse_version(line) == version


def test_this_hosts_toolchain_is_detected_from_the_real_tools():
    found = toolchain.detect()
    gcc_major = int(
        subprocess.run(["gcc", "-dumpversion"], capture_output=True, text=True).stdout.split(".")[0]
    )
    assert found.versions["gcc"][0] == gcc_major
    assert all(found.versions[tool] for tool in ("binutils", "make", "perl"))
    pie = (
        "__PIE__"
        in subprocess.run(["gcc", "-dM", "-E", "-x", "c", "/dev/null"], capture_output=True, text=True).stdout
    )
    assert ("gcc-default-pie" in found.features) is pie
    assert found.descriptions["gcc"].startswith("gcc")
    v4l1 = subprocess.run(
        ["gcc", "-E", "-x", "c", "-"], input=b"#include <linux/videodev.h>\n", capture_output=True
    )
    assert ("no-v4l1-header" in found.features) is (v4l1.returncode != 0)


# --- the set ------------------------------------------------------------------------------


def test_every_patch_of_the_set_declares_a_valid_condition_and_its_symptom():
    patches = toolchain.compat_patches(COMPAT_DIR)
    assert len(patches) == 10
    for patch in patches:
        assert patch.subject and patch.symptom, patch.name
        DEBIAN12.holds(patch.when)  # raises on a condition the build cannot judge
        assert patch.path.read_text().count("\n--- a/") == 1


def test_a_patch_without_a_when_line_is_refused(tmp_path):
    patch = tmp_path / "0001-x.patch"
    patch.write_text("Subject: x\n\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(UserError, match="no 'When:' line"):
        toolchain.read_compat_patch(patch)


def test_a_centos6_toolchain_gets_nothing(tmp_path):
    compat = toolchain.plan_compat(kbuild_tree(tmp_path), COMPAT_DIR, CENTOS6)
    assert compat.kbuild_tree and not compat.needed
    assert compat.patches == [] and compat.variables == {} and compat.banner() == []
    assert len(compat.not_needed) == 10
    assert toolchain.cc_variable(compat, ccache=False) is None


def test_a_debian12_toolchain_gets_every_patch_and_cc_without_pie_loudly(tmp_path):
    compat = toolchain.plan_compat(kbuild_tree(tmp_path), COMPAT_DIR, DEBIAN12)
    assert [p.name[:4] for p in compat.patches] == [f"{n:04d}" for n in range(1, 11)]
    assert compat.variables == {"CC": "gcc -fno-PIE"}
    banner = " ".join(compat.banner())
    assert "NEWER THAN THIS 2.6.32 TREE SUPPORTS" in banner
    for reason in (
        "gcc 12.2.0 (>= 5)",
        "binutils 2.40 (>= 2.31)",
        "make 4.3 (>= 4.3)",
        "perl 5.36.0 (>= 5.22)",
    ):
        assert reason in banner
    assert "CC='gcc -fno-PIE'" in banner and "gcc 4.4 needs none" in banner
    assert toolchain.cc_variable(compat, ccache=False) == "CC=gcc -fno-PIE"
    assert toolchain.cc_variable(compat, ccache=True) == "CC=ccache gcc -fno-PIE"
    record = compat.as_dict()
    assert record["compat_needed"] and record["make_variables"] == {"CC": "gcc -fno-PIE"}


def test_each_patch_follows_only_its_own_tool(tmp_path):
    only_binutils = toolchain.Toolchain({**CENTOS6.versions, "binutils": (2, 31)})
    compat = toolchain.plan_compat(kbuild_tree(tmp_path), COMPAT_DIR, only_binutils)
    assert [p.when for p in compat.patches] == ["binutils >= 2.31", "binutils >= 2.31"]
    assert compat.variables == {} and compat.reasons == ["binutils 2.31 (>= 2.31)"]


def test_a_tree_without_kbuild_gets_no_compatibility_set(tmp_path):
    compat = toolchain.plan_compat(tmp_path, COMPAT_DIR, DEBIAN12)
    assert not compat.kbuild_tree and not compat.needed
    assert "not a Kbuild tree" in compat.summary()
    assert toolchain.cc_variable(compat, ccache=True) == "CC=ccache gcc"


# --- 0010: a constant delay over udelay's limit in igb's PHY link wait ------------------------

IGB_PHY = "drivers/net/igb/e1000_phy.c"
# Our own C around the patch's pre-image: udelay/mdelay with the kernel's compile-time check (a
# constant over 20000 us calls the undefined __bad_udelay), the driver's delay macros, and a caller
# passing the driver's 100000 us. The function is static with that one caller, so gcc inlines it at
# any -O level and the constant reaches every delay, as gcc 12's per-constant clone does in the tree.
IGB_HEAD = """typedef int s32;
typedef unsigned short u16;
typedef unsigned int u32;
typedef _Bool bool;
#define E1000_SUCCESS 0
#define PHY_STATUS 1
#define MII_SR_LINK_STATUS 4
extern void __bad_udelay(void);
extern void __const_udelay(unsigned long xloops);
extern void __udelay(unsigned long usecs);
#define udelay(n) (__builtin_constant_p(n) ? \\
\t((n) > 20000 ? __bad_udelay() : __const_udelay((n) * 0x10c7ul)) : __udelay(n))
#define mdelay(n) (__builtin_constant_p(n) && (n) <= 5 ? udelay((n) * 1000) : \\
\t({ unsigned long ms = (n); while (ms--) udelay(1000); }))
#define usec_delay(x) udelay(x)
#define msec_delay_irq(x) mdelay(x)
struct e1000_hw;
struct phy_ops { s32 (*read_reg)(struct e1000_hw *hw, u32 reg, u16 *data); };
struct e1000_hw { struct { struct phy_ops ops; } phy; };

static s32 e1000_phy_has_link_generic(struct e1000_hw *hw, u32 iterations, u32 usec_interval,
\t\t\t\t      bool *success)
{
\ts32 ret_val = E1000_SUCCESS;
\tu16 i, phy_status;

\tfor (i = 0; i < iterations; i++) {
\t\t/*
"""
IGB_TAIL = """\t\tif (phy_status & MII_SR_LINK_STATUS)
\t\t\tbreak;
\t\tif (usec_interval >= 1000)
\t\t\tmsec_delay_irq(usec_interval / 1000);
\t\telse
\t\t\tusec_delay(usec_interval);
\t}
\t*success = i < iterations;
\treturn ret_val;
}

s32 wait_forced_link(struct e1000_hw *hw, bool *link)
{
\treturn e1000_phy_has_link_generic(hw, 20, 100000, link);
}
"""


def compat_patch(number: str) -> toolchain.CompatPatch:
    return next(p for p in toolchain.compat_patches(COMPAT_DIR) if p.name.startswith(number))


def pre_image(patch: Path) -> str:
    """The lines the patch's one hunk expects (context and removed), in order."""
    hunk = patch.read_text().split("\n@@", 1)[1].split("\n", 1)[1]
    return "".join(line[1:] + "\n" for line in hunk.splitlines() if line[:1] in (" ", "-"))


def undefined_symbols(tmp_path: Path, source: Path) -> list[str]:
    """What the object gcc -O2 makes of ``source`` needs from elsewhere (as modpost reads it)."""
    objfile = tmp_path / "igb.o"
    subprocess.run(["gcc", "-O2", "-c", "-o", str(objfile), str(source)], check=True, capture_output=True)
    listing = subprocess.run(["nm", "-u", str(objfile)], check=True, capture_output=True, text=True).stdout
    return [line.split()[-1] for line in listing.splitlines()]


def test_0010_is_for_gcc_5_and_later():
    patch = compat_patch("0010")
    assert patch.when == "gcc >= 5" and "__bad_udelay" in patch.symptom
    assert DEBIAN12.holds(patch.when) and not CENTOS6.holds(patch.when)


def test_0010_applies_to_the_trees_igb_phy_and_takes_the_too_long_constant_udelay_out(tmp_path):
    patch = compat_patch("0010").path
    tree = tmp_path / "tree"
    (tree / IGB_PHY).parent.mkdir(parents=True)
    (tree / IGB_PHY).write_text(IGB_HEAD + pre_image(patch) + IGB_TAIL)
    assert "__bad_udelay" in undefined_symbols(tmp_path, tree / IGB_PHY)  # what modpost refused

    found = patching.plan_patches(tree, [patch])
    assert [o.status for o in found.outcomes] == ["would apply"]
    found.plan.apply(False, echo=lambda text: None)
    fixed = (tree / IGB_PHY).read_text()
    assert "msec_delay_irq(usec_interval/1000);" in fixed.split("ret_val = hw->phy.ops.read_reg", 2)[1]
    assert "__bad_udelay" not in undefined_symbols(tmp_path, tree / IGB_PHY)
    assert [o.status for o in patching.plan_patches(tree, [patch]).outcomes] == ["already applied"]


# --- the vendor's syntax errors ---------------------------------------------------------------

# Small C files with the shapes of the three defects (our own code, not the vendor's).
STAT_C = f"struct mib {{ long v[4]; }};\n{VENDOR_STAT}DEFINE_TOA_STAT(struct mib, ext_stats);\n"
BRACE_C = """#define NULL ((void *)0)
#define TOA_INC_STATS(mib, field) ((mib)[field]++)
struct sock { void *sk_user_data; };
static unsigned long ext_stats[4];
void count(struct sock *newsock)
{
\tif (NULL != newsock) {
\t\tif (NULL != newsock->sk_user_data) {
\t\t\tTOA_INC_STATS(ext_stats, 1);
\t\telse
\t\t\tTOA_INC_STATS(ext_stats, 2);
\t}
}
"""
CAST_C = """struct proto_ops { int x; };
struct proto_ops inet6_stream_ops;
void hook(void)
{
\tstruct proto_ops *ops =
\t\t\tstruct proto_ops *)&inet6_stream_ops;
\tops->x = 1;
}
"""
SAMPLES = {
    "toa-stat-declaration": (TOA_HEADER, STAT_C),
    "toa-v6-unclosed-brace": (defects.TOA_SOURCE, BRACE_C),
    "toa-v6-cast-parenthesis": (defects.TOA_SOURCE, CAST_C),
}


def compiles(tmp_path: Path, source: str) -> bool:
    (tmp_path / "t.c").write_text(source)
    argv = ["gcc", "-c", "-o", str(tmp_path / "t.o"), str(tmp_path / "t.c")]
    return subprocess.run(argv, capture_output=True).returncode == 0


def defect(name: str) -> defects.Defect:
    return next(d for d in defects.DEFECTS if d.name == name)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_defect_is_a_compile_error_its_fix_compiles_and_a_second_fix_changes_nothing(tmp_path, name):
    source = SAMPLES[name][1]
    assert defect(name).found(source) and not compiles(tmp_path, source)
    fixed = defect(name).fixed(source)
    assert compiles(tmp_path, fixed), fixed
    assert not defect(name).found(fixed) and defect(name).fixed(fixed) == fixed
    assert [d.name for d in defects.DEFECTS if d.found(source)] == [name]  # no fix touches another's shape


@pytest.mark.parametrize(
    "vendor",
    [
        "#define DEFINE_TOA_STAT(type, name) (__typeof__(type) *name)\n",
        "# define  DEFINE_TOA_STAT( type , name )\\\n  ( __typeof__( type ) * name )\n",
    ],
)
def test_the_stat_declaration_is_found_however_it_is_spaced(vendor):
    stat = defect("toa-stat-declaration")
    assert stat.found(vendor) and "(__typeof__" not in stat.fixed(vendor).replace(" ", "")


def test_valid_code_of_the_same_neighbourhood_is_left_alone():
    valid = (
        "\tif (NULL != newsock->sk_user_data)\n\t\tTOA_INC_STATS(ext_stats, 1);\n\telse\n\t\tx();\n"
        "\tstruct proto_ops *p =\n\t\t(struct proto_ops *)&inet6_stream_ops;\n"
        "#define DEFINE_TOA_STAT(type, name) __typeof__(type) *name\n"
    )
    assert [d.name for d in defects.DEFECTS if d.found(valid)] == []


def test_the_fixes_are_reported_edits_of_the_files_that_have_the_defects(tmp_path):
    for path, source in SAMPLES.values():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        with open(tmp_path / path, "a") as handle:
            handle.write(source)
    found = defects.fix_changes(tmp_path)
    assert [d.name for d, _ in found] == list(SAMPLES)
    for defect_found, change in found:
        assert change.summary == defect_found.summary and change.diff.count("\n+") >= 1
        change.action()
    assert defects.fix_changes(tmp_path) == []
    assert compiles(tmp_path, (tmp_path / defects.TOA_SOURCE).read_text())


# --- the config base -----------------------------------------------------------------------


def fake_tree(base: Path, defconfig: bool = True) -> Path:
    (base / "arch" / "x86" / "configs").mkdir(parents=True)
    if defconfig:
        (base / configbase.DEFCONFIG_FILE).write_text("CONFIG_SMALL=y\n")
    (base / ".config").write_text("CONFIG_RHEL=y\n")
    return base


def fake_make(tree: Path, calls: list):
    def run(args) -> None:
        calls.append(list(args))
        (tree / ".config").write_text((tree / configbase.DEFCONFIG_FILE).read_text())

    return run


def test_the_lab_base_starts_from_defconfig_and_keeps_the_trees_config(tmp_path):
    tree, calls = fake_tree(tmp_path), []
    plan = configbase.base_plan(tree, configbase.LAB, fake_make(tree, calls))
    assert [c.summary.split(":")[0] for c in plan] == [
        "keep the tree's own .config as .config.toa-tree",
        "start .config from the lab base",
    ]
    plan.apply(False, echo=lambda text: None)
    assert calls == [["x86_64_defconfig"]]
    assert (tree / ".config").read_text() == "CONFIG_SMALL=y\n"
    assert (tree / ".config.toa-tree").read_text() == "CONFIG_RHEL=y\n"
    assert configbase.current_base(tree) == "lab"
    assert not configbase.base_plan(tree, configbase.LAB, fake_make(tree, calls))  # second run: nothing


def test_going_back_to_the_tree_base_restores_its_config(tmp_path):
    tree = fake_tree(tmp_path)
    configbase.base_plan(tree, configbase.LAB, fake_make(tree, [])).apply(False, echo=lambda text: None)
    plan = configbase.base_plan(tree, configbase.TREE, fake_make(tree, []))
    assert [c.summary for c in plan] == ["put the tree's own .config back from .config.toa-tree"]
    plan.apply(False, echo=lambda text: None)
    assert (tree / ".config").read_text() == "CONFIG_RHEL=y\n"
    assert configbase.current_base(tree) == "tree" and not (tree / ".config.toa-tree").exists()
    assert not configbase.base_plan(tree, configbase.TREE, fake_make(tree, []))


def test_a_lab_base_whose_saved_tree_config_is_gone_cannot_go_back(tmp_path):
    tree = fake_tree(tmp_path)
    configbase.base_plan(tree, configbase.LAB, fake_make(tree, [])).apply(False, echo=lambda text: None)
    (tree / ".config.toa-tree").unlink()
    with pytest.raises(UserError, match="is gone"):
        configbase.base_plan(tree, configbase.TREE, fake_make(tree, []))


def test_a_tree_without_defconfig_has_no_lab_base(tmp_path):
    tree = fake_tree(tmp_path, defconfig=False)
    with pytest.raises(UserError, match="x86_64_defconfig") as raised:
        configbase.base_plan(tree, configbase.LAB, fake_make(tree, []))
    assert "--config-base tree" in raised.value.fix


def test_lab_fragments_come_first_and_the_production_fragments_win(tmp_path):
    configs = tmp_path / "configs"
    (configs / "lab").mkdir(parents=True)
    (configs / "toa.config").write_text("CONFIG_IPV6=y\nCONFIG_TOA=m\n")
    (configs / "lab" / "lab.config").write_text("CONFIG_IPV6=m\nCONFIG_E1000=y\n")
    values, files = configbase.fragments_for(configs, configbase.LAB)
    assert values == {"CONFIG_IPV6": "y", "CONFIG_E1000": "y", "CONFIG_TOA": "m"}
    assert [Path(f["path"]).name for f in files] == ["lab.config", "toa.config"]
    assert configbase.fragments_for(configs, configbase.TREE)[0] == {"CONFIG_IPV6": "y", "CONFIG_TOA": "m"}


def test_the_projects_lab_config_sets_what_the_rhel_source_needs():
    values = kernel_tree.parse_fragment((PROJECT_DIR / "configs" / "lab" / "lab.config").read_text())
    for option in ("CONFIG_XEN", "CONFIG_CGROUP_MEM_RES_CTLR", "CONFIG_NFS_USE_LEGACY_DNS", "CONFIG_E1000"):
        assert values[option] == "y", option
    assert values["CONFIG_MICROCODE"] is None


def test_an_unknown_config_base_is_a_user_error():
    from toa_kernel.core.settings import Settings

    assert Settings.from_config(None, config_base="LAB").config_base == "lab"
    with pytest.raises(UserError, match="--config-base 'small': is not a known config base"):
        Settings.from_config(None, config_base="small")
