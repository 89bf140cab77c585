"""tools.uv_args: pip's configuration as uv flags (uv reads neither pip.conf nor PIP_* variables)."""
from tools.uv_args import uv_args


def test_pip_config_lines_become_uv_flags_once_each():
    lines = [":env:.cert='/etc/ssl/certs/ca.crt'", ":env:.find-links='/opt/wheels'",
             "global.constraint='/etc/xdg/pip/constraints.txt'",
             "global.extra-index-url='file:///opt/pypi/simple file:///opt/more/simple'",
             "global.find-links='/opt/wheels'", "global.timeout='60'", "no equals sign"]
    assert uv_args(lines) == ["--native-tls", "--find-links", "/opt/wheels", "--constraint",
                              "/etc/xdg/pip/constraints.txt", "--extra-index-url", "file:///opt/pypi/simple",
                              "--extra-index-url", "file:///opt/more/simple", "--index-strategy",
                              "unsafe-best-match"]


def test_no_pip_configuration_gives_no_flags():
    assert uv_args([]) == []
    assert uv_args(["global.index-url='https://mirror/simple'"]) == ["--index-url", "https://mirror/simple"]
