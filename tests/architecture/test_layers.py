"""The package's floors and who may import whom (docs: README "Layout", architecture.md section 3).

Two kinds of checks:

- Static, over every import statement in src/fedgrpo (lazy ones inside functions included): each
  module imports only from its own floor's allowed rooms below it (`MAY_IMPORT`), third-party
  frameworks only where `THIRD_PARTY` allows them (flwr only in the engines, the Flower backends of
  transport and the App; trl only in the training adapter), and no import circle between modules.
  `test_the_checker_catches_*` plant wrong-way imports and circles to show the checks can fail.
- Dynamic, in a fresh interpreter with heavy packages blocked: light modules import without them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "fedgrpo"

# The floors, bottom up: a room is a top-level module or package of fedgrpo ("fedgrpo" = __init__).
FLOORS: tuple[tuple[str, ...], ...] = (
    ("fedgrpo", "errors", "types", "config", "progress", "durable"),  # L0: values, config, errors, crash-safe files
    ("core", "data", "privacy"),  # L1: the paper's maths; data generation and splits; privacy
    ("models", "scorers"),  # L2: models; a client's scoring
    ("transport",),  # L3: the transport protocol and its backends
    ("training", "baselines"),  # L4: the pipeline's phases and the TRL adapter; the baselines' computations
    ("engines", "bench"),  # L5: the composition root: transports, runs, processes; the comparison
    ("apps", "cli"),  # L6: the Flower App's objects; the command line
)
FLOOR_OF = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}

# Imports between rooms of one floor: only these (importer -> importable). Nothing else: core and
# data stay independent, and the CLI reaches the Flower App only through engines.
SAME_FLOOR = {
    "fedgrpo": {"config", "errors"},  # the public surface
    "config": {"errors"},
    "scorers": {"models"},  # an expert runs its model
    "baselines": {"training"},  # a baseline trains through the same adapters
    "bench": {"engines"},  # the bench runs every method through the composition root
}


def may_import(importer: str, imported: str) -> bool:
    """Whether room `importer` may import room `imported`."""
    if importer == imported:
        return True
    below = FLOOR_OF[imported] < FLOOR_OF[importer]
    return below or imported in SAME_FLOOR.get(importer, set())


# Third-party packages with a home (module paths relative to src/fedgrpo, "/" = a whole room).
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "flwr": ("transport/flower_", "engines/", "apps.py"),
    "trl": ("training/trainer.py", "training/overlap.py"),
    "peft": ("training/trainer.py", "baselines/fedpetuning.py"),
    "datasets": ("training/trainer.py", "data/files.py"),
    "pyarrow": ("data/files.py",),
    "torch": ("models/", "scorers/", "training/", "baselines/", "bench/harness.py"),
    "transformers": ("models/", "training/", "baselines/", "engines/environment.py"),
    "tokenizers": ("models/",),
    "reasoning_gym": ("data/gym.py", "cli.py"),
    "math_verify": ("data/grading.py",),
    "matplotlib": ("training/report.py", "bench/report.py"),
    "dp_accounting": ("privacy/",),
    "opacus": ("models/dp_sgd.py",),
    "rich": ("cli.py",),
    "cryptography": ("engines/local_deployment.py",),
}


def _room(relative: str) -> str:
    parts = relative.removesuffix(".py").split("/")
    return "fedgrpo" if parts == ["__init__"] else parts[0]


def _module_name(relative: str) -> str:
    name = "fedgrpo." + relative.removesuffix(".py").replace("/", ".")
    return name.removesuffix(".__init__")


def imports_of(source: str, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported name) of every import in `source`, lazy ones included; fedgrpo names are
    resolved to the deepest known module (`from fedgrpo.engines import run` -> fedgrpo.engines.run)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.append((node.lineno, child if child in known else base))
    return found


def check_tree(files: dict[str, str]) -> list[str]:
    """Every rule broken by `files` (path relative to src/fedgrpo -> source): wrong-way imports,
    frameworks outside their home, import circles."""
    modules = {_module_name(rel): rel for rel in files}
    problems: list[str] = []
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, rel in modules.items():
        for line, target in imports_of(files[rel], name, set(modules)):
            top = target.split(".")[0]
            if top == "fedgrpo":
                imported_room = target.split(".")[1] if "." in target else "fedgrpo"
                if not may_import(_room(rel), imported_room):
                    problems.append(f"{rel}:{line} imports {target}: floor {FLOOR_OF[_room(rel)]} "
                                    f"({_room(rel)}) may not import {imported_room} (floor {FLOOR_OF[imported_room]})")
                if target in modules and target != name:
                    graph[name].add(target)
            elif top in THIRD_PARTY and not any(rel.startswith(home) for home in THIRD_PARTY[top]):
                problems.append(f"{rel}:{line} imports {top}, allowed only in {', '.join(THIRD_PARTY[top])}")
    problems += [f"import circle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append([*sorted(component), min(component)])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _package_files() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}


def test_every_room_has_a_floor():
    rooms = {_room(rel) for rel in _package_files()}
    assert rooms <= set(FLOOR_OF), f"rooms without a floor: {sorted(rooms - set(FLOOR_OF))}"


def test_the_package_keeps_its_floors_its_framework_homes_and_has_no_import_circle():
    assert check_tree(_package_files()) == []


def test_the_checker_catches_a_wrong_way_import_a_misplaced_framework_and_a_circle():
    files = _package_files()
    planted = dict(files)
    # training reaching up into the composition root; trl outside the training adapter; a circle.
    planted["training/policy.py"] += "\nfrom fedgrpo.engines.run import run\n"
    planted["core/graph.py"] += "\ndef f():\n    import trl\n"
    planted["data/tasks.py"] += "\nfrom fedgrpo.data import partition\n"
    problems = check_tree(planted)
    assert any(p.startswith("training/policy.py") and "may not import engines" in p for p in problems)
    assert any(p.startswith("core/graph.py") and "imports trl" in p for p in problems)
    assert any("import circle" in p and "fedgrpo.data.tasks" in p and "fedgrpo.data.partition" in p
               for p in problems)


# --- light modules stay light ----------------------------------------------------------------------

HEAVY = ("torch", "transformers", "trl", "peft", "flwr", "datasets", "accelerate")

BLOCKER = textwrap.dedent(
    """
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {heavy!r}:
                raise ImportError("blocked heavy import: " + name)
    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str, heavy: tuple[str, ...] = HEAVY) -> subprocess.CompletedProcess:
    script = BLOCKER.format(heavy=set(heavy)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    "module",
    ["fedgrpo", "fedgrpo.config", "fedgrpo.errors", "fedgrpo.progress", "fedgrpo.core.selection",
     "fedgrpo.core.advantage", "fedgrpo.core.graph", "fedgrpo.data.prompts", "fedgrpo.data.tasks",
     "fedgrpo.data.gym", "fedgrpo.data.partition", "fedgrpo.scorers.base", "fedgrpo.transport.base",
     "fedgrpo.transport.embedded", "fedgrpo.transport.failover", "fedgrpo.cli"],
)
def test_light_modules_import_without_heavy_packages(module):
    proc = _run(f"import {module}")
    assert proc.returncode == 0, proc.stderr


def test_splits_and_config_work_without_heavy_packages():
    proc = _run(
        """
        from fedgrpo import load_config
        from fedgrpo.data.partition import build_splits
        cfg = load_config(overrides={"pool_size": 8, "aux_size": 4, "public_size": 4, "eval_size": 4,
                                     "client_size": 4})
        print(len(build_splits(cfg.data).pool))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "8"


def test_cli_help_imports_neither_torch_nor_trl():
    proc = _run(
        """
        from fedgrpo.cli import main
        try:
            main(["prepare", "--help"])
        except SystemExit as exc:
            assert exc.code == 0
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "--aux-size" in proc.stdout


def test_the_deployment_client_app_imports_no_torch_or_trl():
    # Flower may start a fresh ClientApp process per message in deployment: it must stay a thin
    # forwarder (no torch, transformers or trl), or every message pays seconds of imports.
    proc = _run(
        """
        import fedgrpo.apps
        from fedgrpo.engines.expert_service import RemoteExpert
        """,
        heavy=("torch", "transformers", "trl", "peft"),
    )
    assert proc.returncode == 0, proc.stderr
