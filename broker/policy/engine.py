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

import json
import threading
from collections.abc import Mapping, Sequence
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


class EmbeddedEngine:
    """regorus in process: the default engine."""

    name = "embedded"

    def __init__(self, compiled: Sequence[str] = ()) -> None:
        """``compiled``: document paths also compiled for regorus's VM (RVM) at load and
        evaluated there (2-3x faster than the interpreter on the release policy). Anything else,
        and everything when compilation fails, runs in the interpreter. The two are checked
        against each other on generated inputs in tests/broker/policy/test_decision.py."""
        self._modules: tuple[tuple[str, str], ...] | None = None
        self._data: dict[str, Any] = {}
        self._data_json = "{}"
        self._compiles = False
        self._compiled = tuple(rule_ref(p) for p in compiled)
        self.compile_error: str | None = None
        self._refs: dict[str, str] = {}
        self._generation = 0
        self._local = threading.local()
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
        engine = self.build(modules, data)  # refuses bad Rego before anything changes
        data_json = json.dumps(data)
        ordered = tuple(sorted(modules.items()))
        program, error = self._compile(ordered, data_json)
        with self._lock:
            self._modules = ordered
            self._data = dict(data)
            self._data_json = data_json
            self.compile_error = error
            self._compiles = program is not None
            self._generation += 1
            self._keep(engine, program, self._generation)

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

    def _keep(
        self, engine: regorus.Engine, program: regorus.Program | None, generation: int
    ) -> None:
        """This thread's engine and VM: regorus objects may only be used by the thread that
        made them (pyo3 'unsendable' classes)."""
        local = self._local
        local.engine = engine
        local.vm = None
        if program is not None:
            local.vm = regorus.Rvm()
            local.vm.load_program(program)
            local.vm.set_data_json(self._data_json)
        local.generation = generation

    @property
    def compiled(self) -> bool:
        """Whether the compiled paths run on the VM (False: compilation failed or none asked)."""
        return self._compiles

    def _engine(self) -> regorus.Engine:
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            with self._lock:
                if self._modules is None:
                    raise EngineFailure("no policy is loaded")
                modules, data, generation = self._modules, self._data, self._generation
            engine = self.build(dict(modules), data)
            program = self._compile(modules, self._data_json)[0] if self._compiles else None
            self._keep(engine, program, generation)
        built: regorus.Engine = local.engine
        return built

    def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Any:
        return self.evaluate_json(path, json.dumps(input_doc))

    def evaluate_json(self, path: str, input_json: str) -> Any:
        """``evaluate`` for an input already serialised (the decision log keeps that text).

        The value comes back as JSON text: regorus's Python conversion cannot build sets of
        arrays or objects, nor integers beyond 64 bits, and ``eval_rule`` returns None for both
        null and undefined. ``eval_rule_as_json`` answers ``"<undefined>"`` for undefined.
        """
        engine = self._engine()
        ref = self._refs.get(path)
        if ref is None:
            ref = self._refs[path] = rule_ref(path)
        vm: regorus.Rvm | None = self._local.vm if ref in self._compiled else None
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
            self._local.generation = None
            raise EngineFailure(f"policy engine crashed: {exc}") from exc
        if text == _UNDEFINED_JSON:
            return UNDEFINED
        return json.loads(text)
