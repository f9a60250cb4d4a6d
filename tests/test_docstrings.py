"""Docstrings in one dialect: every public function or method of adjointlib that raises has a "Raises:" section.

A function "raises" when a ``raise`` statement sits in its own body (raises inside nested functions, classes or
lambdas count for those, not for the function around them).  Public: no part of the qualified name (function,
enclosing classes) starts with "_"; functions nested inside another function are not public.  A class whose
``__init__`` or ``__post_init__`` raises needs the section ("Raises:" or "Raises (constructor):") in the class
docstring.  Every exception class raised by name (``raise ValueError(...)``) must be named in that section.
"""
import ast
import re
from pathlib import Path

import adjointlib

ROOT = Path(adjointlib.__file__).parent
SECTION = re.compile(r"^\s*Raises( \(constructor\))?:", re.MULTILINE)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
SCOPES = FUNCTIONS + (ast.ClassDef, ast.Lambda)


def own_nodes(function):
    """Every node of the function's body, not descending into nested functions, classes or lambdas."""
    stack = [node for node in function.body if not isinstance(node, SCOPES)]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if not isinstance(child, SCOPES))


def raised_names(function) -> set[str]:
    """Names of the exception classes the function raises itself: ``raise X``, ``raise X(...)``, ``raise m.X(...)``.

    Re-raises (bare ``raise``, ``raise error``) name no class and are skipped.
    """
    names = set()
    for node in own_nodes(function):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = exc.id if isinstance(exc, ast.Name) else exc.attr if isinstance(exc, ast.Attribute) else ""
            if name[:1].isupper():
                names.add(name)
    return names


def raises(function) -> bool:
    return any(isinstance(node, ast.Raise) for node in own_nodes(function))


def offenders(source: str, filename: str = "<string>") -> list[str]:
    """One line per raising public function/method, or class with a raising constructor, lacking a proper section."""
    out = []

    def check(where: str, docstring: str | None, names: set[str]) -> None:
        doc = docstring or ""
        section = SECTION.search(doc)
        if not section:
            out.append(f"{where}: no 'Raises:' section")
            return
        missing = sorted(name for name in names if not re.search(rf"\b{name}\b", doc[section.start():]))
        if missing:
            out.append(f"{where}: 'Raises:' section does not name {', '.join(missing)}")

    def visit(body, prefix: str) -> None:
        for node in body:
            qualname = prefix + node.name if isinstance(node, FUNCTIONS + (ast.ClassDef,)) else ""
            public = not any(part.startswith("_") for part in qualname.split("."))
            if isinstance(node, FUNCTIONS) and public and raises(node):
                check(f"{filename}:{node.lineno} {qualname}", ast.get_docstring(node), raised_names(node))
            elif isinstance(node, ast.ClassDef):
                constructors = [item for item in node.body
                                if isinstance(item, FUNCTIONS) and item.name in ("__init__", "__post_init__")]
                if public and any(raises(item) for item in constructors):
                    names = set().union(*(raised_names(item) for item in constructors))
                    check(f"{filename}:{node.lineno} class {qualname}", ast.get_docstring(node), names)
                visit(node.body, qualname + ".")
            elif isinstance(node, (ast.If, ast.Try, ast.With)):  # e.g. definitions under ``if TYPE_CHECKING:``
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)], prefix)

    visit(ast.parse(source, filename).body, "")
    return out


def test_every_raising_public_function_and_constructor_documents_its_raises():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        found += offenders(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT.parent)))
    assert not found, f"{len(found)} docstrings lack a complete Raises section:\n" + "\n".join(found)


def test_the_checker_is_not_vacuous():
    source = '''
def public(x):
    """Summary without the section."""
    if x < 0:
        raise ValueError("x must be >= 0")

def documented(x):
    """Summary (a TypeError named outside the section does not count).

    Raises:
        ValueError: x < 0.
    """
    if x < 0:
        raise ValueError("x must be >= 0")
    if x > 1:
        raise TypeError("x")

def _private(x):
    raise ValueError

def outer(x):
    """Raises nothing itself."""
    def inner():
        raise ValueError
    return inner

class Thing:
    """No section here."""
    def __init__(self, n):
        if n < 1:
            raise ValueError("n")

    def method(self):
        raise RuntimeError("always")

class Fine:
    """Summary.

    Raises (constructor):
        ValueError: n < 1.
    """
    def __init__(self, n):
        if n < 1:
            raise ValueError("n")
'''
    found = offenders(source)
    assert [line.split(" ", 1)[1] for line in found] == [
        "public: no 'Raises:' section",
        "documented: 'Raises:' section does not name TypeError",
        "class Thing: no 'Raises:' section",
        "Thing.method: no 'Raises:' section",
    ], found
