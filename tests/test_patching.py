"""patches/*.patch applied with the real GNU patch: in order, all or nothing, skip when applied."""

from __future__ import annotations

import pytest
from build_support import TOA_C, make_patch, tree_digest
from conftest import have

from toa_kernel.core.errors import ToolMissing
from toa_kernel.demo.sample import write_sample_tree
from toa_kernel.kernel.patching import PatchRejected, find_patches, plan_patches, touched_files

pytestmark = pytest.mark.skipif(not have("patch"), reason="GNU patch is not installed")


@pytest.fixture
def tree(tmp_path):
    tree = write_sample_tree(tmp_path / "src")
    (tree / TOA_C).write_text("int a;\nint b;\nint c;\nint d;\nint e;\nint f;\nint g;\n")
    return tree


def test_patches_are_found_in_name_order(tmp_path):
    for name in ("0002-b.patch", "0001-a.patch", "README.md", "0010-c.patch"):
        (tmp_path / name).write_text("")
    assert [p.name for p in find_patches(tmp_path)] == ["0001-a.patch", "0002-b.patch", "0010-c.patch"]
    assert find_patches(tmp_path / "missing") == []


def test_touched_files_strip_one_component():
    text = "--- a/net/x.c\t2012-01-01\n+++ b/net/x.c\n--- /dev/null\n+++ b/net/new.c\n"
    assert touched_files(text) == ["net/x.c", "net/new.c"]


def test_a_patch_is_planned_on_a_copy_then_applied(tree, tmp_path):
    old = (tree / TOA_C).read_text()
    new = old.replace("int c;", "int c = 3;")
    patch = make_patch(tmp_path / "patches", "0001-c.patch", {TOA_C: (old, new)})
    before = tree_digest(tree)
    planned = plan_patches(tree, [patch])
    assert tree_digest(tree) == before  # planning wrote nothing
    assert [o.status for o in planned.outcomes] == ["would apply"]
    (change,) = planned.plan.changes
    assert change.summary == f"apply 0001-c.patch ({TOA_C})"
    assert "-int c;" in change.diff and "+int c = 3;" in change.diff
    change.action()
    assert (tree / TOA_C).read_text() == new
    assert planned.outcomes[0].status == "applied"
    assert not list(tree.rglob("*.orig")) and not list(tree.rglob("*.rej"))


def test_an_applied_patch_is_detected_and_skipped(tree, tmp_path):
    old = (tree / TOA_C).read_text()
    patch = make_patch(tmp_path / "p", "0001.patch", {TOA_C: (old, old.replace("int a;", "int a = 1;"))})
    plan_patches(tree, [patch]).plan.changes[0].action()
    before = tree_digest(tree)
    again = plan_patches(tree, [patch])
    assert not again.plan
    assert [o.status for o in again.outcomes] == ["already applied"]
    assert tree_digest(tree) == before


def test_patches_apply_in_order_and_may_depend_on_each_other(tree, tmp_path):
    old = (tree / TOA_C).read_text()
    mid = old.replace("int d;", "int d;\nint added;")
    new = mid.replace("int added;", "int added = 2;")
    first = make_patch(tmp_path / "p", "0001-add.patch", {TOA_C: (old, mid)})
    second = make_patch(tmp_path / "p", "0002-init.patch", {TOA_C: (mid, new)})
    planned = plan_patches(tree, [first, second])
    assert [o.status for o in planned.outcomes] == ["would apply", "would apply"]
    for change in planned.plan:
        change.action()
    assert (tree / TOA_C).read_text() == new
    assert not plan_patches(tree, [first, second]).plan


def test_a_patch_that_does_not_apply_leaves_the_tree_unchanged(tree, tmp_path):
    old = (tree / TOA_C).read_text()
    good = make_patch(tmp_path / "p", "0001-good.patch", {TOA_C: (old, old.replace("int a;", "int a = 1;"))})
    stale = "int x;\nint y;\nint z;\n"
    bad = make_patch(
        tmp_path / "p",
        "0002-bad.patch",
        {"net/Makefile": ((tree / "net/Makefile").read_text(), "changed\n"), TOA_C: (stale, "int x = 9;\n")},
    )
    before = tree_digest(tree)
    with pytest.raises(PatchRejected) as caught:
        plan_patches(tree, [good, bad])
    assert tree_digest(tree) == before
    error = caught.value
    assert "0002-bad.patch does not apply" in error.message and "nothing was changed" in error.message
    assert "-int x;" in error.rejects and "+int x = 9;" in error.rejects  # the rejected hunk is shown
    assert "-int x;" in error.message


def test_a_half_applied_patch_is_rejected_not_guessed(tree, tmp_path):
    old = (tree / TOA_C).read_text()
    new = old.replace("int a;", "int a = 1;").replace("int g;", "int g = 7;")
    patch = make_patch(tmp_path / "p", "0001.patch", {TOA_C: (old, new)})
    (tree / TOA_C).write_text(old.replace("int a;", "int a = 1;"))  # first hunk applied by hand
    before = tree_digest(tree)
    with pytest.raises(PatchRejected):
        plan_patches(tree, [patch])
    assert tree_digest(tree) == before


def test_patch_creating_and_deleting_files(tree, tmp_path):
    gone = "net/toa/obsolete.c"
    (tree / gone).write_text("old\n")
    patch = make_patch(tmp_path / "p", "0001.patch", {"net/toa/new.c": ("", "new\n"), gone: ("old\n", "")})
    planned = plan_patches(tree, [patch])
    planned.plan.changes[0].action()
    assert (tree / "net/toa/new.c").read_text() == "new\n"
    assert not (tree / gone).exists()
    assert [o.status for o in plan_patches(tree, [patch]).outcomes] == ["already applied"]


def test_no_patches_no_plan(tree):
    planned = plan_patches(tree, [])
    assert not planned.plan and planned.outcomes == []


def test_patch_missing_from_path_is_named(tree, tmp_path, monkeypatch):
    old = (tree / TOA_C).read_text()
    patch = make_patch(tmp_path / "p", "0001.patch", {TOA_C: (old, old + "int h;\n")})
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing, match="'patch'") as caught:
        plan_patches(tree, [patch])
    assert "yum install patch" in caught.value.fix
