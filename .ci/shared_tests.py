"""Print the node ids of the tests that read ../shared (PartiPrompts beside the checkout).

.ci/run runs them again from a copy of the repository with no ../shared beside it, where they must skip,
saying so, or pass: a plain clone's suite is green."""
import ast
from pathlib import Path

NAMES = {"PARTI", "SHARED", "needs_shared"}


def _reads_shared(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id in NAMES for n in ast.walk(node))


for path in sorted(Path("tests").glob("test_*.py")):
    tree = ast.parse(path.read_text())
    tests = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")]
    module_level = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ImportFrom, ast.Import))]
    if any(_reads_shared(n) for n in module_level):  # e.g. a parametrisation built from PARTI
        print(path)
        continue
    for test in tests:
        if _reads_shared(test):
            print(f"{path}::{test.name}")
