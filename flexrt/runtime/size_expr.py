"""Size expressions of a loaded program (`8*s0`, `FloorDiv(s0, 2)`, `Max(1, s0 - 1)`), evaluated
without sympy: the run time checks derived dims and predicts output shapes with them, and importing
sympy (hundreds of modules) was most of a cold start's import time on the GPU host.

The expressions are what the build wrote with `str(sympy expr)`, restricted by the artifact schema to
size symbols, integers, + - * / // % ** (a small constant power) and the size functions below;
anything else is refused with a ValueError.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from fractions import Fraction

SYMBOL = re.compile(r"[a-z]+[0-9]+")  # s0, u3: a size symbol, as torch names them


def _floor_div(a: Fraction, b: Fraction) -> Fraction:
    return Fraction(a // b)


def _ceil_div(a: Fraction, b: Fraction) -> Fraction:
    return Fraction(-(-a // b))


_BINARY: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,  # exact (sympy writes s0/2 for a rational), floor/ceiling round it
    ast.FloorDiv: _floor_div,
    ast.Mod: operator.mod,
    ast.Pow: lambda a, b: a**b,
}


_FUNCTIONS: dict[str, Callable[..., Fraction]] = {
    "FloorDiv": _floor_div,
    "CleanDiv": _floor_div,
    "CeilDiv": _ceil_div,
    "Mod": operator.mod,
    "PythonMod": operator.mod,
    "Max": max,
    "Min": min,
    "floor": lambda a: Fraction(math.floor(a)),
    "ceiling": lambda a: Fraction(math.ceil(a)),
    "Abs": abs,
}


class SizeExpr:
    """One parsed size expression; `value(env)` is its integer value for the symbols' sizes, or None
    when it names a symbol `env` lacks (a size only the data decides)."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._tree = ast.parse(text, mode="eval").body
        except SyntaxError as e:
            raise ValueError(f"size expression {text!r} does not parse: {e.msg}") from e
        self.symbols = frozenset(self._check(self._tree))

    @property
    def is_symbol(self) -> bool:
        return isinstance(self._tree, ast.Name)

    def _check(self, node: ast.AST) -> set[str]:
        """The symbols `node` names; refuses any construct outside the size grammar."""
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return set()
        if isinstance(node, ast.Name) and SYMBOL.fullmatch(node.id):
            return {node.id}
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):  # bounded: no 9**9**9 from a file
            if not (isinstance(node.right, ast.Constant) and type(node.right.value) is int and 0 <= node.right.value <= 8):
                raise ValueError(f"size expression {self.text!r}: only a constant power of 0 to 8 is allowed")
            return self._check(node.left)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return self._check(node.left) | self._check(node.right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return self._check(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and not node.keywords and node.args):
            return set().union(*(self._check(a) for a in node.args))
        raise ValueError(f"size expression {self.text!r}: {ast.dump(node)[:80]} is not part of a size expression")

    def value(self, env: Mapping[str, int]) -> int | None:
        if not self.symbols <= env.keys():
            return None
        result = self._eval(self._tree, env)
        return int(result) if result.denominator == 1 else math.floor(result)

    def _eval(self, node: ast.AST, env: Mapping[str, int]) -> Fraction:
        if isinstance(node, ast.Constant):
            return Fraction(node.value)
        if isinstance(node, ast.Name):
            return Fraction(env[node.id])
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, env), self._eval(node.right, env))
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, env)
            return -v if isinstance(node.op, ast.USub) else v
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # _check allowed nothing else
        return _FUNCTIONS[node.func.id](*(self._eval(a, env) for a in node.args))

    def __str__(self) -> str:
        return self.text
