"""Layout rules of the runtime: no file in llm_playground/ over 350 lines, every public class,
function and method with a docstring.

Oracle: the source itself, read with `ast` (no import, so a module that needs a GPU is checked
too). Public = a name not starting with `_`; a public method counts in any class (a private
class's public methods are called from outside it too); functions and classes nested inside
functions are exempt (they are implementation detail of their parent). Each test
fails naming every offender (file:line and name), so one run lists all there is to fix.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "llm_playground"
MAX_LINES = 350


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, f"no Python files under {PACKAGE}"
    return files


def _undocumented(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, dotted name) of each public class/function/method in `tree` without a docstring."""
    missing: list[tuple[int, str]] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.If, ast.Try)):    # `if HAVE_TRITON:` / `try:` at this level
                for block in (node.body, node.orelse, getattr(node, "finalbody", []),
                              *(h.body for h in getattr(node, "handlers", []))):
                    visit(block, prefix)
                continue
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            name = prefix + node.name
            if not node.name.startswith("_") and ast.get_docstring(node) is None:
                missing.append((node.lineno, name))
            if isinstance(node, ast.ClassDef):    # its methods; defs nested in a function exempt
                visit(node.body, name + ".")

    visit(tree.body, "")
    return missing


def test_no_runtime_file_over_350_lines():
    too_long = []
    for path in _sources():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            too_long.append(f"{path.relative_to(PACKAGE.parent)}: {n} lines")
    assert not too_long, f"files over {MAX_LINES} lines:\n" + "\n".join(too_long)


def test_every_public_class_and_function_has_a_docstring():
    missing = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(PACKAGE.parent)
        missing += [f"{rel}:{line}: {name}" for line, name in _undocumented(tree)]
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_the_docstring_check_sees_what_it_should():
    """The walker itself: a missing docstring is found on a public function, class and method
    (a private class's too), not on private names or on functions nested in a function."""
    tree = ast.parse(
        "def f():\n    def inner(): pass\n"
        "class C:\n    '''doc'''\n    def m(self): pass\n    def _p(self): pass\n"
        "class D:\n    pass\n"
        "def _private(): pass\n"
        "class _Hidden:\n    def shown(self): pass\n"
        "if True:\n    def cond(): pass\n"
        "async def g():\n    '''doc'''\n")
    assert _undocumented(tree) == [(1, "f"), (5, "C.m"), (7, "D"), (11, "_Hidden.shown"), (13, "cond")]
