"""R1.1: the concentrator cannot read what it carries. Its package imports no key material and no
decryption code, directly (the import statements of its modules) or transitively (the modules
loaded when it is imported), and it holds nothing of the DLMS code but the batch framing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import connectors.concentrator

PACKAGE = Path(connectors.concentrator.__file__).parent
ALLOWED_THIRD_PARTY = {"httpx", "pydantic"}
ALLOWED_OURS = {"connectors.dlms.batch", "broker.kit.supervise"}  # supervise: threads only
FORBIDDEN = (
    "cryptography",
    "connectors.dlms.frames",
    "connectors.dlms.keytransfer",
    "connectors.dlms.profile",
    "broker.keys",
    "broker.kit.envelope",
    "dlms_cosem",
    "gurux_dlms",
    "OpenSSL",
    "nacl",
    "Crypto",
)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _allowed(module: str) -> bool:
    top = module.split(".")[0]
    return (
        top in sys.stdlib_module_names
        or top == "__future__"
        or top in ALLOWED_THIRD_PARTY
        or module in ALLOWED_OURS
        or module.startswith("connectors.concentrator")
    )


def test_R1_1_concentrator_modules_import_only_stdlib_http_and_the_batch_framing() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 5
    imported = set().union(*(_imports(path) for path in modules))
    assert sorted(m for m in imported if not _allowed(m)) == []


def test_R1_1_importing_the_concentrator_loads_no_key_or_decryption_code() -> None:
    probe = "import sys, connectors.concentrator; print('\\n'.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert "connectors.concentrator.concentrator" in loaded
    assert [m for m in loaded if m.startswith(FORBIDDEN)] == []
