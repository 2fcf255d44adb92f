"""Every number in a chapter's claims table is read from results/ or computed, never typed.

A chapter notebook (``notebooks/0*.ipynb``, ``book/*.ipynb``) builds its claims table in code from
``results.Claim(claim, measurement, verdict)`` rows. This test reads the notebooks (nbformat, no
execution), parses each code cell with ``ast`` (lines starting with ``%`` or ``!`` are dropped)
and guarantees, for every ``Claim(...)`` call it finds (aliases such as ``C = results.Claim``,
rows built in loops over literal lists and helper functions defined in the notebook included):

1. the measurement is not a string constant holding a number that the claim text does not state
   (``"FID 48.6"`` is typed; ``"target 0.5×"`` under the claim "… (target ≤ 0.5×)" is not), and no
   f-string of it types a decimal number (``f"FID 48.6 ({x})"``) the claim does not state;
2. no numeric constant is formatted into the measurement: ``f"{48.6:.1f}"``, ``"%.1f" % 48.6``,
   ``"{}".format(48.6)``, ``str(48.6)``, or a variable that holds only a typed number and that
   nothing but the claims table reads;
3. no verdict is typed: ``Verdict("held", ...)`` (any word but "inconclusive" / "not testable …")
   or a verdict given as a string is a defect anywhere in the notebook; an "inconclusive" or
   ``NOT_TESTABLE`` verdict may be typed only with a reason (and rule) free of typed numbers;
4. the checker sees every claim: ``Claim`` is only ever called (never passed around or called with
   ``*args``), every cell that mentions it parses, and every notebook with a claims table, as
   chapters 03–08 must have, holds at least one ``Claim(...)`` call.

Integers typed in the *text* of an f-string (labels such as ``f"seed 0: {fid:.1f}"``) are not
flagged: they name runs and settings rather than state measurements.
"""
from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nbformat
import pytest

from pdlib.book.results import NOT_TESTABLE

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb")) + sorted((REPO / "book").glob("*.ipynb"))
CLAIMS_CHAPTERS = ("03", "04", "05", "06", "07", "08")     # stems of chapters with a claims table
TYPED_WORDS_ALLOWED = {"inconclusive", "not testable", NOT_TESTABLE}
FORMATTERS = {"str", "repr", "format", "fmt", "round", "float", "int", "abs"}
NUMBER = re.compile(r"\d+(?:\.\d+)?")
DECIMAL = re.compile(r"\d+\.\d+")
DIGIT = re.compile(r"[0-9]")
PERCENT_SPEC = re.compile(r"%[-+ #0]*(?:\d+|\*)?(?:\.(?:\d+|\*))?[diouxXeEfFgGcrsa%]")
BRACE_FIELD = re.compile(r"\{[^{}]*\}")
MAX_EXPANSIONS = 64
SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.GeneratorExp, ast.ListComp,
          ast.SetComp, ast.DictComp)


@dataclass
class Binding:
    order: tuple
    value: ast.AST | None          # None: computed / unknown
    cond: bool                     # inside if / for / while / try
    loop: ast.AST | None = None    # the for loop whose target binds it


def _typed_number(node) -> bool:
    """A number written into the code: a numeric literal, or arithmetic / float() of literals."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (int, float, complex)) and not isinstance(node.value, bool)
    if isinstance(node, ast.UnaryOp):
        return _typed_number(node.operand)
    if isinstance(node, ast.BinOp):
        return _typed_number(node.left) and _typed_number(node.right)
    if isinstance(node, ast.Call) and _name(node.func) in {"float", "int", "round", "abs"}:
        return bool(node.args) and (_typed_number(node.args[0]) or _str_const(node.args[0]))
    return False


def _str_const(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _name(func) -> str | None:
    return func.id if isinstance(func, ast.Name) else \
        func.attr if isinstance(func, ast.Attribute) else None


def _like(text: str, node) -> ast.Constant:
    """A string constant standing where ``node`` stands (for the messages)."""
    new = ast.copy_location(ast.Constant(text), node)
    new._pd = node._pd
    return new


def _stringy(node) -> bool:
    """An expression that is text by its form: a string, f-string, or a choice / sum of them."""
    if _str_const(node) or isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.IfExp):
        return _stringy(node.body) or _stringy(node.orelse)
    return isinstance(node, ast.BinOp) and (_stringy(node.left) or _stringy(node.right))


def _numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


def _source(cell_source: str) -> str:
    """The cell without IPython magics (lines starting with % or !), line numbers kept."""
    return "\n".join("" if line[:1] in "%!" else line for line in cell_source.splitlines())


class Notebook:
    """The parsed code cells of one notebook, their name bindings, and the checks."""

    def __init__(self, name: str, cells: list[tuple[int, str, str]]):
        self.name, self.cells, self.unparsable = name, [], []
        self.bindings: dict[int | None, dict[str, list[Binding]]] = {None: {}}
        self.top, self.assigned, self._alias_cache, self.parent = 0, set(), {}, {}
        for index, cell_id, src in cells:
            try:
                tree = ast.parse(_source(src))
            except SyntaxError as e:
                if re.search(r"Claim|Verdict|claims_table", src):
                    self.unparsable.append(f"cell {index} (id {cell_id}): {e}")
                continue
            self.cells.append((index, cell_id, tree))
            for stmt in tree.body:
                self.top += 1
                self._annotate(stmt, (index, cell_id), self.top, None, ())
                self._stmt(stmt, None, False, self.top)

    @classmethod
    def from_sources(cls, *sources: str) -> "Notebook":
        return cls("<test>", [(i, f"c{i}", s) for i, s in enumerate(sources)])

    @classmethod
    def read(cls, path: Path) -> "Notebook":
        nb = nbformat.read(path, as_version=4)
        return cls(path.name, [(i, c.get("id", "?"), c.source) for i, c in enumerate(nb.cells)
                               if c.cell_type == "code"])

    # --- indexing ---------------------------------------------------------------------------
    def _annotate(self, node, cell, top, func, loops):
        node._pd = (cell, top, func, loops)
        if isinstance(node, SCOPES):
            self.parent[id(node)] = func
            if isinstance(node, ast.Lambda):
                a = node.args
                for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
                    if arg is not None:
                        self._add(id(node), arg.arg, Binding((0, 0, 0), None, False))
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for gen in node.generators:           # comprehension variables: computed
                    self._bind(id(node), gen.target, None, (0, 0, 0), False)
            func, loops = node, ()
        for child in ast.iter_child_nodes(node):
            inner = loops + (node,) if isinstance(node, ast.For) and child in node.body else loops
            self._annotate(child, cell, top, func, inner)

    def _order(self, node, top, end=False):
        return (top, node.end_lineno, node.end_col_offset) if end else \
            (top, node.lineno, node.col_offset)

    def _add(self, scope, name, binding):
        self.bindings.setdefault(scope, {}).setdefault(name, []).append(binding)

    def _bind(self, scope, target, value, order, cond, loop=None):
        if isinstance(target, ast.Name):
            self._add(scope, target.id, Binding(order, value, cond, loop))
        elif isinstance(target, (ast.Tuple, ast.List)):
            pairs = (isinstance(value, (ast.Tuple, ast.List))
                     and len(value.elts) == len(target.elts)
                     and not any(isinstance(e, ast.Starred) for e in value.elts))
            for i, t in enumerate(target.elts):
                self._bind(scope, t, value.elts[i] if pairs else None, order, cond, loop)
        elif isinstance(target, ast.Starred):
            self._bind(scope, target.value, None, order, cond, loop)

    def _stmt(self, st, scope, cond, top):
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self._add(scope, st.name, Binding(self._order(st, top), st, cond))
            a = st.args
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
                if arg is not None:
                    self._add(id(st), arg.arg, Binding((0, 0, 0), None, False))
            for s in st.body:
                self._stmt(s, id(st), False, 0)
            return
        if isinstance(st, ast.ClassDef):
            self._add(scope, st.name, Binding(self._order(st, top), None, cond))
            return
        end = self._order(st, top, end=True)
        if isinstance(st, ast.Assign):
            self.assigned |= {id(st.value)} | {id(e) for e in getattr(st.value, "elts", ())}
            for t in st.targets:
                self._bind(scope, t, st.value, end, cond)
        elif isinstance(st, (ast.AnnAssign, ast.AugAssign)) and st.value is not None:
            self._bind(scope, st.target, st.value if isinstance(st, ast.AnnAssign) else None,
                       end, cond)
        elif isinstance(st, (ast.Import, ast.ImportFrom)):
            for a in st.names:
                value = ast.Attribute(ast.Name(st.module or ""), a.name) \
                    if isinstance(st, ast.ImportFrom) else None
                self._add(scope, (a.asname or a.name).split(".")[0], Binding(end, value, cond))
        elif isinstance(st, (ast.For, ast.AsyncFor)):
            order = self._order(st.iter, top, end=True)
            elements = self.elements(st.iter)
            for element in elements if elements is not None else [None]:
                self._bind(scope, st.target, element, order, True, st)
        for child in ast.iter_child_nodes(st):
            if isinstance(child, ast.stmt):
                inner = cond or not isinstance(st, (ast.With, ast.AsyncWith))
                self._stmt(child, scope, inner, top)
            elif isinstance(child, ast.withitem) and child.optional_vars is not None:
                self._bind(scope, child.optional_vars, None, end, cond)
            elif isinstance(child, ast.excepthandler):
                for s in child.body:
                    self._stmt(s, scope, True, top)
        for child in ast.iter_child_nodes(st):        # walrus targets in its expressions
            for node in ast.walk(child) if isinstance(child, ast.expr) else ():
                if isinstance(node, ast.NamedExpr):
                    self._bind(scope, node.target, node.value, self._order(node, top, True), True)

    def elements(self, node):
        """The elements of a literal list / tuple / set (or dict literal's .items()), else None."""
        if isinstance(node, ast.Name) and hasattr(node, "_pd"):
            values = self.resolve(node, {}, None)
            return self.elements(values[0]) if len(values) == 1 and values[0] is not None else None
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return None if any(isinstance(e, ast.Starred) for e in node.elts) else node.elts
        if (isinstance(node, ast.Call) and _name(node.func) == "items" and not node.args
                and isinstance(node.func.value, ast.Dict) and None not in node.func.value.keys):
            return [ast.Tuple([k, v]) for k, v in zip(node.func.value.keys, node.func.value.values)]
        return None

    # --- resolution -------------------------------------------------------------------------
    def resolve(self, name: ast.Name, sub: dict, at) -> list:
        """What a name may hold where it is read: its latest binding before (and the ones before
        that while the latest is conditional); [None] if computed or unknown."""
        cell, top, func, loops = name._pd
        scope = self.scope_of(name)
        if scope is None and name.id in sub:
            return [sub[name.id]]
        pos = (0, name.lineno, name.col_offset) if scope is not None else \
            at if func is not None and at is not None else (top, name.lineno, name.col_offset)
        found = []
        for b in sorted(self.bindings.get(scope, {}).get(name.id, []), key=lambda b: b.order,
                        reverse=True):
            if b.order < pos:
                found.append(b.value)
                if not b.cond or (b.loop is not None and b.loop in loops):
                    break
        return found or [None]

    def scope_of(self, name: ast.Name):
        """The function / lambda / comprehension whose local ``name`` is (its id), None: global."""
        func = name._pd[2]
        while func is not None and name.id not in self.bindings.get(id(func), {}):
            func = self.parent.get(id(func))
        return None if func is None else id(func)

    def aliases(self, attr: str) -> set[str]:
        """The names ever bound to ``attr`` (``C = results.Claim``), transitively."""
        if attr not in self._alias_cache:
            names, grown = {attr}, True
            while grown:
                grown = False
                for scope in self.bindings.values():
                    for n, bs in scope.items():
                        if n not in names and any(
                                isinstance(b.value, ast.Attribute) and b.value.attr == attr
                                or isinstance(b.value, ast.Name) and b.value.id in names
                                for b in bs):
                            names.add(n)
                            grown = True
            self._alias_cache[attr] = names
        return self._alias_cache[attr]

    def is_ref(self, node, attr: str, depth: int = 0) -> bool:
        """``node`` names ``attr`` (Claim, Verdict): results.Claim, Claim, or an alias of them."""
        if isinstance(node, ast.Attribute):
            return node.attr == attr
        if isinstance(node, ast.Name) and depth < 5:
            if node.id not in self.aliases(attr):
                return False
            if not hasattr(node, "_pd"):
                return node.id == attr
            values = self.resolve(node, {}, None)
            if values == [None]:
                return node.id == attr
            return any(v is not None and self.is_ref(v, attr, depth + 1) for v in values)
        return False

    def where(self, node) -> str:
        if not hasattr(node, "_pd"):
            return f"{self.name} (line {getattr(node, 'lineno', '?')})"
        (index, cell_id), *_ = node._pd
        return f"{self.name} cell {index} (id {cell_id}) line {node.lineno}"

    # --- the claims ---------------------------------------------------------------------------
    def nodes(self):
        for _, _, tree in self.cells:
            yield from ast.walk(tree)

    def claim_calls(self) -> list[ast.Call]:
        return [n for n in self.nodes() if isinstance(n, ast.Call) and self.is_ref(n.func, "Claim")]

    def n_tables(self) -> int:
        return sum(isinstance(n, ast.Call) and _name(n.func) == "claims_table"
                   for n in self.nodes())

    def substitutions(self, call):
        """A {loop variable: literal} per row of the literal lists the enclosing loops run over."""
        options = []
        for loop in call._pd[3]:
            elements = self.elements(loop.iter)
            if elements is not None:
                rows = []
                for element in elements:
                    row: dict = {}
                    self._bind_sub(loop.target, element, row)
                    rows.append(row)
                options.append(rows)
        for combo in itertools.islice(itertools.product(*options), MAX_EXPANSIONS):
            yield {k: v for row in combo for k, v in row.items()}

    def _bind_sub(self, target, value, row):
        if isinstance(target, ast.Name):
            row[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            ok = isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
            for i, t in enumerate(target.elts):
                self._bind_sub(t, value.elts[i] if ok else None, row)

    def defects(self) -> list[str]:
        out = [f"{self.name} {u}: does not parse, so its claims cannot be checked"
               for u in self.unparsable]
        calls = self.claim_calls()
        in_calls = {id(c.func) for c in calls}
        for n in self.nodes():                       # rule 4: Claim is only ever called
            if (isinstance(n, (ast.Name, ast.Attribute)) and isinstance(n.ctx, ast.Load)
                    and id(n) not in in_calls and id(n) not in self.assigned
                    and self.is_ref(n, "Claim")):
                out.append(f"{self.where(n)}: Claim used other than called, so its rows "
                           "cannot be checked")
        self.measurements = {id(m) for c in calls for a in self._args(c)[1:2] if a is not None
                             for m in ast.walk(a)}
        for call in calls:
            claim, measurement, verdict = self._args(call)
            if claim is None or measurement is None or verdict is None:
                out.append(f"{self.where(call)}: Claim(...) without its three arguments spelt "
                           "out (*args / **kwargs), so it cannot be checked")
                continue
            for sub in self.substitutions(call):
                text = self.claim_text(claim, sub, call)
                ctx = dict(sub=sub, at=call._pd[1:2] + (call.lineno, call.col_offset),
                           numbers=_numbers(text), seen=set())
                found = [*self.text(measurement, ctx), *self.verdict_arg(verdict, ctx)]
                out += [f"{self.where(n)}: {msg} (claim {text[:60]!r}, {self.where(call)})"
                        for n, msg in found]
        out += self.verdict_literals()
        return list(dict.fromkeys(out))

    @staticmethod
    def _args(call):
        if any(isinstance(a, ast.Starred) for a in call.args) or \
                any(k.arg is None for k in call.keywords):
            return None, None, None
        kw = {k.arg: k.value for k in call.keywords}
        names = ("claim", "measurement", "verdict")
        return tuple(call.args[i] if i < len(call.args) else kw.get(n)
                     for i, n in enumerate(names))

    def claim_text(self, node, sub, call, depth=0) -> str:
        """The literal text of the claim (its f-string's text parts; names resolved)."""
        if depth > 5 or node is None:
            return ""
        if _str_const(node):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return " ".join(v.value for v in node.values if _str_const(v))
        if isinstance(node, ast.BinOp):
            return self.claim_text(node.left, sub, call, depth + 1) + " " + \
                self.claim_text(node.right, sub, call, depth + 1)
        if isinstance(node, ast.IfExp):
            return self.claim_text(node.body, sub, call, depth + 1) + " " + \
                self.claim_text(node.orelse, sub, call, depth + 1)
        if isinstance(node, ast.Name) and hasattr(node, "_pd"):
            at = call._pd[1:2] + (call.lineno, call.col_offset)
            return " ".join(self.claim_text(v, sub, call, depth + 1)
                            for v in self.resolve(node, sub, at))
        return ""

    # rules 1 and 2 ---------------------------------------------------------------------------
    def text(self, node, ctx, depth=0):
        """(node, defect) for every typed number in a text-valued expression."""
        if node is None or depth > 12:
            return
        key = (id(node), tuple(sorted((k, id(v)) for k, v in ctx["sub"].items())))
        if key in ctx["seen"]:
            return
        ctx["seen"].add(key)
        nums, again = ctx["numbers"], lambda n: self.text(n, ctx, depth + 1)
        if _str_const(node):
            typed = sorted(_numbers(node.value) - nums)
            if DIGIT.search(node.value) and typed:
                yield node, f"typed number(s) {', '.join(typed)} in {node.value!r}"
        elif _typed_number(node):
            yield node, f"typed number {ast.unparse(node)} as the measurement"
        elif isinstance(node, ast.JoinedStr):
            for v in node.values:
                if _str_const(v):
                    typed = sorted(set(DECIMAL.findall(v.value)) - nums)
                    if typed:
                        yield v, f"typed number(s) {', '.join(typed)} in f-string text " \
                                 f"{v.value!r}"
                elif isinstance(v, ast.FormattedValue):
                    yield from self.formatted(v.value, ctx)
                    if _stringy(v.value):
                        yield from again(v.value)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            items = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            for item in items:
                yield from self.formatted(item, ctx)
            if _str_const(node.left):
                yield from again(_like(PERCENT_SPEC.sub("", node.left.value), node.left))
            else:
                yield from again(node.left)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            yield from again(node.left)
            yield from again(node.right)
        elif isinstance(node, ast.IfExp):
            yield from again(node.body)
            yield from again(node.orelse)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                yield from again(v)
        elif isinstance(node, ast.Call):
            yield from self.text_call(node, ctx, again)
        elif isinstance(node, ast.Name) and hasattr(node, "_pd"):
            for v in self.resolve(node, ctx["sub"], ctx["at"]):
                yield from again(v)

    def text_call(self, node, ctx, again):
        f, name = node.func, _name(node.func)
        if isinstance(f, ast.Attribute) and name == "format":
            for a in node.args + [k.value for k in node.keywords]:
                yield from self.formatted(a, ctx)
            receiver = f.value
            if _str_const(receiver):
                receiver = _like(BRACE_FIELD.sub("", receiver.value), receiver)
            yield from again(receiver)
        elif isinstance(f, ast.Attribute) and name == "join" and len(node.args) == 1:
            yield from again(f.value)
            arg = node.args[0]
            if isinstance(arg, (ast.GeneratorExp, ast.ListComp, ast.SetComp)):
                yield from again(arg.elt)
            elif isinstance(arg, (ast.List, ast.Tuple)):
                for e in arg.elts:
                    yield from again(e)
        elif isinstance(f, ast.Attribute) and isinstance(f.value, (ast.Constant, ast.JoinedStr)):
            yield from again(f.value)                     # "FID 48.6".upper()
        elif name in FORMATTERS and node.args:
            yield from self.formatted(node.args[0], ctx)
            if _stringy(node.args[0]):
                yield from again(node.args[0])
        elif isinstance(f, ast.Name) and hasattr(f, "_pd"):   # a helper defined in the notebook
            for fn in self.resolve(f, ctx["sub"], ctx["at"]):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for r in self._returns(fn):
                        yield from again(r)

    @staticmethod
    def _returns(fn):
        stack = list(fn.body)
        while stack:
            st = stack.pop()
            if isinstance(st, ast.Return) and st.value is not None:
                yield st.value
            elif not isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stack += [c for c in ast.iter_child_nodes(st) if isinstance(c, ast.stmt)]
                stack += [s for h in getattr(st, "handlers", []) for s in h.body]

    def formatted(self, node, ctx):
        """A value formatted into the text must not be a typed number (nor a variable holding
        only one that nothing but the claims reads)."""
        if isinstance(node, ast.Name) and hasattr(node, "_pd") and self.scope_of(node) is None:
            node = ctx["sub"].get(node.id) or node
        if _typed_number(node):
            yield node, f"typed number {ast.unparse(node)} formatted into the text"
        elif isinstance(node, ast.Name) and hasattr(node, "_pd"):
            binds = [b for s in self.bindings.values() for b in s.get(node.id, [])]
            reads = [n for n in self.nodes() if isinstance(n, ast.Name) and n.id == node.id
                     and isinstance(n.ctx, ast.Load)]
            if binds and all(b.value is not None and _typed_number(b.value) for b in binds) and \
                    all(id(n) in self.measurements for n in reads):
                shown = ", ".join(ast.unparse(b.value) for b in binds)
                yield node, f"{node.id} holds only the typed number {shown} and only the " \
                            "claims table reads it"

    # rule 3 ----------------------------------------------------------------------------------
    def verdict_arg(self, node, ctx, depth=0):
        """The verdict of a row must be a verdict object, not text."""
        if node is None or depth > 8:
            return
        if _str_const(node) or isinstance(node, ast.JoinedStr):
            yield node, "verdict typed as text"
        elif isinstance(node, ast.IfExp):
            yield from self.verdict_arg(node.body, ctx, depth + 1)
            yield from self.verdict_arg(node.orelse, ctx, depth + 1)
        elif isinstance(node, ast.Name) and hasattr(node, "_pd"):
            for v in self.resolve(node, ctx["sub"], ctx["at"]):
                yield from self.verdict_arg(v, ctx, depth + 1)

    def verdict_literals(self) -> list[str]:
        """Every Verdict(...) the notebook writes: a typed word only for 'inconclusive' or
        'not testable', and then with a reason (and rule) that types no number."""
        out = []
        for n in self.nodes():
            if not isinstance(n, ast.Call):
                continue
            kw = {k.arg: k.value for k in n.keywords}
            if self.is_ref(n.func, "Verdict"):
                if any(isinstance(a, ast.Starred) for a in n.args) or None in kw:
                    out.append(f"{self.where(n)}: Verdict(*args) cannot be checked")
                    continue
                args = [n.args[i] if i < len(n.args) else kw.get(k)
                        for i, k in enumerate(("word", "reason", "rule"))]
            elif "word" in kw:                            # dataclasses.replace(v, word="held")
                args = [kw["word"], kw.get("reason"), kw.get("rule")]
            else:
                continue
            words = self.resolve(args[0], {}, None) if isinstance(args[0], ast.Name) \
                and args[0].id != "NOT_TESTABLE" else [args[0]]
            typed = [w.value for w in words if _str_const(w)]
            bad = [w for w in typed if w.strip().lower() not in TYPED_WORDS_ALLOWED]
            if bad:
                out.append(f"{self.where(n)}: verdict {bad[0]!r} typed, not computed by a rule")
            elif typed or _name(args[0]) == "NOT_TESTABLE":
                ctx = dict(sub={}, at=None, numbers=set(), seen=set())
                for part in args[1:]:
                    out += [f"{self.where(m)}: {msg} in the reason of a typed "
                            f"{(typed or [NOT_TESTABLE])[0]!r} verdict"
                            for m, msg in self.text(part, ctx)]
        return out


@lru_cache(maxsize=None)
def _notebook(path: Path) -> Notebook:
    return Notebook.read(path)


def _check(*sources: str) -> list[str]:
    return Notebook.from_sources(*sources).defects()


# --- the checker on small sources ---------------------------------------------------------------
TYPED, FORMATTED, VERDICT = "typed number(s) 48.6 in", "typed number 48.6 formatted", "typed, not"
FLAGGED = [     # (source, what the defect says)
    ('results.Claim("FID is low", "FID 48.6", v)', TYPED),
    ('results.Claim("FID is low", f"FID {48.6:.1f}", v)', FORMATTED),
    ('results.Claim("FID is low", "FID %.2f" % 0.5, v)', "typed number 0.5 formatted"),
    ('results.Claim("FID is low", "%.2f" % (0.5,), v)', "typed number 0.5 formatted"),
    ('results.Claim("FID is low", "FID {}".format(48.6), v)', FORMATTED),
    ('results.Claim("FID is low", "FID " + str(48.6), v)', FORMATTED),
    ('results.Claim("FID is low", "FID 48.6" if ok else f"FID {fid:.1f}", v)', TYPED),
    ('results.Claim("FID is low", f"FID {-48.6:.1f}", v)', "typed number -48.6 formatted"),
    ('results.Claim("FID is low", f"FID 48.6 against {fid[\'b\']:.1f}", v)', "f-string text"),
    ('results.Claim(claim="FID is low", measurement="FID 48.6", verdict=v)', TYPED),
    ('results.Claim("FID is low", 48.6, v)', "typed number 48.6 as the measurement"),
    ('results.Claim("FID is low", ", ".join(f"{k} {48.6}" for k in ks), v)', FORMATTED),
    ('results.Claim("2×2 halves memory (target ≤ 0.5×)", "target 0.3×", v)', "number(s) 0.3 in"),
    ('C = results.Claim\nC("FID is low", "FID 48.6", v)', TYPED),
    ('from pdlib.book.results import Claim as C\nC("FID is low", "FID 48.6", v)', TYPED),
    ('for c, m in [("a", "FID 48.6"), ("b", f"{x}")]:\n'
     '    claims.append(results.Claim(c, m, v))', TYPED),
    ('for c, f in [("a", 48.6)]:\n    claims.append(results.Claim(c, f"FID {f:.1f}", v))',
     FORMATTED),
    ('def vs(a, b):\n    return f"FID {48.6:.1f} against {fid[b]:.1f}"\n'
     'results.Claim("FID is low", vs("a", "b"), v)', FORMATTED),
    ('what = "FID 48.6"\nresults.Claim("FID is low", what, v)', TYPED),
    ('fid_a = 48.6\nresults.Claim("FID is low", f"FID {fid_a:.1f}", v)',
     "fid_a holds only the typed number 48.6"),
    ('results.Claim("FID is low", f"{fid:.1f}", results.Verdict("held", "below 50"))',
     "verdict 'held' " + VERDICT),
    ('results.Claim("FID is low", f"{fid:.1f}", Verdict("did not hold"))', VERDICT),
    ('results.Claim("FID is low", f"{fid:.1f}", results.Verdict(word="partly"))', VERDICT),
    ('results.Claim("FID is low", f"{fid:.1f}", "held")', "verdict typed as text"),
    ('results.Claim("FID is low", f"{fid:.1f}", dataclasses.replace(v, word="held"))', VERDICT),
    ('V, C = results, results.Claim\nC("FID is low", f"{fid:.1f}", V.Verdict("held"))', VERDICT),
    ('v = results.Verdict("held")\nresults.Claim("FID is low", f"{fid:.1f}", v)', VERDICT),
    ('w = "held"\nresults.Claim("FID is low", f"{fid:.1f}", results.Verdict(w, "ok"))', VERDICT),
    ('results.Claim("FID is low", f"{fid:.1f}", results.Verdict(results.NOT_TESTABLE, "FID 48.6"))',
     "in the reason of a typed 'not testable"),
    ('results.Claim("FID is low", f"{fid:.1f}", results.Verdict("inconclusive", f"{2.5:.1f}"))',
     "in the reason of a typed 'inconclusive'"),
    ('claims = list(map(results.Claim, rows))', "Claim used other than called"),
    ('claims = [results.Claim(*row) for row in rows]', "without its three arguments"),
    ('results.Claim("x", f"{a:.1f}", v) +', "does not parse"),
]


@pytest.mark.parametrize("source, defect", FLAGGED,
                         ids=[s.splitlines()[-1][:50] for s, _ in FLAGGED])
def test_checker_flags_typed_numbers(source, defect):
    found = _check(source)
    assert any(defect in d for d in found), f"{source!r} not flagged for {defect!r}: {found}"


@pytest.mark.parametrize("source", [
    'results.Claim("FID is low", f"{fid[\'a\']:.1f}", ch07.better_verdict(fid["a"], fid["b"]))',
    'results.Claim("2×2 tiles halve memory (target ≤ 0.5×)", "target 0.5×", v)',
    'results.Claim("2×2 tiles halve memory (target ≤ 0.5×)", f"0.5× target, {r:.2f}×", v)',
    'results.Claim("p = 0.5 is close", "mean FID real_p " f"0.5 {m[0.5]:.1f}", v)',
    'results.Claim("params", f"{n / 1e6:.1f}M against {m / 1e6:.1f}M", v)',
    'results.Claim("costs", f"{res}² ÷ {res // 4}²: " + ", ".join(f"×{v:.2f}" for v in r), v)',
    'results.Claim("x", "all tiles in one forward pass (N²)", v)',
    'results.Claim("x", "%.2f" % ratio, v)',
    'results.Claim("x", "{:.1f}".format(fid), v)',
    'results.Claim("x", ("not reached" if r is None else f"{r:.2f}×"), v)',
    'results.Claim("x", results.ranking(trunc, sigma), judge(better, "a", "b", labels))',
    'def vs(a, b):\n    return f"{key} {fid[a]:.1f} against {fid[b]:.1f}"\n'
    'results.Claim("relay beats EDM", vs("r9-9", "edm-s18"), v)',
    'def pair(a, b):\n    if a not in ev:\n'
    '        return results.Verdict("inconclusive", f"{a} not run")\n'
    '    return ch06.better_verdict(ev[a], ev[b])\n'
    'results.Claim("x", f"{ev[\'a\']:.1f}", pair("a", "b"))',
    'results.Claim("x", f"{fid:.1f}", results.Verdict(results.NOT_TESTABLE, "no model passes"))',
    'C = results.Claim\nclaims = [C("x", f"{fid:.1f}", v)]',
    'for th in (True, False):\n    claims.append(results.Claim(\n'
    '        f"w = 1.5 ({\'with\' if th else \'without\'})", f"{f[1.5, th]:.1f}", g[th]))',
    'steps = 100\ntrain(model, steps)\nresults.Claim("x", f"{steps} steps each", v)',
    '%matplotlib inline\n!ls\nresults.Claim("x", f"{fid:.1f}", v)',
    'x = "seed 0"\nresults.Claim("x", ", ".join(x for x in labels), v)',
    'f = 0.5\nfor f in (1, 2):\n    results.Claim("x", (lambda f: f"{f:.1f}")(fids), v)',
    'for claim, what, v in [("GCC helps", "with and without GCC", pair("a", "b"))]:\n'
    '    claims.append(results.Claim(claim, what, v))',
], ids=lambda s: s.splitlines()[-1][:40])
def test_checker_passes_computed_numbers(source):
    assert _check(source) == []


def test_checker_counts_every_claim_call():
    nb = Notebook.from_sources('C = results.Claim\nclaims = [C("a", x, v)]',
                               'claims.append(results.Claim("b", y, w))\n'
                               'display(results.claims_table(claims))')
    assert len(nb.claim_calls()) == 2 and nb.n_tables() == 1
    assert Notebook.from_sources("C = 3\nC(1, 2)").claim_calls() == []


# --- the notebooks --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_claims_table_numbers_are_not_typed(path):
    nb = _notebook(path)
    calls, tables = nb.claim_calls(), nb.n_tables()
    if path.name[:2] in CLAIMS_CHAPTERS:
        assert tables, f"{path.name}: no results.claims_table(...) call found"
    if tables:
        assert calls, f"{path.name}: a claims table but no Claim(...) call found"
    defects = nb.defects()
    assert not defects, f"{len(defects)} typed number(s) or verdict(s) in the claims of " \
                        f"{path.name} ({len(calls)} Claim calls):\n" + "\n".join(defects)
