"""The shared customize-action schema (lvh.actions, re-exported by lvh.api)."""

from __future__ import annotations

import marshmallow
import pytest

from lvh.api import ACTION_TYPES, ConfigError, CustomizeOptions, from_upstream, local_paths, to_upstream


def load(*actions):
    return CustomizeOptions().load({"actions": list(actions)})["actions"]


def test_every_upstream_type_plus_install():
    assert set(ACTION_TYPES) == {"run-command", "copy-in", "set-hostname", "mkdir", "upload", "chmod",
                                 "append-line", "link", "install-kernel", "tar-in", "install"}


def test_loads_to_flat_dicts_with_comment():
    got = load({"type": "run-command", "cmd": "passwd -d root", "comment": "no password"},
               {"type": "copy-in", "local_path": "x", "remote_dir": "/opt"},
               {"type": "Install", "packages": "less, vim"})
    assert got == [
        {"type": "run-command", "comment": "no password", "cmd": "passwd -d root"},
        {"type": "copy-in", "comment": "", "local_path": "x", "remote_dir": "/opt"},
        {"type": "install", "comment": "", "packages": ["less", "vim"]},
    ]


@pytest.mark.parametrize("action, field, text", [
    ({"type": "copy-in", "remote_dir": "/"}, "local_path", "missing"),
    ({"type": "run-command"}, "cmd", "missing"),
    ({"type": "mkdir", "dir": "/x", "cmd": "y"}, "cmd", "not a field of mkdir"),
    ({"type": "chmod", "file": "/x", "permissions": "rwx"}, "permissions", "octal"),
    ({"type": "chmod", "file": "/x", "permissions": 493}, "permissions", "quoted string"),
    ({"type": "reboot"}, "type", "Must be one of"),
])
def test_bad_actions_name_the_field(action, field, text):
    with pytest.raises(marshmallow.ValidationError) as e:
        load(action)
    msgs = e.value.messages["actions"][0]
    assert field in msgs and text in " ".join(msgs[field])


def test_upstream_go_names_any_case():
    a = from_upstream({"comment": "c", "type": "copy-in", "op": {"LocalPath": "f", "remotedir": "/"}})
    assert a == {"comment": "c", "type": "copy-in", "local_path": "f", "remote_dir": "/"}
    b = from_upstream({"Type": "install-kernel", "Op": {"KERNELINSTALLDIR": "k"}})
    assert b == {"type": "install-kernel", "kernel_install_dir": "k"}
    with pytest.raises(ValueError, match="unknown op field 'Bogus'"):
        from_upstream({"type": "mkdir", "op": {"Bogus": 1}})


def test_upstream_round_trip():
    acts = load({"type": "link", "target": "/a", "link": "/b", "comment": "x"},
                {"type": "tar-in", "tar_file": "t.tar", "remote_dir": "/"})
    up = [to_upstream(a) for a in acts]
    assert up[0] == {"comment": "x", "type": "link", "op": {"Target": "/a", "Link": "/b"}}
    assert up[1]["op"] == {"TarFile": "t.tar", "RemoteDir": "/"}
    assert load(*[from_upstream(u) for u in up]) == acts


def test_local_paths():
    acts = load({"type": "upload", "file": "f", "dest": "/d"}, {"type": "mkdir", "dir": "/x"},
                {"type": "install-kernel", "kernel_install_dir": "k"})
    assert [local_paths(a) for a in acts] == [["f"], [], ["k"]]


def test_config_error_has_file_line_and_path(tmp_path):
    from lvh.config import load_config

    conf = tmp_path / "conf.yaml"
    conf.write_text(
        "images:\n"
        "  - name: base\n"
        "    rootfs: {provider: mmdebstrap, suite: bookworm}\n"
        "    disk: {formatter: mkfs}\n"
        "    customize:\n"
        "      - customizer: chroot\n"
        "        actions:\n"
        "          - {type: set-hostname, hostname: x}\n"
        "          - {type: copy-in, remote_dir: /}\n")
    with pytest.raises(ConfigError) as e:
        load_config(conf)
    msg = str(e.value)
    assert "conf.yaml:9" in msg and "actions[1].local_path" in msg and "missing" in msg
