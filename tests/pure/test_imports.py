"""Stages pass data one way: no two of agent/'s packages import each other."""

import ast
import collections
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "agent"


def _imports() -> dict[str, set[str]]:
    """package (or top-level module) -> the others it imports, anywhere in its files."""
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for f in AGENT.rglob("*.py"):
        rel = f.relative_to(AGENT)
        me = rel.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(rel.parent.parts)[: len(rel.parent.parts) - (node.level - 1)]
                # `from .. import procfs` imports modules by name
                heads = [node.module.split(".")] if node.module else [[a.name] for a in node.names]
                for head in heads:
                    target = (base + head)[:1]
                    if target and target[0] != me:
                        edges[me].add(target[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agent."):
                target = node.module.split(".")[1]
                if target != me:
                    edges[me].add(target)
    return edges


def test_no_two_packages_import_each_other():
    edges = _imports()
    cycles = sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    assert not cycles, cycles
    # the two this rule was written for
    assert "records" not in edges["aggregate"] and "enrich" not in edges["procfs"]
