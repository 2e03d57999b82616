"""grub.conf (GRUB legacy) parser and editor: corpus, edge cases, properties."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toa_kernel.boot import grubconf
from toa_kernel.boot.grubconf import (
    default_entry,
    default_index,
    edit_for_release,
    edit_restore_default,
    entry_index_for_release,
    parse,
    parse_saved_default,
)
from toa_kernel.core.errors import UserError
from toa_kernel.core.plan import unified_diff

CORPUS = Path(__file__).parent / "grub_corpus"
EXPECTED = CORPUS / "expected"
RELEASE = "2.6.32-toa"
CORPUS_FILES = sorted(CORPUS.glob("*.conf"))
GRUBBY_PAIRS = ["centos6-boot-partition", "centos6-single-partition", "hiddenmenu-password"]


def read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", "surrogateescape")


def corpus(name: str) -> str:
    return read(CORPUS / f"{name}.conf")


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


# ---------------------------------------------------------------- the corpus


def test_corpus_has_the_shapes_the_issue_lists():
    texts = {p.stem: read(p) for p in CORPUS_FILES}
    assert len(texts) >= 10
    assert any("kernel /vmlinuz-" in t for t in texts.values())
    assert any("kernel /boot/vmlinuz-" in t for t in texts.values())
    assert any("hiddenmenu" in t for t in texts.values())
    assert any("password --md5 $1$" in t for t in texts.values())
    assert any("kernel /xen.gz" in t and "module /vmlinuz-" in t for t in texts.values())
    assert any("default=saved" in t and "savedefault" in t for t in texts.values())
    assert any(not t.endswith("\n") for t in texts.values())
    assert any("\r\n" in t for t in texts.values())
    assert any("default 1" in t for t in texts.values()) and any("default=0" in t for t in texts.values())


@pytest.mark.parametrize("path", CORPUS_FILES, ids=ids(CORPUS_FILES))
def test_corpus_round_trips_byte_for_byte(path):
    data = path.read_bytes()
    text = data.decode("utf-8", "surrogateescape")
    assert parse(text).render().encode("utf-8", "surrogateescape") == data


@pytest.mark.parametrize("path", CORPUS_FILES, ids=ids(CORPUS_FILES))
def test_corpus_edit_gives_exactly_the_reviewed_diff(path):
    text = read(path)
    edit = edit_for_release(text, RELEASE)
    expected = read(EXPECTED / f"{path.stem}.diff")
    assert unified_diff(text, edit.text, "grub.conf") == expected
    assert edit.changed == bool(expected)
    assert bool(edit.summary) == bool(expected)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=ids(CORPUS_FILES))
def test_corpus_edit_result_boots_the_release_with_nohz_off(path):
    edit = edit_for_release(read(path), RELEASE)
    config = parse(edit.text)
    entry = config.entries[edit.entry_index]
    assert entry.release == RELEASE and not entry.is_multiboot
    assert config.default == edit.entry_index
    assert [a for a in entry.kernel_args if a.startswith("nohz")] == ["nohz=off"]
    if edit.previous_default != edit.entry_index:
        assert config.fallback == edit.previous_default


@pytest.mark.parametrize("path", CORPUS_FILES, ids=ids(CORPUS_FILES))
def test_corpus_edit_twice_equals_edit_once(path):
    once = edit_for_release(read(path), RELEASE)
    twice = edit_for_release(once.text, RELEASE)
    assert twice.text == once.text
    assert twice.summary == [] and not twice.changed
    assert twice.entry_index == once.entry_index and not twice.added_entry


@pytest.mark.parametrize("name", GRUBBY_PAIRS)
def test_added_entry_is_what_grubby_adds(name):
    """With or without the entry ``make install`` adds, the result is the same file."""
    without = edit_for_release(corpus(name), RELEASE)
    with_grubby = edit_for_release(corpus(f"{name}.grubby"), RELEASE)
    assert without.added_entry and not with_grubby.added_entry
    assert without.text == with_grubby.text
    assert without.previous_default == with_grubby.previous_default


def test_no_entry_added_when_make_install_added_one():
    edit = edit_for_release(corpus("centos6-boot-partition.grubby"), RELEASE)
    assert edit.summary == [
        "kernel line of 'CentOS (2.6.32-toa)': + nohz=off",
        "default 1 -> 0",
        "fallback -> 1",
    ]
    assert (edit.entry_index, edit.previous_default, edit.previous_fallback) == (0, 1, None)


def test_added_entry_copies_root_and_arguments_of_the_default():
    config = parse(corpus("no-default-dualboot"))
    edit = edit_for_release(corpus("no-default-dualboot"), RELEASE)
    new = parse(edit.text).entries[0]
    old = config.entries[0]
    assert new.title == "CentOS (2.6.32-toa)"
    assert new.root == old.root == "(hd0,1)"
    assert new.kernel == "/boot/vmlinuz-2.6.32-toa"
    assert new.initrd == "/boot/initramfs-2.6.32-toa.img"
    assert new.kernel_args == [*old.kernel_args, "nohz=off"]
    assert (
        edit.summary[0] == "entry 0 'CentOS (2.6.32-toa)' added (a copy of 'CentOS (2.6.32-754.el6.x86_64)')"
    )


# ---------------------------------------------------------------- reading


def test_entries_of_a_separate_boot_partition():
    config = parse(corpus("centos6-boot-partition"))
    assert config.default == 0 and config.fallback is None
    assert [e.title for e in config.entries] == [
        "CentOS (2.6.32-754.35.1.el6.x86_64)",
        "CentOS 6 (2.6.32-754.el6.x86_64)",
    ]
    first = config.entries[0]
    assert first.root == "(hd0,0)"
    assert first.kernel == "/vmlinuz-2.6.32-754.35.1.el6.x86_64"
    assert first.kernel_args[:2] == ["ro", "root=/dev/mapper/VolGroup-lv_root"]
    assert first.kernel_args[-2:] == ["rhgb", "quiet"]
    assert first.initrd == "/initramfs-2.6.32-754.35.1.el6.x86_64.img"
    assert first.span == (13, 17) and config.entries[1].span == (17, 21)
    assert [c.keyword for c in config.globals if c.kind == "command"] == [
        "default",
        "timeout",
        "splashimage",
        "hiddenmenu",
    ]


def test_key_value_with_blanks_and_equals():
    config = parse(
        "default = 1\ntimeout\t3\nfallback=0 2\ntitle=A\n\tkernel=/vmlinuz-1 ro\ntitle B\n kernel /b\n"
    )
    assert config.default == 1 and config.fallbacks == [0, 2] and config.fallback == 0
    assert [e.title for e in config.entries] == ["A", "B"]
    assert config.entries[0].kernel == "/vmlinuz-1" and config.entries[0].kernel_args == ["ro"]


def test_xen_entry_boots_vmlinuz_as_a_module():
    config = parse(corpus("xen-dom0"))
    xen, plain = config.entries
    assert xen.is_xen and xen.is_multiboot and not xen.is_linux
    assert xen.kernel == "/xen.gz" and xen.boot_image == "/vmlinuz-3.18.44-20.el6.x86_64"
    assert xen.release == "3.18.44-20.el6.x86_64"
    assert [m[0] for m in xen.modules] == [
        "/vmlinuz-3.18.44-20.el6.x86_64",
        "/initramfs-3.18.44-20.el6.x86_64.img",
    ]
    assert not plain.is_xen and plain.is_linux
    assert entry_index_for_release(config, "3.18.44-20.el6.x86_64") is None
    assert entry_index_for_release(config, "3.18.44-20.el6.x86_64", include_multiboot=True) == 0


def test_release_is_found_in_both_path_styles():
    assert entry_index_for_release(parse(corpus("centos6-boot-partition.grubby")), RELEASE) == 0
    assert entry_index_for_release(parse(corpus("centos6-single-partition.grubby")), RELEASE) == 0
    assert entry_index_for_release(parse(corpus("toa-present")), RELEASE) == 1
    assert entry_index_for_release(parse(corpus("centos6-boot-partition")), RELEASE) is None
    # a longer release that starts with the same text is another kernel
    assert entry_index_for_release(parse("title x\nkernel /vmlinuz-2.6.32-toa2\n"), RELEASE) is None
    assert entry_index_for_release(parse("title x\nkernel (hd0,0)/boot/vmlinuz-2.6.32-toa\n"), RELEASE) == 0


def test_comments_blank_lines_and_continuations():
    config = parse(corpus("comments-tabs"))
    assert config.default == 1 and config.fallback == 0
    assert [e.title for e in config.entries][2] == "memtest86+ (4.10)"
    newest = config.entries[0]
    assert newest.kernel_args == ["ro", "root=LABEL=/", "console=ttyS1,9600", "quiet"]
    assert newest.kernel_command.first + 1 == newest.kernel_command.last  # two physical lines
    memtest = config.entries[2]
    assert memtest.kernel == "/elf-memtest86+-4.10" and not memtest.is_linux


def test_commented_out_title_is_not_an_entry():
    config = parse("#title old\n#\tkernel /vmlinuz-1\ntitle new\n\tkernel /vmlinuz-2\n")
    assert [e.title for e in config.entries] == ["new"]


def test_title_without_commands_is_skipped_as_grub_does():
    text = "default=1\ntitle ghost\n# nothing\ntitle A\n\tkernel /vmlinuz-a\ntitle B\n\tkernel /vmlinuz-b\n"
    config = parse(text + "title tail\n")
    assert [e.title for e in config.entries] == ["A", "B"]
    assert default_entry(config).title == "B"


def test_comment_ending_in_backslash_swallows_the_next_line():
    config = parse("# a comment \\\ntitle hidden\ntitle A\n\tkernel /vmlinuz-a\n")
    assert [e.title for e in config.entries] == ["A"]


def test_crlf_is_read_like_grub_reads_it():
    config = parse(corpus("crlf"))
    assert config.default == 0 and config.newline == "\r\n"
    assert config.entries[0].kernel_args[-1] == "quiet" and config.entries[0].title.endswith(")")


def test_default_entry_follows_grub_rules():
    two = "title A\n\tkernel /vmlinuz-a\ntitle B\n\tkernel /vmlinuz-b\n"
    assert default_entry(parse(two)).title == "A"
    assert default_entry(parse("default=1\n" + two)).title == "B"
    assert default_entry(parse("default=saved\n" + two), saved_default=1).title == "B"
    assert default_entry(parse("default=saved\n" + two)).title == "A"
    assert default_entry(parse("default=7\nfallback 9 1\n" + two)).title == "B"
    assert default_entry(parse("default=7\n" + two)).title == "A"
    assert default_entry(parse("default=0x1\n" + two)).title == "B"
    assert default_index(parse("default=abc\n" + two)) == 0
    assert default_entry(parse("# nothing\n")) is None


def test_parse_saved_default_reads_the_default_file():
    assert parse_saved_default("1\n") == 1
    assert parse_saved_default("0\n" + "\n" * 9) == 0
    assert parse_saved_default("") is None
    assert parse_saved_default("junk") is None


def test_unreadable_default_is_a_user_error():
    config = parse("default=first\ntitle A\n\tkernel /vmlinuz-a\n")
    with pytest.raises(UserError, match="neither a number nor 'saved'"):
        _ = config.default
    with pytest.raises(UserError, match="neither a number nor 'saved'"):
        edit_for_release(config.render(), RELEASE)


# ---------------------------------------------------------------- editing details

SIMPLE = (
    "default=0\n"
    "timeout=5\n"
    "title CentOS (2.6.32-754.el6.x86_64)\n"
    "\troot (hd0,0)\n"
    "\tkernel /vmlinuz-2.6.32-754.el6.x86_64 ro root=/dev/sda2 quiet\n"
    "\tinitrd /initramfs-2.6.32-754.el6.x86_64.img\n"
)


def kernel_line(text: str, index: int = 0) -> str:
    command = parse(text).entries[index].kernel_command
    return command.keyword + command.sep + command.value


def test_nohz_value_is_replaced_in_place_and_never_duplicated():
    text = SIMPLE.replace("ro root", "nohz=on ro root")
    edit = edit_for_release(text, RELEASE)
    assert kernel_line(edit.text) == "kernel /vmlinuz-2.6.32-toa nohz=off ro root=/dev/sda2 quiet"
    assert "nohz=on -> nohz=off" in edit.summary[1]


def test_repeated_key_keeps_one_value():
    text = SIMPLE.replace("quiet", "nohz=on quiet nohz=on")
    edit = edit_for_release(text, RELEASE)
    assert kernel_line(edit.text) == "kernel /vmlinuz-2.6.32-toa ro root=/dev/sda2 nohz=off quiet"
    assert edit.summary[1].endswith("nohz=on -> nohz=off, - nohz=on")


def test_extra_arguments_key_value_replace_and_bare_flags_once():
    text = SIMPLE.replace("quiet", "quiet panic=0")
    edit = edit_for_release(text, RELEASE, kernel_args=("nohz=off", "panic=10", "quiet", "noapic"))
    assert kernel_line(edit.text) == (
        "kernel /vmlinuz-2.6.32-toa ro root=/dev/sda2 quiet panic=10 nohz=off noapic"
    )
    assert edit_for_release(edit.text, RELEASE, kernel_args="nohz=off panic=10 quiet noapic").summary == []


def test_arguments_go_before_init_arguments():
    text = SIMPLE.replace("quiet", "quiet -- single")
    edit = edit_for_release(text, RELEASE)
    assert kernel_line(edit.text) == "kernel /vmlinuz-2.6.32-toa ro root=/dev/sda2 quiet nohz=off -- single"


def test_trailing_blanks_and_tabs_are_kept():
    text = "default 0\ntitle A\n\tkernel\t/vmlinuz-2.6.32-toa\tro  quiet \t\n"
    edit = edit_for_release(text, RELEASE)
    assert edit.text == "default 0\ntitle A\n\tkernel\t/vmlinuz-2.6.32-toa\tro  quiet nohz=off \t\n"


def test_last_line_without_newline_stays_without_one():
    text = "default=0\ntitle A\n\tkernel /vmlinuz-2.6.32-toa ro"
    edit = edit_for_release(text, RELEASE)
    assert edit.text == "default=0\ntitle A\n\tkernel /vmlinuz-2.6.32-toa ro nohz=off"


def test_copied_last_line_gets_a_newline():
    text = "default=0\ntitle A (1)\n\tkernel /vmlinuz-1 ro"
    edit = edit_for_release(text, RELEASE)
    assert edit.text == (
        "default=0\nfallback=1\ntitle A (2.6.32-toa)\n\tkernel /vmlinuz-2.6.32-toa ro nohz=off\n"
        "title A (1)\n\tkernel /vmlinuz-1 ro"
    )


def test_continued_kernel_line_is_joined_when_edited():
    text = "default=0\ntitle A\n\tkernel /vmlinuz-2.6.32-toa ro \\\n\t\tquiet\n\tinitrd /i.img\n"
    edit = edit_for_release(text, RELEASE)
    assert (
        edit.text
        == "default=0\ntitle A\n\tkernel /vmlinuz-2.6.32-toa ro  \t\tquiet nohz=off\n\tinitrd /i.img\n"
    )
    assert parse(edit.text).entries[0].kernel_args == ["ro", "quiet", "nohz=off"]


def test_initrd_name_can_be_given_or_left_out():
    named = edit_for_release(SIMPLE, RELEASE, initrd_name="initrd-2.6.32-toa.img")
    assert parse(named.text).entries[0].initrd == "/initrd-2.6.32-toa.img"
    none = edit_for_release(SIMPLE, RELEASE, initrd_name="")
    assert parse(none.text).entries[0].initrd is None
    no_model = SIMPLE.replace("\tinitrd /initramfs-2.6.32-754.el6.x86_64.img\n", "")
    assert parse(edit_for_release(no_model, RELEASE).text).entries[0].initrd is None
    added = edit_for_release(no_model, RELEASE, initrd_name="initramfs-2.6.32-toa.img")
    assert (
        "\tkernel /vmlinuz-2.6.32-toa ro root=/dev/sda2 quiet nohz=off\n\tinitrd /initramfs-2.6.32-toa.img\n"
        in (added.text)
    )


def test_title_is_derived_like_grubby():
    def title_for(title: str, kernel: str = "/vmlinuz-2.6.32-754.el6.x86_64") -> str:
        text = f"title {title}\n\tkernel {kernel} ro\n"
        return parse(edit_for_release(text, RELEASE).text).entries[0].title

    assert title_for("CentOS (2.6.32-754.el6.x86_64)") == "CentOS (2.6.32-toa)"
    assert title_for("CentOS 6.10 (Final) (2.6.32-754.el6.x86_64)") == "CentOS 6.10 (Final) (2.6.32-toa)"
    assert title_for("Server (stable)") == "Server (2.6.32-toa)"
    assert title_for("Production kernel") == "Production kernel (2.6.32-toa)"


def test_default_saved_becomes_the_number_and_uses_the_saved_entry():
    edit = edit_for_release(corpus("default-saved"), RELEASE, saved_default=1)
    config = parse(edit.text)
    assert config.default == 0 and config.fallback == 2 and edit.previous_default == 2
    assert "default saved -> 0" in edit.summary
    assert config.entries[0].kernel_args == ["ro", "root=/dev/sda3", "rhgb", "quiet", "nohz=off"]
    assert "pointed at entry 1" in edit.notes[0]


def test_existing_fallback_line_is_changed_in_place():
    edit = edit_for_release(SIMPLE.replace("timeout=5", "fallback 3\ntimeout=5"), RELEASE)
    assert edit.previous_fallback == "3"
    assert "fallback 3 -> 1" in edit.summary
    assert "default=0\nfallback 1\ntimeout=5\n" in edit.text


def test_entry_already_default_gets_no_fallback_and_says_so():
    text = SIMPLE.replace("754.el6.x86_64", "toa")
    edit = edit_for_release(text, RELEASE)
    assert edit.summary == ["kernel line of 'CentOS (2.6.32-toa)': + nohz=off"]
    assert parse(edit.text).fallback is None and "already the default" in edit.notes[0]


def test_chainloader_default_copies_the_first_linux_entry():
    text = (
        "default=1\ntitle A\n\tkernel /vmlinuz-1 ro\ntitle Windows\n\trootnoverify (hd0,0)\n\tchainloader +1"
    )
    edit = edit_for_release(text, RELEASE)
    config = parse(edit.text)
    assert [e.title for e in config.entries] == ["A (2.6.32-toa)", "A", "Windows"]
    assert config.default == 0 and config.fallback == 2
    assert "not a Linux entry" in edit.notes[0]


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no boot entries"),
        ("# only comments\n\n", "no boot entries"),
        ("default=0\ntimeout=5\ntitle lonely\n", "no boot entries"),
        ("default=3\n" + SIMPLE.replace("default=0\n", ""), r"default=3 points past the entries"),
        ("title W\n\trootnoverify (hd0,0)\n\tchainloader +1\n", "no entry to copy"),
        ("title X\n\tkernel /xen.gz\n\tmodule /vmlinuz-1\n", "no entry to copy"),
        ("title A\x00\n\tkernel /vmlinuz-1\n", "NUL bytes"),
    ],
)
def test_bad_grub_conf_is_a_user_error(text, message):
    with pytest.raises(UserError, match=message) as caught:
        edit_for_release(text, RELEASE)
    assert caught.value.fix


@pytest.mark.parametrize("release", ["", "a b", "../evil", "x/y", "-toa", "2.6.32\n"])
def test_bad_release_is_a_user_error(release):
    with pytest.raises(UserError, match="cannot name a kernel"):
        edit_for_release(SIMPLE, release)


@pytest.mark.parametrize("args", [("nohz=off", "a b"), ("",), ("x\\",), ("#x",), ('q="a"',), ("--",)])
def test_bad_kernel_argument_is_a_user_error(args):
    with pytest.raises(UserError, match="cannot go on a GRUB kernel line"):
        edit_for_release(SIMPLE, RELEASE, kernel_args=args)


def test_conflicting_kernel_arguments_are_a_user_error():
    with pytest.raises(UserError, match="nohz more than one value"):
        edit_for_release(SIMPLE, RELEASE, kernel_args=("nohz=off", "nohz=on"))


@pytest.mark.parametrize("name", ["../initrd.img", "a/b.img", ".hidden", "a b"])
def test_bad_initrd_name_is_a_user_error(name):
    with pytest.raises(UserError, match="not a plain file name"):
        edit_for_release(SIMPLE, RELEASE, initrd_name=name)


def test_kernel_line_grub_would_cut_is_refused():
    long_args = " ".join(f"opt{i}=value" for i in range(150))
    text = SIMPLE.replace("quiet", long_args)
    with pytest.raises(UserError, match="GRUB legacy reads 1500"):
        edit_for_release(text, RELEASE)
    assert len(kernel_line(text)) > grubconf.MAX_LINE


def test_inputs_are_checked_before_anything_else():
    with pytest.raises(UserError, match="cannot name a kernel"):
        edit_for_release("", "bad release")


# ---------------------------------------------------------------- rollback


def test_restore_default_points_back_and_restores_the_fallback():
    original = SIMPLE.replace("timeout=5", "fallback=0\ntimeout=5")
    edit = edit_for_release(original, RELEASE)
    back = edit_restore_default(edit.text, edit.previous_default, edit.previous_fallback)
    config = parse(back.text)
    assert config.default == edit.previous_default == 1 and config.fallbacks == [0]
    assert config.entries[1].title == "CentOS (2.6.32-754.el6.x86_64)"
    assert back.summary == ["default 0 -> 1", "fallback 1 -> 0"]
    again = edit_restore_default(back.text, 1, "0")
    assert again.text == back.text and again.summary == []


def test_restore_default_drops_an_added_fallback():
    edit = edit_for_release(SIMPLE, RELEASE)
    back = edit_restore_default(edit.text, edit.previous_default, edit.previous_fallback)
    assert back.summary == ["default 0 -> 1", "fallback 1 removed"]
    assert back.text == edit.text.replace("default=0\nfallback=1\n", "default=1\n")


@pytest.mark.parametrize(("index", "fallback"), [(5, None), (-1, None), (0, "x"), (0, 9)])
def test_restore_default_checks_its_inputs(index, fallback):
    edit = edit_for_release(SIMPLE, RELEASE)
    with pytest.raises(UserError):
        edit_restore_default(edit.text, index, fallback)


# ---------------------------------------------------------------- properties

RELEASES = ["2.6.32-754.el6.x86_64", "2.6.32-696.el6.x86_64", "2.6.32-573.el6.x86_64", RELEASE]
ARGS = [
    "ro",
    "root=/dev/sda2",
    "rhgb",
    "quiet",
    "console=ttyS0,115200",
    "nohz=on",
    "nohz=off",
    "crashkernel=auto",
]
SEPARATORS = st.sampled_from(["=", " ", " = ", "\t", "  "])
INDENTS = st.sampled_from(["", "\t", "    ", " \t"])
FILLER = st.sampled_from(["", "#", "# a comment", "   ", "#title old"])


@st.composite
def linux_entry(draw, release: str, prefix: str) -> list[str]:
    indent, sep = draw(INDENTS), draw(SEPARATORS)
    args = draw(st.lists(st.sampled_from(ARGS), unique_by=lambda a: a.split("=")[0], max_size=5))
    lines = [f"title{draw(SEPARATORS)}CentOS ({release})", f"{indent}root{sep}(hd0,0)"]
    lines.append(f"{indent}kernel{sep}{prefix}/vmlinuz-{release} {' '.join(args)}".rstrip())
    if draw(st.booleans()):
        lines.append(f"{indent}initrd{sep}{prefix}/initramfs-{release}.img")
    return lines


@st.composite
def other_entry(draw) -> list[str]:
    if draw(st.booleans()):
        return ["title Xen", "\troot (hd0,0)", "\tkernel /xen.gz dom0_mem=1024M", "\tmodule /vmlinuz-3.18 ro"]
    return ["title Windows", "\trootnoverify (hd0,1)", "\tchainloader +1"]


@st.composite
def grub_configs(draw) -> str:
    """Generated grub.conf files with at least one Linux entry."""
    prefix = draw(st.sampled_from(["", "/boot"]))
    entries = [draw(linux_entry(draw(st.sampled_from(RELEASES)), prefix))]
    for _ in range(draw(st.integers(0, 3))):
        entries.append(draw(linux_entry(draw(st.sampled_from(RELEASES)), prefix) | other_entry()))
    entries = draw(st.permutations(entries))
    head = draw(st.lists(FILLER, max_size=2))
    options = ["timeout=5", "hiddenmenu", "splashimage=(hd0,0)/grub/splash.xpm.gz", "password --md5 $1$ab$cd"]
    head += draw(st.lists(st.sampled_from(options), unique=True, max_size=3))
    default = draw(st.sampled_from(["", "saved", *map(str, range(len(entries)))]))
    if default:
        head.insert(draw(st.integers(0, len(head))), f"default{draw(SEPARATORS)}{default}")
    if draw(st.booleans()):
        head.append(f"fallback={draw(st.integers(0, len(entries) - 1))}")
    lines = head + [line for entry in entries for line in entry + draw(st.lists(FILLER, max_size=1))]
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines)
    return text + newline if draw(st.booleans()) else text


def editable(text: str) -> bool:
    """Generated configs whose default entry exists (others are bad input, tested above)."""
    config = parse(text)
    return bool(config.entries) and any(e.is_linux for e in config.entries)


PROPERTY = settings(
    max_examples=int(os.environ.get("TOA_PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(st.text(alphabet=st.sampled_from(list("ab #=\\\t\r\n\x0b\u2028")) | st.characters(), max_size=300))
def test_any_text_round_trips(text):
    assert parse(text).render() == text


@PROPERTY
@given(grub_configs())
def test_generated_configs_round_trip(text):
    assert parse(text).render() == text


@PROPERTY
@given(grub_configs())
def test_edit_twice_equals_edit_once(text):
    if not editable(text):
        return
    once = edit_for_release(text, RELEASE)
    twice = edit_for_release(once.text, RELEASE)
    assert twice.text == once.text and twice.summary == []


@PROPERTY
@given(grub_configs())
def test_edit_changes_only_what_it_must(text):
    if not editable(text):
        return
    before = parse(text)
    edit = edit_for_release(text, RELEASE)
    after = parse(edit.text)
    target = after.entries[edit.entry_index]
    assert target.release == RELEASE and target.is_linux
    assert after.default == edit.entry_index
    assert [a for a in target.kernel_args if a.split("=")[0] == "nohz"] == ["nohz=off"]
    shift = 1 if edit.added_entry else 0
    assert len(after.entries) == len(before.entries) + shift
    for old in before.entries:
        new = after.entries[old.index + shift]
        if new.index != edit.entry_index:
            assert after.lines[new.first : new.end] == before.lines[old.first : old.end]
    if edit.previous_default != edit.entry_index:
        assert after.fallback == edit.previous_default
        old_default = before.entries[edit.previous_default - shift]
        assert after.entries[edit.previous_default].title == old_default.title
    assert_only_expected_lines_differ(before, after, edit)


def assert_only_expected_lines_differ(before, after, edit) -> None:
    """Outside default=, fallback=, kernel lines and the added entry's own lines (with
    at most one blank line separating it from the next entry), the files are equal."""
    expected = skeleton(before.lines, (0, 0))
    if not edit.added_entry:
        assert skeleton(after.lines, (0, 0)) == expected
        return
    start, end = after.entries[0].span
    while end > start and parse(after.lines[end - 1]).commands[0].kind in ("blank", "comment"):
        end -= 1  # comments and blanks above the next title were there before
    assert expected in (skeleton(after.lines, (start, end)), skeleton(after.lines, (start, end + 1)))


def skeleton(lines, drop) -> list[str]:
    kept = []
    for index, line in enumerate(lines):
        keyword = keyword_of(line)
        if drop[0] <= index < drop[1] or keyword in ("default", "fallback"):
            continue
        kept.append("<kernel line>" if keyword == "kernel" else line)
    return kept


def keyword_of(line: str) -> str:
    return parse(line).commands[0].keyword


# ---------------------------------------------------------------- the real GRUB 0.97 agrees

TRICKY = (
    "timeout=5\r\n"
    "default = 2\r\n"
    "fallback 0\r\n"
    "# a comment that goes on \\\r\n"
    "title swallowed by the comment\r\n"
    "title ghost without commands\r\n"
    "# nothing\r\n"
    "title A\r\n"
    "\tkernel /missing-a\r\n"
    "title B\r\n"
    "\troot (hd0,0)\r\n"
    "\tkernel /missing-b \\\r\n"
    "\t\tquiet\r\n"
    "title C\r\n"
    "\tkernel /missing-c\r\n"
)


def titles_grub_tries(text: str, tmp_path: Path) -> list[str]:
    """Boot real GRUB legacy on ``text`` (no kernel files: each entry fails) and list
    the titles it tries, in order: the default, then its fallbacks."""
    import shutil

    from toa_kernel.lab.console import parse_console
    from toa_kernel.lab.grub import install_grub
    from toa_kernel.lab.image import lab_grub_conf, make_image
    from toa_kernel.lab.qemu import run_qemu
    from toa_kernel.lab.tools import STAGE_FILES, grub_stage_dir

    grub_dir = tmp_path / "stage" / "grub"
    grub_dir.mkdir(parents=True)
    (grub_dir / "grub.conf").write_bytes(lab_grub_conf(text).encode("utf-8", "surrogateescape"))
    (grub_dir / "menu.lst").symlink_to("grub.conf")
    for name in STAGE_FILES:
        shutil.copyfile(grub_stage_dir() / name, grub_dir / name)
    image = tmp_path / "disk.img"
    make_image(tmp_path / "stage", image)
    install_grub(image, 0, tmp_path)
    run = run_qemu(image, tmp_path / "console.log", timeout=90)
    report = parse_console(run.output)
    assert report.gave_up, run.output[-2000:]
    return report.tried


def lab_ready() -> bool:
    from toa_kernel.lab.tools import lab_available

    return lab_available()


@pytest.mark.slow
@pytest.mark.lab
@pytest.mark.skipif(not lab_ready(), reason="boot lab packages are not installed")
@pytest.mark.parametrize(
    "text",
    [
        TRICKY,
        TRICKY.replace("default = 2", "default=7").replace("fallback 0", "fallback=9 1"),
        TRICKY.replace("default = 2", "default saved").replace("fallback 0\r\n", ""),
    ],
    ids=["ghosts-crlf-continuations", "default-out-of-range", "default-saved-no-file"],
)
def test_real_grub_boots_the_entry_the_parser_names(text, tmp_path):
    config = parse(text)
    assert [e.title for e in config.entries] == ["A", "B", "C"]
    tried = titles_grub_tries(text, tmp_path)
    assert tried[0] == default_entry(config).title


@pytest.mark.slow
@pytest.mark.lab
@pytest.mark.skipif(not lab_ready(), reason="boot lab packages are not installed")
def test_real_grub_falls_back_to_the_old_default_after_the_edit(tmp_path):
    edit = edit_for_release(corpus("hiddenmenu-password"), RELEASE)
    config = parse(edit.text)
    tried = titles_grub_tries(edit.text, tmp_path)
    assert tried == [config.entries[0].title, config.entries[edit.previous_default].title]
    assert tried == [
        "Red Hat Enterprise Linux Server (2.6.32-toa)",
        "Red Hat Enterprise Linux Server (2.6.32-573.el6.x86_64)",
    ]
