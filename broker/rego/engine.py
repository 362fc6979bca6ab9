"""The policy engine adapter: one interface, an embedded engine (regorus) and room for others.

An engine loads Rego modules and data documents and evaluates one document by path. It answers
a value or ``UNDEFINED``; anything else (a builtin error, a crash of the engine, an unreachable
server) is an ``EngineFailure``. Deciding what undefined or a failure *means* (deny, with an audit
entry) is the decision point's job (``broker.policy.decision``), not the engine's, so every engine
fails closed the same way.

The embedded engine is regorus (the ``gordon-to-regorus`` wheel): ~3-30 µs a decision on this
machine against 1-3 ms for regopy. A regorus ``Engine`` is not safe to share between threads, so
each thread builds and evaluates on its own engine (pyo3 marks regorus's classes unsendable:
an engine made in one thread panics when another thread uses it, so not even a clone may
cross).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import regorus

from broker.errors import BrokerError


class _Undefined:
    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False


UNDEFINED: Final = _Undefined()
_UNDEFINED_JSON = '"<undefined>"'
"""The document does not exist for this input (Rego's undefined): never the same as false."""


class EngineFailure(BrokerError):
    """The engine could not evaluate: a builtin error, a server that did not answer, a crash."""

    status_code = 503


class PolicyLoadError(BrokerError):
    """Rego that does not parse or a data document the engine refuses."""

    status_code = 422


def clean_engine_message(text: str) -> str:
    """regorus appends a Rust stack backtrace to its messages; keep what a person reads."""
    head = text.split("Stack backtrace:", 1)[0]
    return "\n".join(line.rstrip() for line in head.strip().splitlines())


class PolicyEngine(Protocol):
    """What the decision point needs of an engine."""

    name: str

    def load(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        """Replace everything loaded with these modules (path -> Rego text) and this data
        document (the whole ``data`` tree, without the policies' own rules). Raises
        ``PolicyLoadError`` and leaves the previous load in place when any module is refused."""
        ...

    def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Any:
        """The value of ``data.<path>`` (dots or slashes) for this input, or ``UNDEFINED``;
        ``EngineFailure`` when evaluation fails."""
        ...


def rule_ref(path: str) -> str:
    """``broker/release/decision`` or ``broker.release.decision`` -> the ``data.`` reference."""
    dotted = path.strip("/").replace("/", ".")
    if dotted.startswith("data."):
        dotted = dotted[len("data.") :]
    if not dotted or any(not part for part in dotted.split(".")):
        raise ValueError(f"not a document path: {path!r}")
    return "data." + dotted


@dataclass
class _Slot:
    generation: int
    engine: regorus.Engine
    vm: regorus.Rvm | None


_THREAD = threading.local()
_SLOTS_PER_THREAD = 8
_ENGINE_IDS = itertools.count()


def _thread_slots() -> OrderedDict[int, _Slot]:
    """This thread's regorus objects, by engine. They live in the thread that made them and
    die with it: pyo3 marks regorus's classes unsendable, and dropping one in another thread
    (say, when an ``EmbeddedEngine`` is collected by a server thread) is an error."""
    slots: OrderedDict[int, _Slot] | None = getattr(_THREAD, "slots", None)
    if slots is None:
        slots = _THREAD.slots = OrderedDict()
    return slots


class EmbeddedEngine:
    """regorus in process: the default engine."""

    name = "embedded"

    def __init__(self, compiled: Sequence[str] = ()) -> None:
        """``compiled``: document paths also compiled for regorus's VM (RVM) at load and
        evaluated there (2-3x faster than the interpreter on the release policy). Anything else,
        and everything when compilation fails, runs in the interpreter. The two are checked
        against each other on generated inputs in tests/broker/policy/test_decision.py."""
        self._id = next(_ENGINE_IDS)
        self._modules: tuple[tuple[str, str], ...] | None = None
        self._data: dict[str, Any] = {}
        self._data_json = "{}"
        self._compiles = False
        self._compiled = tuple(rule_ref(p) for p in compiled)
        self.compile_error: str | None = None
        self._refs: dict[str, str] = {}
        self._generation = 0
        self._lock = threading.Lock()

    @staticmethod
    def build(modules: Mapping[str, str], data: Mapping[str, Any]) -> regorus.Engine:
        """A fresh regorus engine with these modules and data (``PolicyLoadError`` if refused)."""
        engine = regorus.Engine()
        for path in sorted(modules):
            try:
                engine.add_policy(path, modules[path])
            except RuntimeError as exc:
                raise PolicyLoadError(f"{path}: {clean_engine_message(str(exc))}") from exc
        try:
            engine.add_data_json(json.dumps(data))
        except (RuntimeError, TypeError, ValueError) as exc:
            raise PolicyLoadError(
                f"data document refused: {clean_engine_message(str(exc))}"
            ) from exc
        return engine

    def load(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        self.build(modules, data)  # refuses bad Rego before anything changes
        data_json = json.dumps(data)
        ordered = tuple(sorted(modules.items()))
        program, error = self._compile(ordered, data_json)
        del program  # made and dropped in this thread; each thread compiles its own
        with self._lock:
            self._modules = ordered
            self._data = dict(data)
            self._data_json = data_json
            self.compile_error = error
            self._compiles = error is None and bool(self._compiled)
            self._generation += 1

    def _compile(
        self, modules: tuple[tuple[str, str], ...], data_json: str
    ) -> tuple[regorus.Program | None, str | None]:
        if not self._compiled:
            return None, None
        try:
            program = regorus.Program.compile_from_modules(
                data_json, list(modules), list(self._compiled)
            )
        except RuntimeError as exc:
            return None, clean_engine_message(str(exc))
        return program, None

    @property
    def compiled(self) -> bool:
        """Whether the compiled paths run on the VM (False: compilation failed or none asked)."""
        return self._compiles

    def _slot(self) -> _Slot:
        """This thread's engine and VM for this policy, built on first use after each load."""
        slots = _thread_slots()
        slot = slots.get(self._id)
        if slot is None or slot.generation != self._generation:
            with self._lock:
                if self._modules is None:
                    raise EngineFailure("no policy is loaded")
                modules, data, generation = self._modules, self._data, self._generation
            engine = self.build(dict(modules), data)
            vm = None
            if self._compiles:
                program = self._compile(modules, self._data_json)[0]
                if program is not None:
                    vm = regorus.Rvm()
                    vm.load_program(program)
                    vm.set_data_json(self._data_json)
            slot = _Slot(generation, engine, vm)
            slots.pop(self._id, None)
            slots[self._id] = slot
            while len(slots) > _SLOTS_PER_THREAD:  # dropped here, by the thread that made them
                slots.popitem(last=False)
        return slot

    def _drop_slot(self) -> None:
        _thread_slots().pop(self._id, None)

    def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Any:
        return self.evaluate_json(path, json.dumps(input_doc))

    def evaluate_json(self, path: str, input_json: str) -> Any:
        """``evaluate`` for an input already serialised (the decision log keeps that text).

        The value comes back as JSON text: regorus's Python conversion cannot build sets of
        arrays or objects, nor integers beyond 64 bits, and ``eval_rule`` returns None for both
        null and undefined. ``eval_rule_as_json`` answers ``"<undefined>"`` for undefined.
        """
        slot = self._slot()
        engine = slot.engine
        ref = self._refs.get(path)
        if ref is None:
            ref = self._refs[path] = rule_ref(path)
        vm = slot.vm if ref in self._compiled else None
        try:
            if vm is not None:
                vm.set_input_json(input_json)
                text = vm.execute_entry_point(ref)
            else:
                engine.set_input_json(input_json)
                text = engine.eval_rule_as_json(ref)
        except RuntimeError as exc:
            message = clean_engine_message(str(exc))
            if message.startswith("not a valid rule path"):
                return UNDEFINED
            raise EngineFailure(f"policy evaluation failed: {message}") from exc
        except BaseException as exc:  # regorus raises pyo3 PanicException on an engine panic
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            # a panic leaves this engine unusable ("recursion detected" ever after): drop it
            self._drop_slot()
            raise EngineFailure(f"policy engine crashed: {exc}") from exc
        if text == _UNDEFINED_JSON:
            return UNDEFINED
        return json.loads(text)
