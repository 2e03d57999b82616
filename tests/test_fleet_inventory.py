"""The inventory (INI like Ansible's) and the batch plan: what a rollout acts on, in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from toa_kernel.core.errors import UserError
from toa_kernel.core.settings import Settings
from toa_kernel.fleet.inventory import choose_hosts, load_inventory
from toa_kernel.fleet.schedule import batches, failure_budget

EXAMPLE = """\
# toa-kernel inventory
[all:vars]
user = root
key = ~/.ssh/id_rsa
legacy_ssh = true   # CentOS 6

[web]
web1 host=10.0.0.11
web2 host=10.0.0.12 port=2222 user=admin sudo=true
web3 host=10.0.0.13

[web:vars]
port = 2200

[db]
db1 ansible_host=10.0.1.5 ansible_user=ops root=/srv/db1
web1

[prod:children]
web
db
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.ini"
    path.write_text(text)
    return path


def settings(**values: object) -> Settings:
    return Settings.from_config(None, **values)


def test_hosts_get_their_own_values_then_their_groups_then_all(tmp_path):
    inventory = load_inventory(write(tmp_path, EXAMPLE), settings())
    assert list(inventory.hosts) == ["web1", "web2", "web3", "db1"]
    web1, web2, web3, db1 = (inventory.hosts[n] for n in ("web1", "web2", "web3", "db1"))
    assert (web1.address, web1.port, web1.user, web1.legacy_ssh, web1.sudo) == (
        "10.0.0.11",
        2200,
        "root",
        True,
        False,
    )
    assert (web2.port, web2.user, web2.sudo) == (2222, "admin", True)  # its own line wins
    assert web3.key == "~/.ssh/id_rsa" and web3.root == "/"
    assert (db1.address, db1.user, db1.port, db1.root) == (
        "10.0.1.5",
        "ops",
        22,
        "/srv/db1",
    )  # Ansible's names
    assert set(web1.groups) == {"web", "db", "prod"}
    assert inventory.groups["prod"] == ["web1", "web2", "web3", "db1"]


def test_hosts_flag_picks_hosts_and_groups_in_its_order_once_each(tmp_path):
    inventory = load_inventory(write(tmp_path, EXAMPLE), settings())
    assert [h.name for h in inventory.select(["db", "web2", "web"])] == ["db1", "web1", "web2", "web3"]
    assert [h.name for h in inventory.select(None)] == ["web1", "web2", "web3", "db1"]
    with pytest.raises(UserError, match="'nosuch' is neither a host nor a group"):
        inventory.select(["web", "nosuch"])


def test_without_an_inventory_hosts_are_servers_with_the_settings_values():
    chosen, source = choose_hosts(settings(ssh_key="/k", ssh_user="ops"), None, "web1,root@10.0.0.2:2222")
    assert source == "--hosts"
    assert [(h.name, h.user, h.address, h.port, h.key) for h in chosen] == [
        ("web1", "ops", "web1", 22, "/k"),
        ("10.0.0.2:2222", "root", "10.0.0.2", 2222, "/k"),
    ]
    with pytest.raises(UserError, match="no --inventory and no --hosts"):
        choose_hosts(settings(), None, None)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[web]\nweb1 host=a colour=blue\n", 2, "unknown key 'colour'"),
        ("[web]\nweb1 port=70000\n", 2, "port '70000' is not a number from 1 to 65535"),
        ("[web]\nweb1 port=ssh\n", 2, "port 'ssh' is not a number"),
        ("[web]\nweb1 sudo=maybe\n", 2, "sudo='maybe' is not true or false"),
        ("[web]\nweb1 root=srv\n", 2, "root 'srv' is not an absolute path"),
        ("[web]\nweb1 host=10.0.0.1\n[db]\nweb1 host=10.0.0.1\n", 4, "host web1 is defined twice (first at"),
        ("[web]\nweb1\nweb1\n", 3, "host web1 is listed twice in [web]"),
        ("[web]\nweb1 host=10.0.0.1\nweb2 host=10.0.0.1\n", 3, "same server as web1"),
        ("[web]\nweb1\n[prod:children]\nweb\ndb\n", 5, "names the group 'db', which the inventory does not"),
        ("[web:vars]\nport 22\n[web]\nweb1\n", 2, "'port 22' is not 'key = value'"),
        ("[web]\nweb1\n[web:stuff]\n", 3, "[web:stuff] is not a section kind"),
        ("[web]\nweb1 user=root;id\n", 2, "not a valid user name"),
        ("[web]\nweb1 host='unclosed\n", 2, "cannot read the line"),
    ],
    ids=[
        "unknown-key",
        "port-range",
        "port-word",
        "bad-flag",
        "relative-root",
        "defined-twice",
        "listed-twice",
        "two-names-one-server",
        "unknown-child-group",
        "vars-line",
        "section-kind",
        "bad-user",
        "quote",
    ],
)
def test_a_bad_inventory_is_refused_naming_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_inventory(path, settings())
    assert caught.value.message.startswith(f"{path}:{line}: ")
    assert message in caught.value.message
    assert caught.value.fix


def test_conflicting_group_values_at_the_same_distance_are_refused(tmp_path):
    text = "[a]\nweb1\n[b]\nweb1\n[a:vars]\nport=22\n[b:vars]\nport=2222\n"
    with pytest.raises(UserError, match=r"hosts.ini:2: host web1 gets different values of port"):
        load_inventory(write(tmp_path, text), settings())


def test_a_group_cannot_contain_itself(tmp_path):
    text = "[a]\nweb1\n[b:children]\na\nc\n[c:children]\nb\n"
    with pytest.raises(UserError, match="groups contain each other: b -> c -> b"):
        load_inventory(write(tmp_path, text), settings())


def test_same_address_with_another_root_is_another_node(tmp_path):
    text = "[lab]\nn1 host=127.0.0.1 root=/srv/n1\nn2 host=127.0.0.1 root=/srv/n2\n"
    inventory = load_inventory(write(tmp_path, text), settings())
    assert [h.root for h in inventory.hosts.values()] == ["/srv/n1", "/srv/n2"]


def test_an_empty_or_missing_inventory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="lists no host"):
        load_inventory(write(tmp_path, "# nothing yet\n[web]\n"), settings())
    with pytest.raises(UserError, match="does not exist"):
        load_inventory(tmp_path / "missing.ini", settings())


# --- batches and the failure budget ----------------------------------------------------------


def test_a_canary_then_waves_in_order():
    names = [f"n{i}" for i in range(1, 8)]
    plan = batches(names, canary=1, wave=3)
    assert [(b.label, b.hosts) for b in plan] == [
        ("canary", ("n1",)),
        ("wave 1", ("n2", "n3", "n4")),
        ("wave 2", ("n5", "n6", "n7")),
    ]
    assert [b.hosts for b in batches(names[:4], canary=0, wave=3)] == [("n1", "n2", "n3"), ("n4",)]
    with pytest.raises(UserError, match="at least one host"):
        batches(names, canary=1, wave=0)


@pytest.mark.parametrize(
    ("text", "total", "allowed"),
    [("0", 10, 0), ("2", 10, 2), ("10%", 10, 1), ("25%", 10, 2), ("50%", 5, 2), ("100%", 3, 3)],
)
def test_the_failure_budget_is_hosts_or_a_percentage_rounded_down(text, total, allowed):
    budget = failure_budget(text, total)
    assert budget.allowed == allowed
    assert not budget.exceeded(allowed) and budget.exceeded(allowed + 1)


@pytest.mark.parametrize("text", ["-1", "two", "150%", "1.5", "%"])
def test_a_bad_failure_budget_is_refused(text):
    with pytest.raises(UserError, match="--max-failures"):
        failure_budget(text, 10)
