"""Text an operator types or imports at the command line (C3.2, R3.3, C1.7): a recipient's id,
display name, purposes or webhook URL with a control character, a display name with invisible
bidirectional formatting (``"Acme \\u202eecivreS"`` shows as "Acme Service"), and a customer
file with control characters are refused with a clear error; nothing is stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli.main import main

BIDI = "Acme \u202eecivreS"


def _listed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert main(["recipients", "show", "acme"]) in (0, 1)
    out = capsys.readouterr()
    return [json.loads(out.out)["display_name"]] if out.out.strip() else []


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--display-name", BIDI], "display name holds the invisible formatting character U+202E"),
        (["--display-name", "Acme\u2067Inc"], "U+2067"),
        (["--display-name", "Acme\x1b[31mInc"], "display name holds the control character U+001B"),
        (["--display-name", "Acme\nInc"], "U+000A"),
        (["--purpose", "billing\x07"], "purpose holds the control character U+0007"),
        (["--webhook", "https://hooks.example/\x7f"], "webhook URL holds the control character"),
    ],
)
def test_R3_3_register_refuses_control_and_formatting_characters(
    data_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    assert main(["init"]) == 0
    capsys.readouterr()
    assert main(["recipients", "register", "acme", "--kind", "third_party", *extra]) == 1
    assert says in capsys.readouterr().err
    assert _listed(capsys) == []


def test_R3_3_a_recipient_id_with_a_trailing_line_break_is_refused(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The id pattern's ``$`` matched before a final line feed."""
    assert main(["init"]) == 0
    capsys.readouterr()
    assert main(["recipients", "register", "acme\n", "--kind", "third_party"]) == 1
    assert "recipient id holds the control character U+000A" in capsys.readouterr().err
    assert main(["recipients", "register", "acme", "--kind", "third_party"]) == 0
    assert _listed(capsys) == ["acme"]
    assert main(["recipients", "webhook", "acme", "https://hooks.example/\x1b"]) == 1
    assert "webhook URL holds the control character U+001B" in capsys.readouterr().err


def test_C1_7_a_customer_file_with_control_characters_is_refused_whole(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "customer_ref,name,address,account_number\n"
        'CUST-1,Ann Smith,"1 High St\nTown",ACC-1\n'
        f"CUST-2,{BIDI},2 High St,ACC-2\n"
        "CUST-3,Bob\x1b[2J,3 High St,ACC-3\n",
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["customers", "import", str(customers)]) == 1
    err = capsys.readouterr().err
    assert "line 4: name holds the invisible formatting character U+202E" in err
    assert "line 5: name holds the control character U+001B" in err
    assert "line 3" not in err  # an address may span lines
    assert main(["customers", "show", "CUST-1"]) != 0
