"""The command line: `sotto check-config` names the file and the key of a configuration error
and exits non-zero; `sotto keygen --out DIR` writes key files with mode 0600."""

import base64
import stat

import pytest

from sotto_e2e import run_sotto

PROFILE = '[[profile]]\nname = "p"\nanonymizer = "none"\n'
KEY31 = base64.b64encode(bytes(31)).decode()
KEY32 = base64.b64encode(bytes(range(32))).decode()
PEER = ('[[peer]]\nname = "home"\naddress = "127.0.0.1:7000"\npublic_key = "{pub}"\npsk = "{psk}"\n{extra}')
SERVICE = ('[[service]]\nname = "svc"\nlisten = "127.0.0.1:7000"\nprivate_key = "{key}"\npsk = "{psk}"\n'
           'expose = {expose}\n{extra}')

BAD_CONFIGS = {
    # name: (file text, words the message must contain besides the file name)
    "unknown key": ('[socks]\nlisten = "127.0.0.1:1080"\nlisen = 3\n' + PROFILE, ["lisen"]),
    "public key of 31 bytes": (PROFILE + PEER.format(pub=KEY31, psk=KEY32, extra=""), ["public_key", "32"]),
    "psk not base64": (PROFILE + PEER.format(pub=KEY32, psk="not base64!", extra=""), ["psk"]),
    "socks on a public address": ('[socks]\nlisten = "0.0.0.0:1080"\n' + PROFILE, ["listen"]),
    "bad expose": (PROFILE + SERVICE.format(key=KEY32, psk=KEY32, expose='["udp 5684"]', extra=""), ["expose"]),
    "expose with an unknown protocol": (
        PROFILE + SERVICE.format(key=KEY32, psk=KEY32, expose='["sctp 1 127.0.0.1:1"]', extra=""), ["expose"]),
    "cell size too small": (PROFILE + PEER.format(pub=KEY32, psk=KEY32, extra="cell_size = 100\n"), ["cell_size"]),
    "forward to an unknown peer": (
        PROFILE + '[[forward]]\nlisten = "udp://127.0.0.1:5684"\nto = "nowhere:5684"\n', ["to"]),
    "unknown anonymizer": ('[[profile]]\nname = "p"\nanonymizer = "vpn"\n', ["anonymizer"]),
    "missing psk file": (PROFILE + '[[peer]]\nname = "home"\naddress = "127.0.0.1:7000"\n'
                         f'public_key = "{KEY32}"\npsk_file = "missing.psk"\n', ["psk_file"]),
    "not toml at all": ("this is = = not toml [\n", []),
    "port out of range": ('[socks]\nlisten = "127.0.0.1:70000"\n' + PROFILE, ["listen"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_config_names_the_file_and_the_key_and_fails(sotto_bin, tmp_path, case):
    text, words = BAD_CONFIGS[case]
    config = tmp_path / "gateway-under-test.toml"
    config.write_text(text)

    result = run_sotto(sotto_bin, "check-config", "--config", str(config), cwd=tmp_path)

    message = result.stdout + result.stderr
    assert result.returncode != 0, f"exit 0 for a bad file: {message}"
    assert "gateway-under-test.toml" in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "Fatal error" not in message and "Backtrace" not in message, message


def test_run_refuses_a_bad_config_the_same_way(sotto_bin, tmp_path):
    config = tmp_path / "gateway-under-test.toml"
    config.write_text(BAD_CONFIGS["public key of 31 bytes"][0])
    result = run_sotto(sotto_bin, "run", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert "gateway-under-test.toml" in result.stderr and "public_key" in result.stderr, result.stderr


def test_check_config_on_a_missing_file_names_it(sotto_bin, tmp_path):
    result = run_sotto(sotto_bin, "check-config", "--config", str(tmp_path / "absent.toml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "absent.toml" in result.stdout + result.stderr


def test_check_config_accepts_a_good_file(sotto_bin, tmp_path):
    config = tmp_path / "good.toml"
    config.write_text(f'state_dir = "state"\n[socks]\nlisten = "127.0.0.1:1080"\n{PROFILE}'
                      + PEER.format(pub=KEY32, psk=KEY32, extra="")
                      + '[[forward]]\nlisten = "udp://127.0.0.1:5684"\nto = "home:5684"\n')
    result = run_sotto(sotto_bin, "check-config", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "good.toml" in result.stdout and "ok" in result.stdout


def test_keygen_writes_0600_key_files_that_a_config_accepts(sotto_bin, tmp_path):
    out = tmp_path / "keys"

    result = run_sotto(sotto_bin, "keygen", "--out", str(out), "--name", "home", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for name in ("home.key", "home.psk"):
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    for name in ("home.key", "home.psk", "home.pub"):
        assert len(base64.b64decode((out / name).read_text().strip(), validate=True)) == 32, name
    assert (out / "home.key").read_text() != (out / "home.pub").read_text()
    assert "private_key" not in result.stdout and (out / "home.key").read_text().strip() not in result.stdout + result.stderr

    exit_cfg = tmp_path / "exit.toml"
    exit_cfg.write_text(PROFILE + '[[service]]\nname = "home"\nlisten = "127.0.0.1:7000"\n'
                        'private_key_file = "keys/home.key"\npsk_file = "keys/home.psk"\n'
                        'expose = ["udp 5684 127.0.0.1:5684"]\n')
    entry_cfg = tmp_path / "entry.toml"
    entry_cfg.write_text(PROFILE + '[[peer]]\nname = "home"\naddress = "127.0.0.1:7000"\n'
                         'public_key_file = "keys/home.pub"\npsk_file = "keys/home.psk"\n'
                         '[[forward]]\nlisten = "udp://127.0.0.1:5684"\nto = "home:5684"\n')
    for config in (exit_cfg, entry_cfg):
        checked = run_sotto(sotto_bin, "check-config", "--config", str(config), cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert "warning" not in checked.stderr, checked.stderr


def test_keygen_never_overwrites_a_key(sotto_bin, tmp_path):
    out = tmp_path / "keys"
    assert run_sotto(sotto_bin, "keygen", "--out", str(out), "--name", "home", cwd=tmp_path).returncode == 0
    before = (out / "home.key").read_bytes()

    again = run_sotto(sotto_bin, "keygen", "--out", str(out), "--name", "home", cwd=tmp_path)

    assert again.returncode != 0
    assert (out / "home.key").read_bytes() == before


def test_a_key_file_readable_by_others_gets_a_warning(sotto_bin, tmp_path):
    out = tmp_path / "keys"
    assert run_sotto(sotto_bin, "keygen", "--out", str(out), "--name", "home", cwd=tmp_path).returncode == 0
    (out / "home.psk").chmod(0o644)
    config = tmp_path / "exit.toml"
    config.write_text(PROFILE + '[[service]]\nname = "home"\nlisten = "127.0.0.1:7000"\n'
                      'private_key_file = "keys/home.key"\npsk_file = "keys/home.psk"\n'
                      'expose = ["udp 5684 127.0.0.1:5684"]\n')

    result = run_sotto(sotto_bin, "check-config", "--config", str(config), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "home.psk" in result.stderr, result.stderr


def test_keygen_without_out_prints_toml_lines(sotto_bin, tmp_path):
    result = run_sotto(sotto_bin, "keygen", cwd=tmp_path)
    assert result.returncode == 0
    keys = {line.split(" = ")[0]: line.split(" = ")[1].strip('"') for line in result.stdout.splitlines()
            if " = " in line and not line.startswith("#")}
    assert set(keys) == {"private_key", "public_key", "psk"}, result.stdout
    assert all(len(base64.b64decode(v)) == 32 for v in keys.values())


def test_status_without_a_running_gateway_fails_clearly(sotto_bin, tmp_path):
    config = tmp_path / "entry.toml"
    config.write_text(f'state_dir = "state"\n[socks]\nlisten = "127.0.0.1:1080"\n{PROFILE}')
    result = run_sotto(sotto_bin, "status", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert "no gateway" in result.stderr or "status.sock" in result.stderr, result.stderr
