"""Text edits of a kernel tree: toa.h, EXTRAVERSION, net/Makefile wiring, .config merge."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toa_kernel.core.errors import UserError
from toa_kernel.demo.sample import write_sample_tree
from toa_kernel.kernel import tree as kt

# --- toa.h -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, code",
    [
        ("#define TCPOPT_TOA  200", 200),
        ("#define TCPOPT_TOA 254", 254),
        ("#define\tTCPOPT_TOA\t252", 252),
        ("  #  define TCPOPT_TOA 0xfe /* kind */", 254),
    ],
)
def test_option_code_is_read_whatever_the_blanks(line, code):
    assert kt.read_option_code(f"/* x */\n{line}\n#define TCPOLEN_TOA 8\n") == code


def test_setting_the_option_code_keeps_blanks_and_other_defines():
    text = "#define TCPOPT_TOA  200\n#define TCPOPT_TOA_V6 253\n#define TCPOLEN_TOA 8\n"
    assert (
        kt.set_option_code(text, 254)
        == "#define TCPOPT_TOA  254\n#define TCPOPT_TOA_V6 253\n#define TCPOLEN_TOA 8\n"
    )


def test_option_code_keeps_a_trailing_comment():
    assert (
        kt.set_option_code("#define TCPOPT_TOA\t200\t/* ELB */\n", 252)
        == "#define TCPOPT_TOA\t252\t/* ELB */\n"
    )


def test_header_without_the_define_is_a_user_error():
    with pytest.raises(UserError, match="TCPOPT_TOA"):
        kt.set_option_code("#define TCPOLEN_TOA 8\n", 254)


def test_option_code_change_reports_old_and_new_and_writes(tmp_path):
    tree = write_sample_tree(tmp_path)
    change = kt.option_code_change(tree, 254)
    assert change is not None
    assert change.summary == "toa.h: TCPOPT_TOA 200 -> 254"
    assert "-#define TCPOPT_TOA  200" in change.diff and "+#define TCPOPT_TOA  254" in change.diff
    assert kt.read_option_code((tree / "net/toa/toa.h").read_text()) == 200  # planning writes nothing
    change.action()
    assert kt.read_option_code((tree / "net/toa/toa.h").read_text()) == 254
    assert kt.option_code_change(tree, 254) is None


def test_option_code_change_is_verified_after_writing(tmp_path, monkeypatch):
    tree = write_sample_tree(tmp_path)
    change = kt.option_code_change(tree, 254)
    assert change is not None
    # Something else rewrites the header between plan and check: the check sees it.
    monkeypatch.setattr(kt, "read_option_code", lambda text: 200)
    with pytest.raises(UserError, match="after the edit"):
        change.action()


def test_tree_already_at_254_needs_nothing(tmp_path):
    tree = write_sample_tree(tmp_path, "option-254")
    assert kt.option_code_change(tree, 254) is None
    assert kt.option_code_change(tree, 200).summary == "toa.h: TCPOPT_TOA 254 -> 200"


# --- EXTRAVERSION --------------------------------------------------------------------

MAKEFILE = "VERSION = 2\nPATCHLEVEL = 6\nSUBLEVEL = 32\nEXTRAVERSION =\nNAME = Seals\n"


def test_extraversion_is_set_on_the_empty_line():
    assert kt.set_extraversion(MAKEFILE, "-toa") == MAKEFILE.replace(
        "EXTRAVERSION =\n", "EXTRAVERSION = -toa\n"
    )


def test_extraversion_replaces_an_old_value_and_keeps_a_comment():
    text = "EXTRAVERSION = -old   # local\n"
    assert kt.set_extraversion(text, "-toa") == "EXTRAVERSION = -toa # local\n"
    assert kt.read_extraversion(text) == "-old"


def test_extraversion_already_set_is_unchanged():
    text = MAKEFILE.replace("EXTRAVERSION =", "EXTRAVERSION = -toa")
    assert kt.set_extraversion(text, "-toa") is text


def test_makefile_without_extraversion_is_a_user_error():
    with pytest.raises(UserError, match="EXTRAVERSION"):
        kt.set_extraversion("VERSION = 2\nall:\n\techo EXTRAVERSION\n", "-toa")


def test_extraversion_change_on_the_tree(tmp_path):
    tree = write_sample_tree(tmp_path)
    change = kt.extraversion_change(tree, "-toa")
    assert change is not None and change.summary == "Makefile: EXTRAVERSION (empty) -> -toa"
    change.action()
    assert "\nEXTRAVERSION = -toa\n" in (tree / "Makefile").read_text()
    assert kt.extraversion_change(tree, "-toa") is None


def test_kernel_makefile_is_recognised():
    assert kt.is_kernel_makefile(MAKEFILE)
    assert not kt.is_kernel_makefile("VERSION = 2\nall:\n")


# --- net/Makefile and net/Kconfig -----------------------------------------------------


@pytest.mark.parametrize(
    "line",
    ["obj-$(CONFIG_TOA)\t\t+= toa/", "obj-$(CONFIG_TOA) += toa/", "obj-y += ipv4/ toa/", "obj-m := toa/"],
)
def test_wiring_is_recognised(line):
    assert kt.has_toa_wiring(f"obj-y := socket.o\n{line}\n")


@pytest.mark.parametrize(
    "line", ["# obj-$(CONFIG_TOA) += toa/", "obj-$(CONFIG_X) += notoa/", "obj-y += toa.o"]
)
def test_non_wiring_lines_are_not_mistaken(line):
    assert not kt.has_toa_wiring(f"{line}\n")


def test_missing_wiring_is_added_once(tmp_path):
    tree = write_sample_tree(tmp_path, "no-toa-wiring")
    change = kt.wiring_change(tree)
    assert change is not None and "+obj-$(CONFIG_TOA)\t\t+= toa/" in change.diff
    change.action()
    text = (tree / "net/Makefile").read_text()
    assert text.endswith("obj-$(CONFIG_TOA)\t\t+= toa/\n") and text.count("toa/") == 1
    assert kt.wiring_change(tree) is None


def test_wiring_added_after_a_last_line_without_newline():
    assert kt.add_toa_wiring("obj-y += ipv4/") == "obj-y += ipv4/\nobj-$(CONFIG_TOA)\t\t+= toa/\n"


def test_wired_tree_needs_nothing(tmp_path):
    assert kt.wiring_change(write_sample_tree(tmp_path)) is None


def test_kconfig_source_line():
    assert kt.sources_toa_kconfig('menu "x"\nsource "net/toa/Kconfig"\n')
    assert not kt.sources_toa_kconfig('# source "net/toa/Kconfig"\n')


def test_missing_tree_file_names_it(tmp_path):
    with pytest.raises(UserError, match="net/Makefile is missing"):
        kt.wiring_change(tmp_path)


# --- .config -------------------------------------------------------------------------

CONFIG = "#\n# header\n#\nCONFIG_NET=y\nCONFIG_IPV6=m\n# CONFIG_FOO is not set\nCONFIG_BAR=y\n"


def test_fragment_parses_assignments_and_not_set_lines():
    text = '# comment\n\nCONFIG_IPV6=y\n# CONFIG_FOO is not set\nCONFIG_S="a b"\n'
    assert kt.parse_fragment(text) == {"CONFIG_IPV6": "y", "CONFIG_FOO": None, "CONFIG_S": '"a b"'}


def test_fragment_with_a_bad_line_names_file_and_line():
    with pytest.raises(UserError, match=r"toa.config:2: 'IPV6=y'"):
        kt.parse_fragment("CONFIG_A=y\nIPV6=y\n", "toa.config")


def test_merge_replaces_in_place():
    new, edits = kt.merge_config(CONFIG, {"CONFIG_IPV6": "y"})
    assert new == CONFIG.replace("CONFIG_IPV6=m", "CONFIG_IPV6=y")
    assert [e.describe() for e in edits] == ["CONFIG_IPV6 m -> y"]


def test_merge_replaces_a_not_set_line_in_place():
    new, edits = kt.merge_config(CONFIG, {"CONFIG_FOO": "m"})
    assert new == CONFIG.replace("# CONFIG_FOO is not set", "CONFIG_FOO=m")
    assert edits[0].describe() == "CONFIG_FOO not set -> m"


def test_merge_can_unset():
    new, _ = kt.merge_config(CONFIG, {"CONFIG_BAR": None})
    assert new == CONFIG.replace("CONFIG_BAR=y", "# CONFIG_BAR is not set")


def test_merge_appends_only_absent_options():
    new, edits = kt.merge_config(CONFIG, {"CONFIG_TOA": "m", "CONFIG_NET": "y"})
    assert new == CONFIG + "CONFIG_TOA=m\n"
    assert [e.describe() for e in edits] == ["CONFIG_TOA added (m)"]


def test_merge_removes_duplicates_instead_of_adding_one():
    text = CONFIG + "CONFIG_TOA=m\nCONFIG_X=y\nCONFIG_TOA=y\n"
    new, _ = kt.merge_config(text, {"CONFIG_TOA": "m"})
    assert new.count("CONFIG_TOA") == 1
    assert new == CONFIG + "CONFIG_TOA=m\nCONFIG_X=y\n"


def test_merge_without_differences_returns_the_text_itself():
    new, edits = kt.merge_config(CONFIG, {"CONFIG_IPV6": "m", "CONFIG_FOO": None})
    assert new is CONFIG and edits == []


def test_merge_adds_a_final_newline_before_appending():
    new, _ = kt.merge_config("CONFIG_A=y", {"CONFIG_B": "m"})
    assert new == "CONFIG_A=y\nCONFIG_B=m\n"


options = st.sampled_from(["CONFIG_A", "CONFIG_B", "CONFIG_TOA", "CONFIG_IPV6"])
values = st.one_of(st.none(), st.sampled_from(["y", "m", '"x"']))
config_lines = st.lists(st.tuples(options, values), max_size=8)


@given(config_lines, st.dictionaries(options, values, max_size=4))
def test_merge_properties(lines, fragment):
    text = "".join(kt.config_line(o, v) + "\n" for o, v in lines)
    once, _ = kt.merge_config(text, fragment)
    twice, edits = kt.merge_config(once, fragment)
    assert twice == once and edits == []  # idempotent
    for option, value in fragment.items():
        mentions = [line for line in once.splitlines() if kt.line_option(line) == option]
        assert mentions == [kt.config_line(option, value)]  # exactly once, with the fragment's value
    assert kt.lost_values(once, fragment) == []


def test_config_change_backs_up_before_writing(tmp_path):
    tree = write_sample_tree(tmp_path)
    called = []
    change, _ = kt.config_change(
        tree, {"CONFIG_IPV6": "y", "CONFIG_TOA": "m"}, before=lambda: called.append(1)
    )
    assert change is not None and change.summary.startswith(".config: CONFIG_IPV6 m -> y")
    assert called == []
    change.action()
    assert called == [1]
    assert kt.config_change(tree, {"CONFIG_IPV6": "y", "CONFIG_TOA": "m"})[0] is None


def test_lost_values_names_what_kconfig_dropped():
    text = "CONFIG_IPV6=y\n# CONFIG_TOA is not set\n"
    assert kt.lost_values(text, {"CONFIG_IPV6": "y", "CONFIG_TOA": "m", "CONFIG_GONE": None}) == [
        ("CONFIG_TOA", "m", None)
    ]


def test_sample_config_gets_the_toa_fragment(tmp_path: Path):
    tree = write_sample_tree(tmp_path)
    fragment = kt.parse_fragment((Path(__file__).parent.parent / "configs" / "toa.config").read_text())
    assert fragment == {"CONFIG_IPV6": "y", "CONFIG_TOA": "m"}
    change, _ = kt.config_change(tree, fragment)
    assert change is not None
    change.action()
    assert kt.lost_values((tree / ".config").read_text(), fragment) == []
