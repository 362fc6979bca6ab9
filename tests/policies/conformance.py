"""Runs OPA's Rego conformance cases against the embedded engine, configured as the broker has it.

X.1332 R3.4 (PII only with consent) and R3.5 (none for services that do not use it) are enforced
by Rego policies, so the enforcement is only as reliable as the engine evaluating them. OPA's own
conformance cases (``../shared/conformance/opa``) show where regorus agrees with OPA; where it does
not, the broker must still fail closed (``test_opa_conformance.py``).

Each case runs as OPA's case runner runs it: the modules loaded (through ``EmbeddedEngine.build``,
the broker's own loader: Rego v1 only; regorus raises on every builtin error, so ``strict_error``
needs no setting), ``data`` and ``input`` set, the ``query`` evaluated, and the bindings of every
result compared with ``want_result``:

* a result with a ``false`` expression is no result (OPA drops it; regorus keeps it);
* values come back as JSON text (``eval_query_as_json``, read with ``json.loads``), as the broker's
  ``EmbeddedEngine.evaluate_json`` gets them from ``eval_rule_as_json``. An undefined query is
  ``{}`` there (no ``result``: no result, as in OPA), and a row without variables has no
  ``bindings`` (OPA's ``{}``). regorus writes as OPA does a set as an array in term order and an
  object key that is not a string as its compact JSON text (keys inside sorted, non-string keys
  inside as strings), so ``canonical`` only takes the wanted side's non-string YAML keys to that
  text. Two differences are left, and a case hitting one fails (none of the copied cases does):
  regorus orders a set before an object (OPA after it), and written as arrays there is no telling
  them apart to re-sort; and in such a key it does not escape ``<``, ``>`` and ``&`` as OPA's Go
  encoder does. Numbers
  compare by value (``1`` equals ``1.0``, as in OPA) and ``true`` is never the number 1;
* ``sort_bindings`` sorts each binding that is an array (OPA sorts the result's; sorting the wanted
  one too only forgives a case file written out of order);
* a case wanting an error (``want_error`` / ``want_error_code``, all ``eval_*`` errors) passes when
  evaluation raises. Only *that* it raises is compared, not the wording or the code: regorus words
  its errors its own way and has no OPA codes, and to the broker any error is a deny. A refusal at
  load, a builtin regorus lacks or a crash is not the error OPA means, so those do not pass.

A note that repeats within a file is told apart by ``#<n>`` (its occurrence, from 1). ``skip``
(no copied case has one) is not honoured: every case either passes or is an expected failure.
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import regorus
import yaml

from broker.rego.engine import EmbeddedEngine, PolicyLoadError, clean_engine_message

OPA_CASES = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "opa"
"""``../shared/conformance/opa`` beside the clone (the ``shared_dir`` fixture's folder)."""


class Status(enum.Enum):
    """What the engine did with a case; only ``PASSED`` agrees with OPA."""

    PASSED = "agrees with OPA"
    WRONG_RESULT = "answered other than OPA"
    NO_ERROR = "answered where OPA raises an error"
    REFUSED_AT_LOAD = "refused the modules at load"
    RAISED = "raised at evaluation"
    UNKNOWN_BUILTIN = "raised at evaluation: no such builtin"
    PANICKED = "the engine panicked"


@dataclass(frozen=True)
class Case:
    """One conformance case, as its YAML file states it."""

    file: str
    note: str
    query: str
    modules: tuple[str, ...]
    data: Mapping[str, Any]
    input_json: str | None
    want_result: list[dict[str, Any]]
    wants_error: bool
    sort_bindings: bool

    @property
    def id(self) -> str:
        return f"{self.file}::{self.note}"


@dataclass(frozen=True)
class Outcome:
    status: Status
    detail: str

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED


def load_cases(root: Path) -> list[Case]:
    """Every case of every ``*.yaml`` below ``root``, in file order."""
    cases: list[Case] = []
    for path in sorted(root.rglob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        file = path.relative_to(root).as_posix()
        cases.extend(_case(file, note, raw) for note, raw in _unique_notes(document["cases"]))
    return cases


def _unique_notes(raw_cases: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    counts = Counter(str(raw["note"]) for raw in raw_cases)
    seen: Counter[str] = Counter()
    for raw in raw_cases:
        note = str(raw["note"])
        seen[note] += 1
        yield (f"{note}#{seen[note]}" if counts[note] > 1 else note), raw


def _case(file: str, note: str, raw: dict[str, Any]) -> Case:
    return Case(
        file=file,
        note=note,
        query=raw["query"],
        modules=tuple(raw.get("modules") or ()),
        data=raw.get("data") or {},
        input_json=_input_json(raw),
        want_result=raw.get("want_result") or [],
        wants_error="want_error" in raw or "want_error_code" in raw,
        sort_bindings=bool(raw.get("sort_bindings")),
    )


def _input_json(raw: dict[str, Any]) -> str | None:
    if "input" in raw:
        return json.dumps(raw["input"])
    if "input_term" in raw:
        # A Rego term; the only one among the copied cases is JSON. One that is not fails loudly
        # here (json.JSONDecodeError) rather than running with no input.
        return json.dumps(json.loads(raw["input_term"]))
    return None


def run_case(case: Case) -> Outcome:
    """Evaluate the case on a fresh embedded engine and compare with what OPA answers."""
    modules = {f"case_{i}.rego": text for i, text in enumerate(case.modules)}
    try:
        engine = EmbeddedEngine.build(modules, case.data)
    except PolicyLoadError as exc:
        return Outcome(Status.REFUSED_AT_LOAD, str(exc))
    try:
        answer = _evaluate(engine, case)
    except RuntimeError as exc:
        message = clean_engine_message(str(exc))
        if "could not find function" in message:
            return Outcome(Status.UNKNOWN_BUILTIN, message)
        if case.wants_error:
            return Outcome(Status.PASSED, f"raised, as OPA does: {message}")
        return Outcome(Status.RAISED, message)
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":  # pyo3's, a BaseException
            raise
        return Outcome(Status.PANICKED, str(exc))
    return _compare(case, answer)


def _evaluate(engine: regorus.Engine, case: Case) -> dict[str, Any]:
    if case.input_json is not None:
        engine.set_input_json(case.input_json)
    answer: dict[str, Any] = json.loads(engine.eval_query_as_json(case.query))
    return answer


def _compare(case: Case, answer: Mapping[str, Any]) -> Outcome:
    rows = [
        row.get("bindings", {})
        for row in answer.get("result", [])
        if all(expr["value"] is not False for expr in row["expressions"])
    ]
    if case.wants_error:
        return Outcome(Status.NO_ERROR, f"wanted an error, got {rows!r}")
    got = [_bindings(row, case.sort_bindings) for row in rows]
    want = [_bindings(row, case.sort_bindings) for row in case.want_result]
    if got == want:
        return Outcome(Status.PASSED, f"results as OPA's: {rows!r}")
    return Outcome(Status.WRONG_RESULT, f"wanted {case.want_result!r}, got {rows!r}")


def _bindings(row: Mapping[str, Any], sort: bool) -> dict[str, Any]:
    values = {name: canonical(value) for name, value in row.items()}
    return {name: _sorted(value) for name, value in values.items()} if sort else values


def _sorted(term: Any) -> Any:
    if term[0] == "array":
        return ("array", tuple(sorted(term[1], key=_order)))
    return term


def canonical(value: Any) -> Any:
    """A comparable form of a JSON value (the engine's answer, or a case's ``want_result``):
    tagged tuples, so ``true`` is not ``1``; numbers as exact fractions, so ``1 == 1.0``; objects
    as key-sorted pairs, a key that is not a string (YAML's ``1:``) as its JSON text, as OPA
    writes it. Arrays keep their order: a set is already an array in term order on both sides."""
    if value is None or isinstance(value, bool | str):
        return ("scalar", type(value).__name__, value)
    if isinstance(value, int | float):
        return ("number", Fraction(value))
    if isinstance(value, list):
        return ("array", tuple(canonical(item) for item in value))
    if isinstance(value, dict):
        pairs = ((canonical(_key_text(key)), canonical(item)) for key, item in value.items())
        return ("object", tuple(sorted(pairs, key=lambda pair: _order(pair[0]))))
    raise TypeError(f"not a Rego value: {value!r}")


def _key_text(key: Any) -> str:
    return key if isinstance(key, str) else json.dumps(key, separators=(",", ":"))


_RANK = {"NoneType": 0, "bool": 1, "number": 2, "str": 3, "array": 4, "object": 5}


def _order(term: Any) -> tuple[Any, ...]:
    """OPA's term order (null < boolean < number < string < array < object) on canonical terms,
    for ``sort_bindings``; a set is already an array here, which is how OPA writes it."""
    tag = term[0]
    if tag == "scalar":
        return (_RANK[term[1]], term[2])
    if tag == "number":
        return (_RANK["number"], term[1])
    if tag == "array":
        return (_RANK["array"], tuple(_order(item) for item in term[1]))
    return (_RANK["object"], tuple((_order(key), _order(item)) for key, item in term[1]))
