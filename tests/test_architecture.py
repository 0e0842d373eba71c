"""The import contract: capabilities meet through public services, never each other's tables.

Read from the AST of every module under ``server/`` (nothing is imported, so this is
fast and catches a module no test happens to load):

- **tables**: ``server.<a>.models`` is imported only by ``server.<a>`` itself (and by
  ``server/models.py``, the metadata aggregator for migrations, and ``server/migrations``);
- **private names**: no call ``x._name(…)`` on another object than ``self`` / ``cls``
  (how ``self.consults._get(…)`` reached into another package), and no
  ``from server.<b>… import _name`` across packages;
- **dependencies**: every import between top-level parts of ``server`` is in
  :data:`ALLOWED` — the same map as the README's architecture section, which this test
  reads too. Imports under ``if TYPE_CHECKING:`` are annotations only and create no
  dependency; they still obey the first two rules.

Violations that other work is removing are listed in :data:`KNOWN_VIOLATIONS` with the
reason; a listed violation that no longer exists fails the test, so the list only shrinks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"

# Top-level part of server/ → the parts it may import (besides itself). Wiring modules
# (app, capabilities, cli, seed, models, migrations, cluster, workers) build or aggregate the rest.
CAPABILITIES_ALL = {
    "access",
    "consults",
    "identity",
    "inbox",
    "media",
    "payments",
    "prescriptions",
    "records",
    "referrals",
    "scheduling",
    "triage",
    "visits",
}
ALLOWED: dict[str, set[str]] = {
    "core": {"config"},
    "config": {"core"},
    "realtime": {"core", "config"},
    # `services(call)` for the routes: only the container's dataclass, built by app.py.
    "container": {"core"},
    "identity": {"core", "config", "container", "access", "inbox"},
    "access": {"core", "config", "identity"},
    "records": {"core", "config", "container", "identity", "access", "inbox", "seed"},
    "inbox": {"core", "config", "container", "identity", "realtime"},
    "scheduling": {"core", "config", "container", "identity", "access", "inbox"},
    "referrals": {
        "core",
        "config",
        "container",
        "identity",
        "access",
        "inbox",
        "records",
        "scheduling",
    },
    "consults": {
        "core",
        "config",
        "container",
        "identity",
        "access",
        "inbox",
        "records",
        "media",
        "realtime",
    },
    "prescriptions": {
        "core",
        "config",
        "container",
        "identity",
        "access",
        "inbox",
        "records",
        "realtime",
    },
    "media": {"core", "config", "container", "identity", "consults", "realtime"},
    "triage": {"core", "config", "container", "identity", "access"},
    "payments": {"core", "config", "container", "identity", "access", "inbox", "scheduling"},
    "visits": {
        "core",
        "config",
        "container",
        "identity",
        "access",
        "inbox",
        "records",
        "consults",
        "prescriptions",
    },
    "capabilities": {"core"} | CAPABILITIES_ALL,
    "app": {"core", "config", "container", "capabilities", "realtime"} | CAPABILITIES_ALL,
    "cli": {"core", "config", "app", "cluster", "seed", "identity", "prescriptions", "records"}
    | {"workers"}
    | {"payments"},
    "seed": {"core", "container", "identity", "prescriptions", "records", "scheduling"}
    | {"payments"},
    "cluster": {"workers"},
    "workers": {"core", "config"},
    "models": {"core"} | CAPABILITIES_ALL,
    "migrations": {"core", "models"},
}

# Breaches tolerated while they are being removed: (importing module, imported name or
# private call), each with its reason. Empty now; an entry whose breach is gone fails the
# test, so the list only shrinks.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()

# Modules that may import any capability's models: they aggregate the metadata.
MODELS_EXEMPT = ("server.models", "server.migrations")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    name: str  # the imported module, or module.name for ``from … import name``
    line: int
    type_only: bool


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SERVER.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for child in node.body:
                for sub in ast.walk(child):
                    inside.add(id(sub))
    return inside


def _imports(module: str, tree: ast.Module) -> Iterator[Import]:
    type_only = _type_checking_nodes(tree)
    package = module.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno, id(node) in type_only)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package[: len(package) - node.level + (1 if _is_package(module) else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield Import(module, f"{base}.{alias.name}", node.lineno, id(node) in type_only)


def _is_package(module: str) -> bool:
    return (SERVER.parent / module.replace(".", "/") / "__init__.py").exists()


def _top(name: str) -> str | None:
    """The top-level part of server/ a module or name belongs to (None: outside, or the
    root package's own names such as ``server.__version__``)."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != "server" or parts[1].startswith("__"):
        return None
    return parts[1]


def _private_calls(module: str, tree: ast.Module) -> Iterator[tuple[str, int]]:
    """``x._name(…)`` where ``x`` is not ``self`` or ``cls`` (another object's private),
    unless ``_name`` is defined in this same module (a module's classes may use each
    other's privates: they are one unit)."""
    own = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr = node.func.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in own:
            continue
        receiver = node.func.value
        if isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
            continue
        yield ast.unparse(node.func), node.lineno


def _violations() -> dict[tuple[str, str], str]:
    """(module, name) → where, for every breach of the three rules."""
    found: dict[tuple[str, str], str] = {}
    for module, tree in _modules():
        here = _top(module)
        for imp in _imports(module, tree):
            there = _top(imp.name)
            if there is None or there == here:
                continue
            where = f"{module}:{imp.line}"
            parts = imp.name.split(".")
            if len(parts) >= 3 and parts[2] == "models" and not module.startswith(MODELS_EXEMPT):
                found[(module, imp.name)] = f"{where} imports another capability's models"
            if parts[-1].startswith("_") and not parts[-1].startswith("__"):
                found[(module, imp.name)] = f"{where} imports another package's private name"
            if not imp.type_only and there not in ALLOWED.get(here or "", set()):
                found[(module, imp.name)] = (
                    f"{where}: server.{here} may not depend on server.{there} (see ALLOWED)"
                )
        for call, line in _private_calls(module, tree):
            found[(module, call)] = f"{module}:{line} calls another object's private {call}"
    return found


def test_capabilities_meet_only_through_public_services() -> None:
    found = _violations()
    new = {key: why for key, why in found.items() if key not in KNOWN_VIOLATIONS}
    assert not new, "import contract broken:\n" + "\n".join(sorted(new.values()))


def test_the_known_violations_still_exist() -> None:
    gone = sorted(KNOWN_VIOLATIONS - set(_violations()))
    assert not gone, f"fixed, so delete from KNOWN_VIOLATIONS: {gone}"


def test_every_part_of_server_is_in_the_map() -> None:
    parts = {_top(module) for module, _ in _modules()} - {None}
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))


def test_the_readme_draws_the_same_map() -> None:
    """README's "Dependencies between packages" table: one row per part, its allowed set."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("#### Dependencies between packages", 1)[1].split("\n#", 1)[0]
    drawn: dict[str, set[str]] = {}
    for row in re.finditer(r"^\| `([\w_]+)` \| ([^|]*) \|", section, re.MULTILINE):
        deps = {d.strip().strip("`") for d in row.group(2).split(",") if d.strip()}
        drawn[row.group(1)] = deps - {"—"}
    assert drawn == ALLOWED
