"""An OPA bundle on disk: ``.manifest``, Rego modules (policies and ``*_test.rego``), data files.

The layout follows OPA's bundle format (https://www.openpolicyagent.org/docs/management-bundles):
a ``data.json`` at ``a/b/data.json`` is the document ``data.a.b``; ``.manifest`` names the roots
the bundle owns and ``rego_version`` (the broker accepts 1 only). ``.signatures.json`` holds
the signature written at activation (``broker.policy.signing``).

One addition of ours: the reason codes declared in the modules' ``# METADATA`` blocks
(``custom: codes: {code: message}``) become the document ``data.broker.reason_codes``, so a
decision's reasons carry the privacy officer's own wording and the code list lives in one place.
regorus does not implement ``rego.metadata.*``, which would otherwise be the way to read them.

Every file of a bundle is text: UTF-8 without control characters other than tab, line feed and
carriage return, and without bidirectional overrides. A NUL or an escape sequence is invisible to
the reviewer who reads and signs the policy, and tools disagree on what follows it, so
``load_bundle`` refuses such a file, naming it and the line, before anything checks, tests, signs
or activates it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from broker.policy.errors import BundleError

MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
REASON_CODES_PATH = ("broker", "reason_codes")
MAX_FILE_BYTES = 1 << 20
_METADATA = re.compile(r"^# METADATA\s*$")
_PACKAGE = re.compile(r"^package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""C0 but tab, LF and CR; DEL and C1; the bidirectional overrides that reorder what a reviewer
sees ("Trojan Source")."""


@dataclass(frozen=True)
class MetadataBlock:
    """A ``# METADATA`` comment block (YAML) and the line it starts on (1-based)."""

    line: int
    fields: Mapping[str, Any]
    scope_line: int
    """The first line after the block: the package or rule it annotates."""


@dataclass(frozen=True)
class Module:
    path: str
    """Path inside the bundle, ``/``-separated (``broker/release/policy.rego``)."""
    text: str
    package: str | None
    metadata: tuple[MetadataBlock, ...]

    @property
    def is_test(self) -> bool:
        return self.path.endswith("_test.rego")

    def reason_codes(self) -> dict[str, str]:
        codes: dict[str, str] = {}
        for block in self.metadata:
            custom = block.fields.get("custom")
            if isinstance(custom, Mapping) and isinstance(custom.get("codes"), Mapping):
                codes.update({str(k): str(v) for k, v in custom["codes"].items()})
        return codes


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Mapping[str, Any]
    modules: tuple[Module, ...]
    data: Mapping[str, Any]
    """The data documents as one tree (``data`` without rules), reason codes included."""
    files: Mapping[str, bytes] = field(repr=False)
    """Every file that is signed: path inside the bundle -> bytes."""

    @property
    def revision(self) -> str:
        return str(self.manifest.get("revision", ""))

    def policies(self) -> dict[str, str]:
        return {m.path: m.text for m in self.modules if not m.is_test}

    def all_modules(self) -> dict[str, str]:
        return {m.path: m.text for m in self.modules}

    def decision_path(self) -> str:
        meta = self.manifest.get("metadata")
        path = meta.get("decision") if isinstance(meta, Mapping) else None
        return str(path) if path else "broker/release/decision"

    def file_hashes(self) -> dict[str, str]:
        """SHA-256 of every signed file (hex), as in OPA's ``.signatures.json`` ``files`` list."""
        return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(self.files.items())}


def parse_metadata(text: str) -> tuple[MetadataBlock, ...]:
    """The ``# METADATA`` blocks of a module: consecutive ``#`` lines after the marker, YAML."""
    lines = text.splitlines()
    blocks: list[MetadataBlock] = []
    i = 0
    while i < len(lines):
        if not _METADATA.match(lines[i]):
            i += 1
            continue
        start = i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].startswith("#"):
            body.append(lines[i][2:] if lines[i].startswith("# ") else lines[i][1:])
            i += 1
        try:
            fields = yaml.safe_load("\n".join(body)) or {}
        except yaml.YAMLError as exc:
            raise BundleError(f"METADATA block at line {start} is not valid YAML: {exc}") from exc
        if not isinstance(fields, Mapping):
            raise BundleError(f"METADATA block at line {start} is not a YAML mapping")
        blocks.append(MetadataBlock(start, fields, i + 1))
    return tuple(blocks)


def _walk(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts[:-1]):
            continue
        if path.is_symlink():
            raise BundleError(f"{rel}: symbolic links are not allowed in a bundle")
        if path.is_file():
            yield path


def _set_path(tree: dict[str, Any], parts: tuple[str, ...], value: Any, where: str) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise BundleError(f"{where}: data path {'/'.join(parts)} collides with another file")
        node = child
    if not parts:
        if not isinstance(value, dict):
            raise BundleError(f"{where}: a root data.json must hold an object")
        for key, item in value.items():
            _set_path(tree, (key,), item, where)
        return
    leaf = parts[-1]
    if leaf in node and isinstance(node[leaf], dict) and isinstance(value, dict):
        overlap = set(node[leaf]) & set(value)
        if overlap:
            raise BundleError(f"{where}: data keys {sorted(overlap)} are defined twice")
        node[leaf].update(value)
    elif leaf in node:
        raise BundleError(f"{where}: data path {'/'.join(parts)} is defined twice")
    else:
        node[leaf] = value


def load_bundle(root: Path) -> Bundle:
    """Read a bundle directory. Raises ``BundleError`` naming the file for anything unreadable."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"policy bundle {root} is not a directory")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{root}: no {MANIFEST} file (an OPA bundle needs one)")
    files: dict[str, bytes] = {}
    modules: list[Module] = []
    data: dict[str, Any] = {}
    for path in _walk(root):
        rel = path.relative_to(root).as_posix()
        if rel == SIGNATURES:
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            raise BundleError(f"{rel}: larger than {MAX_FILE_BYTES} bytes")
        raw = path.read_bytes()
        if rel.endswith(".rego"):
            files[rel] = raw
            text = _decode(raw, rel)
            match = _PACKAGE.search(text)
            modules.append(
                Module(rel, text, match.group(1) if match else None, _metadata(text, rel))
            )
        elif path.name == "data.json":
            files[rel] = raw
            try:
                value = json.loads(_decode(raw, rel))
            except json.JSONDecodeError as exc:
                raise BundleError(f"{rel}: not valid JSON: {exc}") from exc
            _set_path(data, tuple(Path(rel).parent.parts), value, rel)
        elif rel == MANIFEST:
            files[rel] = raw
    try:
        manifest = json.loads(_decode(files[MANIFEST], MANIFEST))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{MANIFEST}: not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST}: must be a JSON object")
    if not modules:
        raise BundleError(f"{root}: no .rego modules")
    codes: dict[str, str] = {}
    for module in modules:
        if not module.is_test:
            codes.update(module.reason_codes())
    _set_path(data, REASON_CODES_PATH, codes, "METADATA codes")
    return Bundle(root, manifest, tuple(modules), data, files)


def _decode(raw: bytes, rel: str) -> str:
    """The file's text; refused unless UTF-8 without control characters (but tab, LF, CR)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise BundleError(f"{rel}: line {line}: not UTF-8 text (byte {exc.start})") from exc
    bad = _CONTROL.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise BundleError(
            f"{rel}: line {line}: control character U+{ord(bad.group()):04X} "
            "(a bundle file must be plain text)"
        )
    return text


def _metadata(text: str, rel: str) -> tuple[MetadataBlock, ...]:
    try:
        return parse_metadata(text)
    except BundleError as exc:
        raise BundleError(f"{rel}: {exc.message}") from exc


def shipped_bundle_dir() -> Path:
    """The bundle that ships with the broker (``policies/`` at the top of the repository)."""
    return Path(__file__).resolve().parents[2] / "policies"
