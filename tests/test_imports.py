"""raycluster's import graph: no cycle between its packages, and library code never imports the
application layer (raycluster.app). Every import counts, top-level or inside a function."""
import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1] / "raycluster"


def unit(module: str) -> str:
    """raycluster.methods.cludi.model -> raycluster.methods (a package, or a top-level module)."""
    return ".".join(module.split(".")[:2])


def import_edges(root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """{(importing unit, imported unit): ["file:line", ...]} over every .py file under `root`."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module.split(".") if parts[-1] == "__init__" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                targets = [".".join(base + [node.module] if node.module else base)]
            else:
                continue
            for target in targets:
                if target.startswith("raycluster.") and unit(target) != unit(module):
                    edges.setdefault((unit(module), unit(target)), []).append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return edges


def test_no_package_cycles():
    edges = import_edges()
    graph = nx.DiGraph(list(edges))
    cycles = list(nx.simple_cycles(graph))
    shown = [" -> ".join(cycle + [cycle[0]]) + "  (" + "; ".join(
        edges[(a, b)][0] for a, b in zip(cycle, cycle[1:] + cycle[:1])) + ")" for cycle in cycles[:5]]
    assert not cycles, f"{len(cycles)} import cycles between raycluster's packages, e.g.\n" + "\n".join(shown)


def test_library_never_imports_the_application_layer():
    upward = {pair: where for pair, where in import_edges().items()
              if pair[1] == "raycluster.app" and pair[0] != "raycluster.app"}
    assert not upward, f"library modules import raycluster.app: {upward}"


def test_the_walk_sees_function_level_and_relative_imports(tmp_path):
    # The check is only as good as its walk: a cycle closed by an import inside a function, or by
    # a relative import, must show.
    package = tmp_path / "raycluster"
    for folder, text in {"a": "from raycluster.b.x import f\n", "b": "def f():\n    from ..a import y\n"}.items():
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
        (package / folder / ("x.py" if folder == "b" else "y.py")).write_text(text)
    edges = import_edges(package)
    assert set(edges) == {("raycluster.a", "raycluster.b"), ("raycluster.b", "raycluster.a")}
    assert list(nx.simple_cycles(nx.DiGraph(list(edges))))
