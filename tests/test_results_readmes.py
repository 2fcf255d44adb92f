"""Every command a results README gives (results/*/README.md) runs as written on a fresh clone.

The commands are the ```bash blocks of each README (backslash continuations joined, comments
dropped, `&&` and `;` split, simple `for` loops expanded), and, in results/weights/README.md,
the inline `python -m pdlib.pretrained ...` commands of its table.

Static checks (fast, always run), each failure naming the README, its line and the problem:

- every program exists: `.venv/bin/papermill` (and requirements.txt installs papermill),
  `.venv/bin/python`, the scripts and modules given to python, the notebooks given to papermill;
- every `-p NAME VALUE` (also -r/-y) given to papermill is a parameter of that notebook (the
  assignments of its cell tagged `parameters`), and every option a papermill option;
- every command line given to a script or `python -m` module is accepted by its argparse parser
  (one subprocess parses them all, stopping each program right after parse_args: nothing runs);
- the files and folders each block needs exist when it needs them, following the block command
  by command from a fresh clone (the files git tracks or would add; no runs/, no data/):
  `mkdir` creates folders; papermill writes its output notebook but does NOT create its folder
  (the bug this file was written for); the experiment notebooks write what they are known to
  write (train.ipynb: out_dir/config.json, metrics.jsonl, latest.pt, ckpt-NNNNNNN.pt at every
  ckpt_every and at the end, samples/NNNNNNN.png at every sample_every and at the end;
  evaluate.ipynb: out_json and out_grid, creating their folders); the checkpoints evaluate.ipynb
  reads and the sources `cp` copies must be in the clone or written by an earlier command, and
  cp's destination folder must exist;
- weights README: each export's --reference is a JSON object, its output is a committed file,
  and its checkpoint is written by a documented training (a README's train.ipynb out_dir, or a
  train job of a scripts/run_*_full.py).

Quick runs (marked slow): the READMEs' commands in their quick form, run in a temporary copy of
the checkout (scripts/, notebooks/experiments/, results/ without the weights, .venv and the data
linked; PDLIB_DATA points into the copy, so the FID reference cache is written there too; pdlib
itself is this checkout's, through the editable install). Nothing in the repository is written
(checked). Per README (see QUICK):

- baseline: both papermill commands and both cp, with the sizes shrunk (2 training steps of batch
  8, 8 samples against 8 reference images); every file the static model says the block writes
  must then exist (which checks that model too);
- ch03/ch05/ch06/ch07_full: the command with `--list`, then the command with `--only` its first
  training job and the script's own environment settings shrunk (STEPS, MINUTES...); the
  evaluations are not run (each evaluates against 1,000 reference images through Inception: minutes
  of one thread, whatever the sample count);
- ch08_full: the first command with 8 images per set and `--only seams` (its other jobs spend
  1-3 minutes in 2048-dimensional Frechet distances even at 8 images); the second command
  (`--only models`) statically only, for the same reason;
- weights: `python -m pdlib.pretrained list`, and each export command whose checkpoint the quick
  runs above have written (at least chapter 7's stage 1, trained here if needed).
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
PYTHON = BIN / "python"
READMES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("results/*/README.md"))
TRAIN_NB = "notebooks/experiments/train.ipynb"
EVAL_NB = "notebooks/experiments/evaluate.ipynb"
TIMEOUT_S = 300                      # one quick command


# --------------------------------------------------------------------------------------------
# Parsing: README -> blocks -> commands

class ParseError(ValueError):
    pass


@dataclass
class Command:
    readme: str                      # e.g. results/baseline/README.md
    line: int                        # 1-based line of the command in the README
    text: str                        # the logical line it came from (continuations joined)
    argv: list[str]
    env: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.readme}:{self.line}"

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""


FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_LANGS = {"bash", "sh", "shell"}
SPLIT = {"&&", ";"}
KEYWORDS = {"while", "until", "if", "then", "else", "elif", "fi", "case", "esac", "function",
            "cd", "pushd", "popd", "export", "source", ".", "eval", "exec"}
ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
THREAD_VARS = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PDLIB_DATA",
               "PDLIB_QUICK", "CUDA_VISIBLE_DEVICES", "PYTHONHASHSEED"}


def bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """The ```bash (sh, shell) fenced blocks: (1-based README line of the first body line, lines)."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, j = m.group(1), m.group(2).lower(), i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        if lang in SHELL_LANGS:
            out.append((i + 2, lines[i + 1:j]))
        i = j + 1
    return out


def _tokens(text: str) -> list[str]:
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        return list(lex)
    except ValueError as e:                      # e.g. "No closing quotation"
        raise ParseError(f"`{text.strip()}`: {e}") from None


def logical_lines(first: int, body: list[str]) -> list[tuple[int, str]]:
    """(line, text) of each logical line: backslash continuations joined; blank and comment-only
    lines dropped; a multi-line `for ...; do ... done` joined into one line."""
    out, buf, start = [], [], None
    for k, raw in enumerate(body):
        if start is None:
            start = first + k
        stripped = raw.rstrip()
        if stripped.endswith("\\") and not stripped.lstrip().startswith("#"):
            buf.append(stripped[:-1])
            continue
        buf.append(raw)
        out.append((start, " ".join(buf)))
        buf, start = [], None
    if buf:
        out.append((start, " ".join(buf)))
    joined, pending = [], None
    for line, text in out:
        toks = _tokens(text)
        if not toks:
            continue
        if pending is not None:                       # inside a multi-line for loop
            pending = (pending[0], pending[1] + " ; " + text)
            if toks[-1] == "done":
                joined.append(pending)
                pending = None
            continue
        if toks[0] == "for" and "done" not in toks:
            pending = (line, text)
            continue
        joined.append((line, text))
    if pending is not None:
        raise ParseError(f"line {pending[0]}: a `for` loop without its `done`")
    return joined


def _split(tokens: list[str], line: int) -> list[list[str]]:
    parts, cur = [], []
    for t in tokens:
        if t in SPLIT:
            if cur:
                parts.append(cur)
            cur = []
        elif t and set(t) <= set("();<>|&"):
            raise ParseError(f"line {line}: `{t}` (pipes, redirections, subshells, background "
                             "jobs) is not understood by tests/test_results_readmes.py; write the "
                             "command without it, or teach the test")
        else:
            cur.append(t)
    if cur:
        parts.append(cur)
    return parts


def _expand_for(tokens: list[str], line: int) -> list[list[str]]:
    """`for V in W1 W2 ...; do BODY; done` -> BODY once per word, $V / ${V} substituted."""
    try:
        var, in_kw = tokens[1], tokens[2]
        do = tokens.index("do")
    except (IndexError, ValueError):
        raise ParseError(f"line {line}: a `for` loop not of the form "
                         "`for V in WORDS; do COMMANDS; done`") from None
    if in_kw != "in" or tokens[-1] != "done" or tokens[do - 1] != ";":
        raise ParseError(f"line {line}: a `for` loop not of the form `for V in WORDS; do COMMANDS; done`")
    words, body = tokens[3:do - 1], tokens[do + 1:-1]
    out = []
    for w in words:
        sub = [re.sub(r"\$\{%s\}|\$%s\b" % (var, var), w, t) for t in body]
        out.extend(_split(sub, line))
    return out


def _commands(tokens: list[str], line: int) -> list[list[str]]:
    """A logical line's commands: split at `&&` and `;`, each `for ... done` expanded."""
    out, start, i = [], 0, 0
    while i < len(tokens):
        if tokens[i] == "for" and (i == 0 or tokens[i - 1] in SPLIT):
            out += _split(tokens[start:i], line)
            try:
                end = tokens.index("done", i)
            except ValueError:
                raise ParseError(f"line {line}: a `for` loop without its `done`") from None
            out += _expand_for(tokens[i:end + 1], line)
            start = i = end + 1
        else:
            i += 1
    return out + _split(tokens[start:], line)


def parse_commands(text: str, readme: str) -> list[list[Command]]:
    """The commands of each ```bash block of a README's text, block by block."""
    blocks = []
    for first, body in bash_blocks(text):
        cmds = []
        for line, logical in logical_lines(first, body):
            for part in _commands(_tokens(logical), line):
                env = {}
                while part and ASSIGN.match(part[0]):
                    k, v = part.pop(0).split("=", 1)
                    env[k] = v
                if not part:
                    raise ParseError(f"{readme}:{line}: an assignment without a command "
                                     "(a shell variable the test cannot follow)")
                if part[0] in KEYWORDS or part[0] in ("for", "do", "done"):
                    raise ParseError(f"{readme}:{line}: `{part[0]}` is not understood by "
                                     "tests/test_results_readmes.py; write the commands out, or teach the test")
                bad = [t for t in part if "$" in t or "`" in t]
                if bad:
                    raise ParseError(f"{readme}:{line}: {bad[0]!r}: shell variables and command "
                                     "substitution are not understood by tests/test_results_readmes.py")
                cmds.append(Command(readme, line, " ".join(logical.split()), part, env))
        blocks.append(cmds)
    return blocks


INLINE = re.compile(r"`((?:\.venv/bin/)?python3? (?:-m |scripts/)[^`]+)`")


def inline_commands(text: str, readme: str) -> list[Command]:
    """Commands given as inline code (`python -m ...`, `python scripts/...`) outside fences."""
    out, in_fence = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            for m in INLINE.finditer(line):
                out.append(Command(readme, n, m.group(1), _tokens(m.group(1))))
    return out


def readme_text(readme: str) -> str:
    return (ROOT / readme).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# What a fresh clone holds, notebooks' parameters, papermill's command line

def _clone_files() -> frozenset[str]:
    r = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       cwd=ROOT, capture_output=True, text=True, check=True)
    return frozenset(f for f in r.stdout.split("\0") if f and (ROOT / f).is_file())


try:
    CLONE_FILES = _clone_files()
except (OSError, subprocess.CalledProcessError):         # not a git checkout: what is on disk
    CLONE_FILES = frozenset(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                            if p.is_file() and ".venv" not in p.parts and "runs" not in p.parts)


def _norm(path: str, cwd: str = ".") -> str:
    if os.path.isabs(path):
        return os.path.normpath(path)
    return os.path.normpath(os.path.join(cwd, path)).replace(os.sep, "/")


def _parents(path: str):
    p = os.path.dirname(path)
    while p and p != "/":
        yield p
        p = os.path.dirname(p)


class Tree:
    """The files and folders of a checkout as a block's commands see them, relative to ROOT."""

    def __init__(self, files):
        self.files, self.dirs = set(files), {"."}
        for f in self.files:
            self.dirs.update(_parents(f))

    def add_dir(self, d: str):
        self.dirs.add(d)
        self.dirs.update(_parents(d))

    def add_file(self, f: str):
        self.files.add(f)
        self.dirs.update(_parents(f))

    def is_dir(self, d: str) -> bool:
        return d in ("", ".") or d in self.dirs

    def parent_ok(self, f: str) -> bool:
        return self.is_dir(os.path.dirname(f) or ".")


_NB_PARAMS: dict[str, dict] = {}


def notebook_parameters(nb_path: str) -> dict:
    """{name: default} of the cell tagged `parameters` (defaults that are not literals: None)."""
    if nb_path not in _NB_PARAMS:
        import nbformat
        nb = nbformat.read(str(ROOT / nb_path), as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        if not cells:
            raise LookupError(f"{nb_path} has no cell tagged `parameters`")
        params = {}
        for node in ast.parse(cells[0].source).body:
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                if isinstance(t, ast.Name):
                    try:
                        params[t.id] = ast.literal_eval(node.value) if node.value is not None else None
                    except ValueError:
                        params[t.id] = None
        _NB_PARAMS[nb_path] = params
    return _NB_PARAMS[nb_path]


def _papermill_options() -> dict[str, tuple[str, int]]:
    """{'-p': ('parameters', 2), '--cwd': ('cwd', 1), '--log-output': ('log_output', 0), ...}"""
    from papermill.cli import papermill as cli
    opts = {}
    for p in cli.params:
        if p.param_type_name != "option":
            continue
        n = 0 if p.is_flag else p.nargs
        for o in [*p.opts, *p.secondary_opts]:
            opts[o] = (p.name, n)
    return opts


def _resolve_type(value: str):
    try:
        from papermill.cli import _resolve_type as resolve
    except ImportError:                                   # papermill's rule, should it move
        def resolve(v):
            if v in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[v]
            for cast in (int, float):
                try:
                    return cast(v)
                except ValueError:
                    pass
            return v
    return resolve(value)


@dataclass
class PapermillCall:
    notebook: str
    output: str
    params: dict
    cwd: str | None
    problems: list[str]
    options: list[tuple[str, list[str]]]       # (option, its values) in order, for rewriting


def parse_papermill(cmd: Command) -> PapermillCall:
    import yaml
    opts, problems = _papermill_options(), []
    pos, params, cwd, seq, args, i = [], {}, None, [], cmd.argv[1:], 0
    while i < len(args):
        a = args[i]
        if a.startswith("-") and a != "-":
            name, _, inline = a.partition("=")
            if name not in opts:
                problems.append(f"{cmd.where}: `{a}` is not an option of papermill")
                i += 1
                continue
            dest, n = opts[name]
            vals = [inline] if inline and n == 1 else args[i + 1:i + 1 + n]
            if len(vals) < n:
                problems.append(f"{cmd.where}: papermill's `{name}` takes {n} value(s)")
                break
            i += 1 + (0 if inline and n == 1 else n)
            seq.append((name, vals))
            try:
                if dest == "parameters":
                    params[vals[0]] = _resolve_type(vals[1])
                elif dest == "parameters_raw":
                    params[vals[0]] = vals[1]
                elif dest == "parameters_yaml":
                    params.update(yaml.safe_load(vals[0]) or {})
                elif dest == "parameters_file":
                    params.update(yaml.safe_load((ROOT / vals[0]).read_text()) or {})
                elif dest == "parameters_base64":
                    import base64
                    params.update(yaml.safe_load(base64.b64decode(vals[0])) or {})
                elif dest == "cwd":
                    cwd = vals[0]
            except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as e:
                problems.append(f"{cmd.where}: papermill's `{name} {' '.join(vals)}` cannot be read: {e}")
        else:
            pos.append(a)
            seq.append(("", [a]))
            i += 1
    if len(pos) != 2:
        problems.append(f"{cmd.where}: papermill takes an input and an output notebook, here "
                        f"{len(pos)} positional argument(s): {pos}")
        pos = (pos + ["", ""])[:2]
    return PapermillCall(pos[0], pos[1], params, cwd, problems, seq)


# --------------------------------------------------------------------------------------------
# Static checks: programs, parameters, and the files and folders each block needs

def _is_papermill(prog: str) -> bool:
    return os.path.basename(prog) == "papermill"


def _is_python(prog: str) -> bool:
    return re.fullmatch(r"(\.venv/bin/)?python(3(\.\d+)?)?", prog) is not None


def python_target(cmd: Command) -> tuple[str, str, list[str]] | None:
    """('script', 'scripts/x.py', argv) or ('module', 'pdlib.pretrained', argv); None: not understood."""
    args, i = cmd.argv[1:], 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] == "-m":
            return ("module", args[i + 1], args[i + 2:]) if i + 1 < len(args) else None
        if args[i] in ("-X", "-W"):
            i += 1
        elif args[i] == "-c":
            return None
        i += 1
    return ("script", args[i], args[i + 1:]) if i < len(args) else None


def _module_file(module: str) -> str | None:
    base = module.replace(".", "/")
    for cand in (f"{base}.py", f"{base}/__main__.py"):
        if cand in CLONE_FILES:
            return cand
    return None


def check_program(cmd: Command) -> list[str]:
    """The program exists (and is installed by the project's setup); its script/module/notebook exists."""
    prog, problems = cmd.program, []
    if _is_papermill(prog):
        if prog != ".venv/bin/papermill":
            problems.append(f"{cmd.where}: `{prog}`: the READMEs run papermill as .venv/bin/papermill "
                            "(the environment `make venv` sets up)")
        if not (BIN / "papermill").is_file():
            problems.append(f"{cmd.where}: .venv/bin/papermill does not exist")
        if not re.search(r"(?m)^papermill==", (ROOT / "requirements.txt").read_text()):
            problems.append(f"{cmd.where}: papermill is not in requirements.txt, so `make venv` "
                            "does not install .venv/bin/papermill")
        call = parse_papermill(cmd)
        if call.notebook and call.notebook not in CLONE_FILES:
            problems.append(f"{cmd.where}: papermill's input notebook {call.notebook} is not in the repository")
    elif _is_python(prog):
        if prog.startswith(".venv/") and not PYTHON.is_file():
            problems.append(f"{cmd.where}: .venv/bin/python does not exist")
        target = python_target(cmd)
        if target is None:
            problems.append(f"{cmd.where}: `{cmd.text}`: no script or -m module the test understands")
        elif target[0] == "script":
            if _norm(target[1]) not in CLONE_FILES:
                problems.append(f"{cmd.where}: the script {target[1]} is not in the repository")
            else:
                src = (ROOT / target[1]).read_text()
                for var in cmd.env:
                    if var not in THREAD_VARS and f'"{var}"' not in src and f"'{var}'" not in src:
                        problems.append(f"{cmd.where}: {target[1]} does not read the environment "
                                        f"variable {var} the README sets")
        elif _module_file(target[1]) is None:
            problems.append(f"{cmd.where}: the module {target[1]} is not in the repository")
    elif prog == "bash":
        script = cmd.argv[1] if len(cmd.argv) > 1 else ""
        if not re.fullmatch(r"scripts/[\w.-]+\.sh", _norm(script)) or _norm(script) not in CLONE_FILES:
            problems.append(f"{cmd.where}: `bash {script}`: the READMEs run bash only on a script "
                            "scripts/*.sh of the repository")
        else:
            src = (ROOT / _norm(script)).read_text()
            for var in cmd.env:
                if var not in THREAD_VARS and not re.search(rf"\$\{{?{var}\b", src):
                    problems.append(f"{cmd.where}: {script} does not read the environment "
                                    f"variable {var} the README sets")
    elif prog in ("mkdir", "cp"):
        if shutil.which(prog) is None:
            problems.append(f"{cmd.where}: `{prog}` is not installed")
    else:
        problems.append(f"{cmd.where}: `{prog}` is a program tests/test_results_readmes.py does not "
                        "know; teach it what the program needs and writes")
    return problems


def check_papermill_parameters(cmd: Command) -> list[str]:
    call = parse_papermill(cmd)
    problems = list(call.problems)
    if not call.notebook or call.notebook not in CLONE_FILES:
        return problems
    try:
        known = notebook_parameters(call.notebook)
    except LookupError as e:
        return problems + [f"{cmd.where}: {e}: papermill cannot set its parameters"]
    for name in call.params:
        if name not in known:
            problems.append(f"{cmd.where}: `-p {name}` is not a parameter of {call.notebook} "
                            f"(its parameters cell has: {', '.join(known)})")
    return problems


def _train_writes(params: dict, cwd: str) -> tuple[list[str], list[str]]:
    """(folders, files) train.ipynb writes; counts from its parameters, defaults from its cell."""
    p = {**notebook_parameters(TRAIN_NB), **params}
    out = _norm(p.get("out_dir") or "runs/train", cwd)
    files = [f"{out}/{f}" for f in ("config.json", "metrics.jsonl", "latest.pt")]
    steps, every, ckpt = p.get("steps"), p.get("sample_every"), p.get("ckpt_every")
    if p.get("max_minutes") is None and isinstance(steps, int) and steps > 0:
        # a run that may stop early (max_minutes) has checkpoints and grids at unknown steps
        def at(every):            # every `every` steps (0: none), and at the end
            return sorted({*(range(every, steps + 1, every) if every > 0 else ()), steps})
        if isinstance(ckpt, int):
            files += [f"{out}/ckpt-{k:07d}.pt" for k in at(ckpt)]
        if isinstance(every, int) and p.get("method") != "relay":    # a relay stage 2 draws no grid
            files += [f"{out}/samples/{k:07d}.png" for k in at(every)]
    return [out, f"{out}/samples"], files


def _eval_reads_writes(params: dict, cwd: str) -> tuple[list[str], list[str]]:
    p = {**notebook_parameters(EVAL_NB), **params}
    ck = p.get("checkpoint") or "runs/train/latest.pt"
    reads = [_norm(c, cwd) for c in (ck if isinstance(ck, list) else [ck])]
    writes = [_norm(p.get("out_json") or "runs/train/eval.json", cwd),
              _norm(p.get("out_grid") or "runs/train/eval_samples.png", cwd)]
    return reads, writes


def simulate(block: list[Command], tree: Tree | None = None) -> tuple[list[str], list[str]]:
    """Follow a block command by command from a fresh clone: (problems, files the block writes)."""
    tree = tree or Tree(CLONE_FILES)
    problems, written = [], []

    def write(f):
        tree.add_file(f)
        written.append(f)

    for cmd in block:
        prog, args = cmd.program, cmd.argv[1:]
        if prog == "mkdir":
            parents = any(a in ("-p", "--parents") for a in args)
            for d in (_norm(a) for a in args if not a.startswith("-")):
                if not parents and not tree.parent_ok(d):
                    problems.append(f"{cmd.where}: `mkdir {d}` without -p: {os.path.dirname(d)}/ does not exist")
                tree.add_dir(d)
        elif prog == "cp":
            recursive = any(a in ("-r", "-R", "-a", "--recursive", "--archive") or
                            (re.fullmatch(r"-[A-Za-z]+", a) and set("rRa") & set(a)) for a in args)
            paths = [a for a in args if not a.startswith("-")]
            if len(paths) < 2:
                problems.append(f"{cmd.where}: cp needs a source and a destination")
                continue
            *srcs, dest = paths
            for s in srcs:
                ns = _norm(s)
                if ns not in tree.files and not (recursive and tree.is_dir(ns)):
                    problems.append(f"{cmd.where}: cp's source {s} is neither in a fresh clone nor "
                                    "written by an earlier command of this block")
            nd = _norm(dest)
            into_dir = dest.endswith("/") or len(srcs) > 1 or tree.is_dir(nd)
            if into_dir and not tree.is_dir(nd):
                problems.append(f"{cmd.where}: cp's destination folder {dest} does not exist "
                                "(not in a fresh clone, and no earlier command creates it)")
            elif not into_dir and not tree.parent_ok(nd):
                problems.append(f"{cmd.where}: cp's destination {dest}: its folder "
                                f"{os.path.dirname(nd)}/ does not exist")
            for s in srcs:
                write(f"{nd}/{os.path.basename(_norm(s))}" if into_dir else nd)
        elif _is_papermill(prog):
            call = parse_papermill(cmd)
            problems += [p for p in call.problems if p not in problems]
            out = _norm(call.output)
            if call.output and not tree.parent_ok(out):
                folder = os.path.dirname(out)
                problems.append(
                    f"{cmd.where}: papermill writes its output notebook {call.output} into {folder}/, "
                    f"which is not in a fresh clone and which no earlier command of this block creates "
                    f"(papermill does not create it): add `mkdir -p {folder}` before this command")
            write(out)
            cwd = call.cwd or "."
            if call.notebook == TRAIN_NB:
                init = call.params.get("init_from")
                if init and _norm(init, cwd) not in tree.files:
                    problems.append(f"{cmd.where}: init_from={init} is neither in a fresh clone nor "
                                    "written by an earlier command of this block")
                dirs, files = _train_writes(call.params, cwd)
                for d in dirs:
                    tree.add_dir(d)
                for f in files:
                    write(f)
            elif call.notebook == EVAL_NB:
                reads, writes = _eval_reads_writes(call.params, cwd)
                for r in reads:
                    if r not in tree.files:
                        problems.append(f"{cmd.where}: the checkpoint {r} evaluate.ipynb reads is "
                                        "neither in a fresh clone nor written by an earlier command "
                                        "of this block")
                for f in writes:                              # the notebook makes their folders
                    write(f)
        # python scripts and modules make their own folders (and are checked by running them)
    return problems, written


def blocks_of(readme: str) -> list[list[Command]]:
    return parse_commands(readme_text(readme), readme)


def _ids(readmes):
    return [r.split("/")[1] for r in readmes]


def _need_blocks(readme: str) -> list[list[Command]]:
    blocks = blocks_of(readme)
    if not blocks:
        pytest.skip(f"{readme} has no ```bash block (inline commands: test_weights_inline_commands)")
    return blocks


@pytest.mark.parametrize("readme", READMES, ids=_ids(READMES))
def test_commands_parse(readme):
    """Every ```bash block is commands the test understands, none empty."""
    try:
        blocks = blocks_of(readme)
    except ParseError as e:
        pytest.fail(str(e))
    for b in blocks:
        assert b, f"{readme}: an empty ```bash block"


@pytest.mark.parametrize("readme", READMES, ids=_ids(READMES))
def test_programs_exist(readme):
    problems = [p for b in _need_blocks(readme) for c in b for p in check_program(c)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("readme", READMES, ids=_ids(READMES))
def test_papermill_parameters_exist(readme):
    cmds = [c for b in _need_blocks(readme) for c in b if _is_papermill(c.program)]
    if not cmds:
        pytest.skip(f"{readme} runs no papermill command")
    problems = [p for c in cmds for p in check_papermill_parameters(c)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("readme", READMES, ids=_ids(READMES))
def test_files_and_folders_exist_when_needed(readme):
    problems = [p for b in _need_blocks(readme) for p in simulate(b)[0]]
    assert not problems, "\n".join(problems)


def test_checker_catches_a_missing_output_folder():
    """The bug of the issue: papermill into runs/x/ without `mkdir -p runs/x` first; and a cp of a
    file nothing wrote."""
    text = "\n".join([
        "```bash",
        ".venv/bin/papermill notebooks/experiments/train.ipynb runs/x/train.out.ipynb \\",
        "    -p steps 4 -p out_dir runs/x -p no_such_parameter 1",
        "cp runs/x/samples/0000005.png results/baseline/  # not written: 4 steps",
        "```"])
    [block] = parse_commands(text, "README.md")
    assert [c.line for c in block] == [2, 4] and block[1].argv[-1] == "results/baseline/"
    problems = simulate(block)[0]
    assert any("README.md:2: papermill writes its output notebook runs/x/train.out.ipynb into runs/x/"
               in p and "mkdir -p runs/x" in p for p in problems), problems
    assert any(p.startswith("README.md:4: cp's source runs/x/samples/0000005.png") for p in problems)
    assert "no_such_parameter" in "\n".join(check_papermill_parameters(block[0]))
    fixed = parse_commands(text.replace("```bash\n", "```bash\nmkdir -p runs/x\n")
                           .replace("0000005", "0000004"), "README.md")[0]
    assert simulate(fixed)[0] == []


def test_parser_splits_and_loops():
    text = "```bash\nmkdir -p a && A=1 mkdir -p b; for k in 1 2; do cp x$k y/${k}.txt; done\n```"
    [block] = parse_commands(text, "R")
    assert [(c.argv, c.env) for c in block] == [
        (["mkdir", "-p", "a"], {}), (["mkdir", "-p", "b"], {"A": "1"}),
        (["cp", "x1", "y/1.txt"], {}), (["cp", "x2", "y/2.txt"], {})]
    with pytest.raises(ParseError, match="R:2: .*shell variables"):
        parse_commands("```bash\ncp $HOME/x y\n```", "R")
    with pytest.raises(ParseError, match="`|`"):
        parse_commands("```bash\ncat x | head\n```", "R")


# --------------------------------------------------------------------------------------------
# argparse: every script / module command line, parsed by the program itself (nothing runs)

DRIVER = r'''
import argparse, contextlib, io, json, os, runpy, sys
class _Parsed(BaseException):
    def __init__(self, ns):
        self.ns = ns
_parse = argparse.ArgumentParser.parse_args
def parse_args(self, args=None, namespace=None):
    raise _Parsed(_parse(self, args, namespace))   # parsed (or exited with argparse's error): stop
argparse.ArgumentParser.parse_args = parse_args
req, out, cwd, path = json.load(sys.stdin), {"checks": [], "train_out_dirs": {}}, os.getcwd(), list(sys.path)
for kind, target, argv in req["checks"]:
    err, res = io.StringIO(), {"ok": False}
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            sys.argv = [target, *argv]
            if kind == "script":
                runpy.run_path(target, run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
        res["error"] = ((err.getvalue().strip().splitlines() or [""])[-1]
                        or "the program ended without parsing its command line with argparse")
    except _Parsed as p:
        res = {"ok": True, "args": {k: repr(v) for k, v in vars(p.ns).items()}}
    except SystemExit as e:
        res["error"] = (err.getvalue().strip().splitlines() or [f"exit status {e.code}"])[-1]
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        os.chdir(cwd)
        sys.path[:] = path
    out["checks"].append(res)
argparse.ArgumentParser.parse_args = _parse
for script in req["train_jobs"]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    with contextlib.redirect_stdout(io.StringIO()):
        ns = runpy.run_path(script)                    # not __main__: the definitions only
    if "chains" in ns:                                 # a job-runner script (not run_ch08_full.py)
        out["train_out_dirs"][script] = [j["params"]["out_dir"] for c in ns["chains"]() for j in c
                                         if j["kind"] == "train"]
    sys.path[:] = path
print("\n@@RESULT@@" + json.dumps(out))
'''


def _python_commands() -> list[Command]:
    cmds = [c for r in READMES for b in blocks_of(r) for c in b if _is_python(c.program)]
    cmds += [c for r in READMES for c in inline_commands(readme_text(r), r)]
    return [c for c in cmds if python_target(c) is not None]


def _target(cmd: Command) -> tuple[str, str, list[str]]:
    kind, target, argv = python_target(cmd)
    return kind, (str(ROOT / target) if kind == "script" else target), argv


@pytest.fixture(scope="module")
def argparse_results():
    """{(readme, line, text): result} for every python command of the READMEs; and the train jobs'
    out_dirs of every scripts/run_*_full.py."""
    cmds = _python_commands()
    runners = sorted(f for f in CLONE_FILES if re.fullmatch(r"scripts/run_.*_full\.py", f))
    req = {"checks": [_target(c) for c in cmds], "train_jobs": [str(ROOT / s) for s in runners]}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    r = subprocess.run([str(PYTHON), "-c", DRIVER], input=json.dumps(req), capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=TIMEOUT_S)
    assert r.returncode == 0 and "@@RESULT@@" in r.stdout, f"the argparse driver failed:\n{r.stderr[-3000:]}"
    out = json.loads(r.stdout.split("@@RESULT@@")[-1])
    checks = {(c.readme, c.line, c.text): res for c, res in zip(cmds, out["checks"])}
    jobs = {os.path.relpath(k, ROOT): v for k, v in out["train_out_dirs"].items()}
    return checks, jobs


@pytest.mark.parametrize("readme", READMES, ids=_ids(READMES))
def test_script_options_accepted(readme, argparse_results):
    """Each command line given to a script or module is accepted by its argparse parser."""
    checks, _ = argparse_results
    mine = {k: v for k, v in checks.items() if k[0] == readme}
    if not mine:
        pytest.skip(f"{readme} gives no python command")
    problems = [f"{r}:{line}: `{text}`: its parser refuses it: {res['error']}"
                for (r, line, text), res in mine.items() if not res["ok"]]
    assert not problems, "\n".join(problems)


def _weights_commands() -> list[Command]:
    return [c for c in inline_commands(readme_text("results/weights/README.md"), "results/weights/README.md")]


@pytest.mark.skipif("results/weights/README.md" not in READMES, reason="no results/weights/README.md")
def test_weights_inline_commands(argparse_results):
    """Each `python -m pdlib.pretrained export CKPT OUT --reference JSON` of the weights table: the
    module exists, its parser takes the line, --reference is a JSON object, OUT is committed, and
    CKPT is written by a documented training."""
    _, jobs = argparse_results
    cmds = _weights_commands()
    exports = [c for c in cmds if python_target(c) and python_target(c)[2][:1] == ["export"]]
    assert exports and any(python_target(c)[2] == ["list"] for c in cmds), \
        "results/weights/README.md: expected its export commands and `python -m pdlib.pretrained list`"
    # the trainings the READMEs and the full-run scripts document
    trained = {d: f"scripts/{os.path.basename(s)}" for s, ds in jobs.items() for d in ds}
    for r in READMES:
        for b in blocks_of(r):
            for c in b:
                if _is_papermill(c.program) and parse_papermill(c).notebook == TRAIN_NB:
                    call = parse_papermill(c)
                    trained[_train_writes(call.params, call.cwd or ".")[0][0]] = c.where
    problems = [p for c in cmds for p in check_program(c)]
    for c in exports:
        args = python_target(c)[2]
        pos = [a for a in args[1:] if not a.startswith("-")]
        ref = args[args.index("--reference") + 1] if "--reference" in args else None
        if ref is not None:
            try:
                ok = isinstance(json.loads(ref), dict)
            except json.JSONDecodeError:
                ok = False
            if not ok:
                problems.append(f"{c.where}: --reference {ref} is not a JSON object")
        pos = [a for a in pos if a != ref]
        if len(pos) != 2:
            problems.append(f"{c.where}: export takes a checkpoint and an output file: {pos}")
            continue
        ckpt, out = pos
        if _norm(out) not in CLONE_FILES:
            problems.append(f"{c.where}: its output {out} is not a committed file")
        folder = os.path.dirname(_norm(ckpt))
        if not (re.fullmatch(r"(latest|ckpt-\d{7})\.pt", os.path.basename(ckpt)) and folder in trained):
            problems.append(f"{c.where}: its checkpoint {ckpt} is written by no documented training "
                            "(no README's train.ipynb out_dir, no train job of a scripts/run_*_full.py)")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------
# Quick runs, in a temporary copy of the checkout

@dataclass
class Quick:
    why: str                                                  # what the quick form changes
    nb_params: dict = field(default_factory=dict)             # notebook -> {param: value}: set with -p
    nb_yaml: dict = field(default_factory=dict)               # notebook -> dict: one more -y
    options: dict = field(default_factory=dict)               # script --option -> [values]
    env: dict = field(default_factory=dict)                   # more environment
    append: list = field(default_factory=list)                # more arguments
    replace: dict = field(default_factory=dict)               # token -> token
    blocks: list | None = None                                # which blocks run (None: all)
    train_only: bool = False                                  # a full-run script: its training jobs only
    list_first: bool = False                                  # a full-run script: also the command + --list
    expect: list = field(default_factory=list)                # files the run must write (besides the static model's)


QUICK = {
    "baseline": Quick(
        "2 training steps of batch 8 (checkpoints every step, the sample grid of 4 images at the end, "
        "2 sampler steps), 8 samples of 2 Heun steps against 8 reference images",
        nb_params={TRAIN_NB: {"steps": 2, "batch_size": 8, "sample_every": 2, "ckpt_every": 1},
                   EVAL_NB: {"steps": 2, "n_samples": 8, "batch_size": 8, "n_ref": 8}},
        nb_yaml={TRAIN_NB: {"extra": {"log_every": 1, "sample_n": 4, "sample_steps": 2}}},
        replace={"runs/baseline/samples/0002000.png": "runs/baseline/samples/0000002.png"}),
    "ch03_full": Quick(
        "STEPS=2, its first training only (--only cc-s0)", env={"STEPS": "2"},
        append=["--only", "cc-s0"], list_first=True,
        expect=["runs/ch03_full/cc-s0/done.json", "runs/ch03_full/cc-s0/latest.pt",
                "results/ch03_full/cc-s0.config.json", "results/ch03_full/cc-s0.metrics.jsonl",
                "results/ch03_full/cc-s0.provenance.json"]),
    "ch04_full": Quick(
        "STEPS=4 (a checkpoint every step), the first training only: --only rp1-s0 also names "
        "that run's evaluation, so the chains are cut to their training jobs",
        env={"STEPS": "4", "WORKERS": "1"}, append=["--only", "rp1-s0"], train_only=True,
        list_first=True,
        expect=["runs/ch04_full/rp1-s0/done.json", "runs/ch04_full/rp1-s0/latest.pt",
                "results/ch04_full/rp1-s0.config.json", "results/ch04_full/rp1-s0.metrics.jsonl",
                "results/ch04_full/rp1-s0.provenance.json"]),
    "patching_equal_time": Quick(
        "P = 8 only, MINUTES=0.02 of training, 4 samples of 2 DDIM steps against 4 reference images",
        env={"MINUTES": "0.02", "N_SAMPLES": "4", "STEPS": "2", "N_REF": "4"}, append=["all", "8"],
        expect=["results/patching_equal_time/P8.json", "results/patching_equal_time/P8.png",
                "results/patching_equal_time/P8.config.json",
                "results/patching_equal_time/P8.metrics.jsonl", "runs/patching_equal_time/P8/latest.pt"]),
    "ch05_full": Quick(
        "STEPS=2, its first training only: --only n1-s0 also names that run's evaluation, so the "
        "chains are cut to their training jobs; WORKERS=1, because n1-s0's training is in two chains "
        "(its own and its k1000 evaluation's), which two workers start at once",
        env={"STEPS": "2", "WORKERS": "1"}, append=["--only", "n1-s0"], train_only=True, list_first=True,
        expect=["runs/ch05_full/n1-s0/done.json", "runs/ch05_full/n1-s0/latest.pt",
                "results/ch05_full/n1-s0.config.json", "results/ch05_full/n1-s0.metrics.jsonl",
                "results/ch05_full/n1-s0.provenance.json"]),
    "ch06_full": Quick(
        "MINUTES=0.001 (training stops at its first log line, step 50), K1=0 K2=1 (one fixed-point "
        "iteration), its FPDM training only (--only fpdm)",
        env={"MINUTES": "0.001", "K1": "0", "K2": "1"}, append=["--only", "fpdm"], list_first=True,
        expect=["runs/ch06_full/fpdm/done.json", "runs/ch06_full/fpdm/latest.pt",
                "results/ch06_full/fpdm.config.json", "results/ch06_full/fpdm.metrics.jsonl",
                "results/ch06_full/fpdm.provenance.json"]),
    "ch07_full": Quick(
        "MINUTES1=0.001 (stage 1 stops at its first log line), stage 1's training only (--only stage1)",
        env={"MINUTES1": "0.001"}, append=["--only", "stage1"], list_first=True,
        expect=["runs/ch07_full/stage1/done.json", "runs/ch07_full/stage1/latest.pt",
                "results/ch07_full/stage1.config.json", "results/ch07_full/stage1.metrics.jsonl",
                "results/ch07_full/stage1.provenance.json"]),
    "ch08_full": Quick(
        "the first command only, 8 images per set, --only seams",
        options={"--n-real": ["8"], "--n-set": ["8"], "--n-crops": ["8"], "--n-model": ["8"],
                 "--only": ["seams"]}, blocks=[0],
        expect=["results/ch08_full/seams.json", "runs/ch08_full/features/train.npz",
                "runs/ch08_full/features/crops-straddle-seamed.npz"]),
}


def quick_block(block: list[Command], q: Quick) -> list[Command]:
    """The block's commands in their quick form (the README's tokens, with q's changes)."""
    out = []
    for c in block:
        argv = [q.replace.get(a, a) for a in c.argv]
        if _is_papermill(c.program):
            call = parse_papermill(Command(c.readme, c.line, c.text, argv))
            over = dict(q.nb_params.get(call.notebook, {}))
            argv = [argv[0]]
            for name, vals in call.options:
                if name in ("-p", "--parameters") and vals[0] in over:
                    vals = [vals[0], json.dumps(over.pop(vals[0]))]
                argv += ([name] if name else []) + vals
            for k, v in over.items():
                argv += ["-p", k, json.dumps(v)]
            if call.notebook in q.nb_yaml:
                argv += ["-y", json.dumps(q.nb_yaml[call.notebook])]
        elif _is_python(c.program) and q.options:
            kind, target, args = python_target(c)
            head = argv[:len(argv) - len(args)]
            rest, i = [], 0
            while i < len(args):                          # drop the README's values of q.options
                if args[i] in q.options:
                    i += 1
                    while i < len(args) and not args[i].startswith("--"):
                        i += 1
                else:
                    rest.append(args[i])
                    i += 1
            argv = head + rest + [x for k, v in q.options.items() for x in (k, *v)]
        out.append(Command(c.readme, c.line, c.text, argv, dict(c.env)))
    return out


def _data_root() -> Path:
    return Path(os.environ.get("PDLIB_DATA") or ROOT / "data")


def _guarded() -> dict[str, int]:
    """mtimes of what a quick run that escaped its copy would write in the repository."""
    out = {}
    tops = ["runs/train", "data/fid_refs", "notebooks/experiments/runs", "results/weights",
            *(f"{d}/{k}" for k in QUICK for d in ("runs", "results"))]
    for top in tops:
        base = ROOT / top
        if base.exists():
            for p in base.rglob("*"):
                if ".ipynb_checkpoints" not in p.parts and p.name != "README.md":
                    out[p.relative_to(ROOT).as_posix()] = p.lstat().st_mtime_ns
        else:
            out[top] = -1
    return out


class Clone:
    """A temporary copy of the checkout the quick runs write into."""

    def __init__(self, path: Path):
        self.path, self.done, self.log = path, {}, []
        for f in CLONE_FILES:
            if f.startswith(("scripts/", "notebooks/experiments/")) or \
                    (f.startswith("results/") and not f.endswith(".safetensors")):
                dst = path / f
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / f, dst)
        (path / ".venv").symlink_to(ROOT / ".venv")
        (path / "data").mkdir()
        for entry in _data_root().iterdir():
            if entry.name != "fid_refs":
                (path / "data" / entry.name).symlink_to(entry.resolve())
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "PDLIB_DATA": str(path / "data"), "PYDEVD_DISABLE_FILE_VALIDATION": "1",
                    "MPLBACKEND": "Agg"}
        self.env.pop("PDLIB_QUICK", None)

    def run(self, cmd: Command, argv=None, env=None, check=True) -> subprocess.CompletedProcess:
        argv = list(argv or cmd.argv)
        if _is_python(argv[0]):
            argv[0] = ".venv/bin/python"           # the README's `python`: the activated venv's
        t = time.time()
        r = subprocess.run(argv, cwd=self.path, env={**self.env, **cmd.env, **(env or {})},
                           capture_output=True, text=True, timeout=TIMEOUT_S)
        self.log.append(f"{time.time() - t:6.1f} s  {cmd.where}: {shlex.join(argv)}")
        if check and r.returncode != 0:
            pytest.fail(f"{cmd.where}: the quick form of `{cmd.text}` failed (exit {r.returncode}):\n"
                        f"  {shlex.join(argv)}\n--- output (end) ---\n{(r.stdout + r.stderr)[-4000:]}")
        return r

    def missing(self, files) -> list[str]:
        return [f for f in files if not (self.path / f).is_file()]

    def quick(self, folder: str) -> None:
        """Run results/<folder>/README.md's commands in their quick form (once)."""
        if folder in self.done:
            return
        self.done[folder] = False
        readme, q = f"results/{folder}/README.md", QUICK[folder]
        blocks = blocks_of(readme)
        for bi, block in enumerate(blocks):
            if q.blocks is not None and bi not in q.blocks:
                continue
            cmds = quick_block(block, q)
            problems, predicted = simulate(cmds)          # the quick form is a valid block too
            assert not problems, "the quick form:\n" + "\n".join(problems)
            for f in set(predicted) | set(q.expect):     # what the run must write, not the copy's
                (self.path / f).unlink(missing_ok=True)
            for c in cmds:
                if q.list_first:
                    r = self.run(c, c.argv + ["--list"])
                    job = q.append[-1]
                    assert re.search(rf"(?m)^todo\s+train\s+{re.escape(job)}$", r.stdout), \
                        f"{c.where}: `{c.text} --list` does not list the training {job}:\n{r.stdout}"
                argv = c.argv + q.append
                if q.train_only:
                    kind, target, args = python_target(Command(c.readme, c.line, c.text, argv))
                    argv = [argv[0], "-c", TRAIN_ONLY, target, *args]
                self.run(c, argv, env=q.env)
            missing = self.missing(predicted + q.expect)
            assert not missing, (f"{readme}: the quick form of block {bi + 1} did not write "
                                 f"{missing} (the static model of what it writes, or the run, is wrong)")
        self.done[folder] = True


TRAIN_ONLY = r'''
import os, runpy, sys
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
import full_runs
_chain = full_runs.run_chain
full_runs.run_chain = lambda chain, done, run: _chain([j for j in chain if j["kind"] == "train"], done, run)
runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if not PYTHON.is_file() or not (BIN / "papermill").is_file():
        pytest.skip("no .venv with papermill (make venv)")
    if not (_data_root() / "fashion_mnist").is_dir():
        pytest.skip(f"no Fashion-MNIST in {_data_root()} (make data)")
    c = Clone(tmp_path_factory.mktemp("clone"))
    yield c
    print("\nquick runs:\n" + "\n".join(c.log))


@pytest.fixture
def untouched_repo():
    before = _guarded()
    yield
    after = _guarded()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a quick run wrote into the repository: {changed[:10]}"


QUICK_READMES = [r for r in READMES if r.split("/")[1] in QUICK]


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("readme", QUICK_READMES, ids=_ids(QUICK_READMES))
def test_quick_form_runs(readme, clone, untouched_repo):
    clone.quick(readme.split("/")[1])


def test_every_readme_is_run_or_said_static():
    """Each README with commands has a quick form here, or is named as static-only."""
    static_only = {"weights"}           # run by test_weights_quick, after the others' trainings
    for r in READMES:
        folder = r.split("/")[1]
        if blocks_of(r) or inline_commands(readme_text(r), r):
            assert folder in QUICK or folder in static_only, \
                f"{r}: its commands have no quick form in tests/test_results_readmes.py (QUICK)"


@pytest.mark.slow
@pytest.mark.skipif("results/weights/README.md" not in READMES, reason="no results/weights/README.md")
def test_weights_quick(clone, untouched_repo):
    """`python -m pdlib.pretrained list`, and every export whose checkpoint the quick runs wrote
    (stage 1 of chapter 7 trained first if no quick run has written one)."""
    cmds = _weights_commands()
    [lst] = [c for c in cmds if python_target(c)[2] == ["list"]]
    r = clone.run(lst)
    assert "ch01-edm-small" in r.stdout, r.stdout
    exports = [c for c in cmds if python_target(c)[2][:1] == ["export"]]
    have = lambda c: (clone.path / python_target(c)[2][1]).is_file()   # noqa: E731
    if not any(have(c) for c in exports) and "ch07_full" in QUICK:
        clone.quick("ch07_full")
    ran = [c for c in exports if have(c)]
    assert ran, "no export command's checkpoint was written by the quick runs"
    for c in ran:
        out = clone.path / python_target(c)[2][2]
        out.unlink(missing_ok=True)
        clone.run(c)
        assert out.is_file(), f"{c.where}: the export did not write {out}"


def test_parse_only_driver_refuses_bad_command_lines():
    """The argparse check can fail: an unknown option, a missing argument (nothing runs)."""
    req = {"checks": [["script", str(ROOT / "scripts/run_ch03_full.py"), ["--no-such-option"]],
                      ["module", "pdlib.pretrained", ["export", "only-a-checkpoint.pt"]],
                      ["script", str(ROOT / "scripts/run_ch03_full.py"), ["--list"]]],
           "train_jobs": []}
    r = subprocess.run([str(PYTHON), "-c", DRIVER], input=json.dumps(req), capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=TIMEOUT_S)
    bad_option, missing, ok = json.loads(r.stdout.split("@@RESULT@@")[-1])["checks"]
    assert not bad_option["ok"] and "--no-such-option" in bad_option["error"]
    assert not missing["ok"] and "out" in missing["error"]
    assert ok["ok"] and ok["args"]["list"] == "True"
