"""The package's layout rules (ARCHITECTURE.md): imports point one way, argparse only in zoo/cli, no cycles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "zoo"
# Lower layers never import higher ones; a layer imports from its own package freely.
LAYERS = {
    "registry": 0, "fileio": 0, "version": 0, "hub": 0, "errors": 0,
    "layers": 1, "data": 1, "flops": 1, "viz": 1,
    "metrics": 2, "encoders": 2,
    "decoders": 3,
    "models": 4,
    "checkpoint": 5, "convert": 5, "summary": 5,
    "infer": 6,
    "train": 7, "benchmark": 7, "serve": 7,
    "cli": 8,
}  # fmt: skip
# Imported inside functions only: heavy optional dependencies, and a command's module when it runs.
LAZY = {"onnx", "onnxruntime", "tensorflow", "matplotlib", "segmentation_models_pytorch", "timm", "torchvision",
        "scipy", "importlib", "zoo.cli.train", "torch.utils.benchmark", "tflite", "ai_edge_litert",
        "uvicorn", "openvino", "nncf", "torchao", "torch._inductor"}  # fmt: skip
CLI_LAZY = {"torch", "rich.console", "rich.progress", "rich.table", "numpy", "pytorch_lightning.utilities.exceptions"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(module imported, whether inside a function) for every import statement."""
    found = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, nested))
            visit(child, inner)

    visit(tree, False)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "zoo" and len(parts) > 1 else None


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for name, tree in _modules().items():
        layer = _layer(name)
        if layer is None or layer in ("__main__",):
            continue
        for imported, _ in _imports(tree):
            target = _layer(imported)
            if target is None or target == layer or target == "__main__":
                continue
            if LAYERS[target] >= LAYERS[layer]:
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_argparse_only_in_the_command_line() -> None:
    users = [n for n, t in _modules().items() if any(m == "argparse" for m, _ in _imports(t))]
    assert users and all(n.startswith("zoo.cli") for n in users), users


def test_function_level_imports_are_heavy_optional_ones() -> None:
    """Inside functions: heavy optional dependencies, and in zoo/cli the library a command runs (so that every
    command's ``--help`` stays instant)."""
    wrong = [
        f"{name}: {imported}"
        for name, tree in _modules().items()
        for imported, nested in _imports(tree)
        if nested
        and imported.split(".")[0] not in LAZY
        and imported not in LAZY
        and not (name.startswith("zoo.cli") and (imported.startswith("zoo.") or imported in CLI_LAZY))
    ]
    assert wrong == []


def test_every_layer_is_known() -> None:
    layers = {_layer(n) for n in _modules()} - {None, "__main__"}
    assert layers == set(LAYERS)


FLAG = re.compile(r"(?<![\w-])--[a-z]")  # a command-line flag, e.g. "--force"
ONE_FLAG = re.compile(r"--[a-z][\w.-]*")  # a string that is one flag: an argument the library hands LightningCLI


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the module's, classes' and functions' docstring nodes (documentation may show commands)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_only_the_command_line_speaks_flags() -> None:
    """A library message names the Python argument (``force``); only zoo/cli writes ``--force``."""
    found = []
    for name, tree in _modules().items():
        if _layer(name) == "cli":
            continue
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if FLAG.search(node.value) and not ONE_FLAG.fullmatch(node.value):
                    found.append(f"{name}:{node.lineno}: {node.value!r}")
    assert found == []
