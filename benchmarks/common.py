"""Shared benchmark plumbing: dataclass arguments from the command line, tidy result files."""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import dataclasses
import hashlib
import inspect
import io
import json
import math
import os
import random
import shlex
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar, get_args, get_origin, get_type_hints

import numpy as np
import torch

from safety_bhn._io import atomic_write_json, atomic_write_text

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results"
#: the data folder the benchmarks read: $SAFETY_BHN_DATA if set, else this project's
#: ../shared/data (mnist/, mnist-extra5k/, fashion-mnist/)
DATA_DIR = os.environ.get("SAFETY_BHN_DATA") or str(RESULTS.parents[2] / "shared" / "data")


def _field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (as CleanRL's Args do)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                docs[node.target.id] = str(nxt.value.value).strip()
    return docs


def finite_float(text: str) -> float:
    """The argparse type of every float flag: a finite number. No benchmark setting means
    anything at NaN or infinity, which would only fail (or pass silently) later."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


#: The version of what the code computes, stored with every cached run and results-CSV row.
#: A fix that changes what a benchmark's runs compute bumps it, so that runs made by older
#: code are refused instead of read back as current (a run stored before versions existed
#: counts as version 1). 2: affine couplings un-permute their output (2026-12-07, 7be6f37),
#: which moved every BHN with coupling layers whose scales start from the data.
RESULTS_VERSION = 2


def check_results_version(found: Any, where: str, remedy: str) -> None:
    """Raise ValueError if ``found`` (a stored version: an int, CSV text, or None/"" for a
    run stored before versions existed) is not :data:`RESULTS_VERSION`.

    >>> check_results_version(2, "runs/x.json", "delete it")
    >>> check_results_version(None, "runs/x.json", "delete it")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: runs/x.json holds a run made by older code (results version 1 ...); delete it
    """
    try:
        version = int(found) if found not in (None, "") else 1
    except (TypeError, ValueError):
        raise ValueError(f"{where} is damaged: its results version is {found!r}, not a whole "
                         f"number; {remedy}") from None  # fmt: skip
    unrecorded = " (it records none: it was stored before versions were)" if version == 1 else ""
    if version < RESULTS_VERSION:
        raise ValueError(
            f"{where} holds a run made by older code (results version {version}{unrecorded}; "
            f"this code's is {RESULTS_VERSION}: a fix since then has changed what runs "
            f"compute); {remedy}"
        )
    if version > RESULTS_VERSION:
        raise ValueError(
            f"{where} holds a run made by newer code (results version {version}; this code's "
            f"is {RESULTS_VERSION}); use that code, which computes it otherwise"
        )


#: In an active-learning run folder made by benchmarks/active_learning.py, beside the loop's
#: state: what the loop's own config does not hold (the test images that score it, the
#: results version of the code that made it), so a resume can check them.
AL_RUN_FILE = "benchmark_test_set.json"

#: NumPy's legacy seeding (``seed_everything``) takes seeds in 0..2**32 - 1.
SEED_LIMIT = 2**32


def is_seed_field(name: str) -> bool:
    """Whether an argument field holds seeds: ``seed``, or a list such as ``seeds`` or
    ``high_seeds``."""
    return name == "seed" or name.endswith("seeds")


def _check_seeds(parser: argparse.ArgumentParser, name: str, value: Any) -> None:
    """Refuse a seed outside NumPy's range, or a seed list that names a seed twice (each seed
    is one run: a repeat would be run again and counted as another seed in the report)."""
    flag = "--" + name.replace("_", "-")
    seeds = value if isinstance(value, list) else [value]
    bad = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if bad:
        parser.error(f"{flag} {' '.join(map(str, seeds))}: a seed must lie in 0..2**32 - 1, got "
                     f"{', '.join(map(str, bad))}")  # fmt: skip
    twice = list(dict.fromkeys(s for s in seeds if seeds.count(s) > 1))
    if twice:
        parser.error(f"{flag} {' '.join(map(str, seeds))}: seed {', '.join(map(str, twice))} "
                     "given more than once; each seed is one run")  # fmt: skip


#: Fields that name a folder a script writes into (checked not to be a file before any work).
FOLDER_FIELDS = ("out", "out_dir", "state", "runs_dir")


def _parser(cls: type, given_only: bool = False) -> argparse.ArgumentParser:
    """The argparse parser of the dataclass ``cls`` (flags ``--field-name``); with
    ``given_only``, one whose result holds only the flags given (no defaults)."""
    parser = argparse.ArgumentParser(
        description=inspect.getdoc(cls),
        argument_default=argparse.SUPPRESS if given_only else None,
    )
    docs = _field_docs(cls)
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = {} if given_only else {"default": default}
        kind = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{docs.get(f.name, '')} (default: {default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text, **kw)
            continue
        nargs = None
        if get_origin(kind) in (list, tuple):
            kind, nargs = get_args(kind)[0], "+"
        elif get_origin(kind) is not None:  # Optional[X]
            kind = next(a for a in get_args(kind) if a is not type(None))
        kind = finite_float if kind is float else kind
        parser.add_argument(flag, type=kind, nargs=nargs, help=help_text, **kw)
    return parser


def parse_args(cls: type[T], argv: Sequence[str] | None = None) -> T:
    """Build an argparse parser from the dataclass ``cls`` (flags ``--field-name``) and parse.

    Float flags take finite numbers only, and seed flags (:func:`is_seed_field`) seeds in
    0..2**32 - 1, none twice; a folder flag (:data:`FOLDER_FIELDS`) naming a file is refused;
    a bad value ends the script with argparse's one-line error. The result's ``given_flags``
    names the fields given on the command line (:func:`quick_settings` keeps those).
    """
    parser = _parser(cls)
    parsed = vars(parser.parse_args(argv))
    for name, value in parsed.items():
        if is_seed_field(name):
            _check_seeds(parser, name, value)
        if name in FOLDER_FIELDS and isinstance(value, str) and Path(value).is_file():
            parser.error(f"--{name.replace('_', '-')} {value} is a file, not a folder; "
                         "choose another")  # fmt: skip
    args = cls(**parsed)
    args.given_flags = frozenset(vars(_parser(cls, given_only=True).parse_args(argv)))
    return args


def fail(script: str, message: str) -> NoReturn:
    """End ``benchmarks/SCRIPT`` as a bad flag does: one ``SCRIPT: error: MESSAGE`` line and
    exit status 1, no traceback."""
    raise SystemExit(f"{script}: error: {message}")


@contextlib.contextmanager
def flag_errors(script: str, prefix: str = "") -> Iterator[None]:
    """Turn a ValueError raised in the block (a library's check of a setting, run before any
    work) into :func:`fail`'s one-line error, after ``prefix`` (e.g. which row it was)."""
    try:
        yield
    except ValueError as err:
        fail(script, f"{prefix}{err}")


def check_flags(
    script: str,
    args: Any,
    positive: Sequence[str] = (),
    nonnegative: Sequence[str] = (),
    distinct: Sequence[str] = (),
) -> None:
    """Refuse flags that no run can use, before any work: each field in ``positive`` (every
    entry, for a list) must be > 0 (at least 1 for an integer), each in ``nonnegative`` >= 0,
    and the lists in ``distinct`` must not name an entry twice (a repeated row or method would
    run again and count twice in the report).

    >>> @dataclasses.dataclass
    ... class A:
    ...     workers: int = 0
    >>> check_flags("x.py", A(), positive=["workers"])
    Traceback (most recent call last):
    SystemExit: x.py: error: --workers must be at least 1, got 0
    """
    for name in [*positive, *nonnegative]:
        value = getattr(args, name)
        strict = name in positive
        for v in value if isinstance(value, list) else [value]:
            if not (v > 0 if strict else v >= 0):  # NaN fails both
                least = ("at least 1" if strict else "at least 0") if isinstance(v, int) else (
                    "positive" if strict else "non-negative")  # fmt: skip
                shown = " ".join(map(str, value)) if isinstance(value, list) else value
                fail(script, f"--{name.replace('_', '-')} must be {least}, got {shown}")
    for name in distinct:
        values = list(getattr(args, name))
        twice = list(dict.fromkeys(v for v in values if values.count(v) > 1))
        if twice:
            fail(script, f"--{name.replace('_', '-')} names {', '.join(map(str, twice))} more "
                         "than once; each entry is one run (or column) of the report")  # fmt: skip


def refuse_unused(
    script: str, args: Any, users: dict[str, Sequence[str]], chooser: str, chosen: Sequence[str]
) -> None:
    """Refuse a flag given on the command line (``args.given_flags``) that only the entries
    ``users[field]`` of the list flag ``chooser`` use, when ``chosen`` (that list's value)
    names none of them: the run would ignore it, and its report would still state it.

    >>> @dataclasses.dataclass
    ... class A:
    ...     agents: list = dataclasses.field(default_factory=lambda: ["bhn"])
    ...     epsilon: float = 0.1
    >>> a = A()
    >>> a.given_flags = frozenset({"epsilon"})
    >>> refuse_unused("x.py", a, {"epsilon": ["epsilon_greedy"]}, "agents", a.agents)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    SystemExit: x.py: error: --epsilon is a setting of epsilon_greedy, which --agents leaves out...
    """
    given = getattr(args, "given_flags", frozenset())
    for name, owners in users.items():
        if name in given and not set(owners) & set(chosen):
            flag, by = "--" + name.replace("_", "-"), "--" + chooser.replace("_", "-")
            fail(script, f"{flag} is a setting of {' and '.join(owners)}, which {by} leaves "
                         f"out, so the run would ignore it; drop {flag}, or add {owners[0]} "
                         f"to {by}")  # fmt: skip


#: MNIST's test images (embedded, and in any data folder): the most a --test-size can use.
MNIST_TEST_SIZE = 10_000


def command_line(script: str, argv: Sequence[str] | None = None, drop: Sequence[str] = ()) -> str:
    """The shell command that reruns ``benchmarks/SCRIPT`` with ``argv`` (default: this
    process's flags), less the flags in ``drop``; quoted, so a pasted copy parses the same.

    >>> command_line("ood.py", ["--rows", "bhn-12", "--label", "a reduced run"])
    "python benchmarks/ood.py --rows bhn-12 --label 'a reduced run'"
    """
    given = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", f"benchmarks/{script}", *(a for a in given if a not in drop)])


def project_path(path: str | os.PathLike) -> str:
    """``path`` relative to the project root where it lies inside it, for reports.

    >>> project_path(RESULTS / "ood")
    'benchmarks/results/ood'
    """
    full = Path(path).resolve()
    return str(full.relative_to(RESULTS.parents[1]) if full.is_relative_to(RESULTS.parents[1])
               else full)  # fmt: skip


def run_settings(args: Any, ignore: Sequence[str]) -> dict[str, Any]:
    """The fields of a benchmark's argument dataclass that shape one cached run's results:
    every field but those in ``ignore`` (which runs, where files go, thread counts, labels)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
            if f.name not in ignore}  # fmt: skip


def load_run(path: str | os.PathLike, settings: dict[str, Any]) -> Any | None:
    """The result cached at ``path`` by :func:`save_run`, or ``None`` if there is none.

    A run cached with other ``settings`` (say 30 posterior samples where 100 are asked for)
    raises ValueError naming them, instead of mixing two recipes in one table, and so does a
    run made by code of another :data:`RESULTS_VERSION` (including files from before
    settings or versions were stored).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is damaged ({err.msg}); delete it to rerun that run") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is damaged (not text); delete it to rerun that run") from None
    if not (isinstance(data, dict) and data):  # {} or a list: no run's result
        raise ValueError(f"{path} is damaged (it holds no run's result); delete it to rerun "
                         "that run")  # fmt: skip
    check_results_version(data.get("results_version"), str(path),
                          "delete it, or pass another --state folder, to rerun it")  # fmt: skip
    if not (isinstance(data.get("settings"), dict) and "result" in data):
        raise ValueError(f"{path} is damaged (no settings and result); delete it to rerun that "
                         "run")  # fmt: skip
    wanted = json.loads(json.dumps(settings))
    differ = sorted(k for k in wanted.keys() | data["settings"].keys()
                    if wanted.get(k) != data["settings"].get(k))  # fmt: skip
    if differ:
        was = ", ".join(f"{k}={data['settings'].get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={wanted.get(k)!r}" for k in differ)
        raise ValueError(
            f"{path} was run with {was}, but this invocation asks for {now}; pass another "
            "--state folder for these settings, or delete the file to rerun it"
        )
    return data["result"]


def cache_file(state: str | os.PathLike, name: str, settings: dict[str, Any]) -> Path:
    """Where one run is cached in the ``state`` folder: ``name`` and a short hash of its
    ``settings``, so runs of other settings (another --lr-warmup, say) get files of their own
    rather than meeting a cached run they cannot use.

    >>> cache_file("s", "bhn-seed0", {"epochs": 1}) != cache_file("s", "bhn-seed0", {"epochs": 2})
    True
    """
    text = json.dumps(json.loads(json.dumps(settings)), sort_keys=True)
    return Path(state) / f"{name}-{hashlib.sha1(text.encode()).hexdigest()[:10]}.json"


def cached_run(script: str, path: str | os.PathLike, settings: dict[str, Any], quick: bool) -> Any:
    """:func:`load_run` for a benchmark's loop over runs: None for a ``--quick`` run (which
    caches nothing); a damaged file, or one cached with other settings, ends the script with
    an error naming it, as a bad flag would."""
    if quick:
        return None
    try:
        return load_run(path, settings)
    except ValueError as err:
        fail(script, str(err))


def check_al_steps(
    script: str, runs_dir: str, runs: Sequence[str], steps: Sequence[int]
) -> dict[str, dict[str, Any]]:
    """For the scripts that retrain steps of finished active-learning runs: each run folder
    in ``runs_dir`` must hold a readable state, not of a warm-start run (whose steps cannot be
    rebuilt), in which every step in ``steps`` has finished; else :func:`fail` names the run,
    before the first retrain (a missing run or step failed after minutes of retraining the
    others). Returns each run's saved config."""
    from safety_bhn.active.loop import saved_state
    from safety_bhn.runs import MODEL_VERSION

    configs = {}
    for run in runs:
        try:
            state = saved_state(Path(runs_dir) / run)
        except (FileNotFoundError, ValueError) as err:
            fail(script, f"run {run}: {err}")
        done = len(state["history"])
        bad = [step for step in steps if not 0 <= step < done]
        if bad:
            finished = f"steps 0..{done - 1}" if done else "no step"
            fail(script, f"--steps {' '.join(map(str, bad))}: run {run} has finished {finished}")
        made_by = Path(runs_dir) / run / AL_RUN_FILE  # absent: a run of the CLI
        version = state.get("model_version")
        if not made_by.is_file() and version != MODEL_VERSION:
            fail(script, f"run {run} was begun by code of an older model version ({version or 1}, "
                         f"this code's {MODEL_VERSION}), whose models compute otherwise; rerun "
                         "it with this code first")  # fmt: skip
        if made_by.is_file():
            try:
                found = json.loads(made_by.read_text()).get("results_version")
            except (ValueError, AttributeError):
                fail(script, f"{made_by} is damaged")
            with flag_errors(script):
                check_results_version(found, f"run {run}", "rerun it with this code first")
        if state["config"].get("warm_start"):
            fail(script, f"run {run} is a warm-start run, whose steps cannot be rebuilt one by one")
        configs[run] = state["config"]
    return configs


def checkpoint_file(folder: str | os.PathLike, name: str, settings: dict[str, Any]) -> Path:
    """Where one run's training state is kept in ``folder``/checkpoints: ``name`` and a hash
    of its ``settings`` and :data:`RESULTS_VERSION`, so a run of other settings keeps its own,
    and one begun by older code (which would load with that code's behaviour) is not
    continued."""
    settings = {**settings, "results_version": RESULTS_VERSION}
    return cache_file(Path(folder) / "checkpoints", name, settings).with_suffix(".pt")


def save_run(path: str | os.PathLike, result: Any, settings: dict[str, Any]) -> Path:
    """Cache one run's JSON-able ``result`` at ``path`` atomically, with the ``settings`` and
    :data:`RESULTS_VERSION` that :func:`load_run` checks."""
    record = {"settings": settings, "result": result, "results_version": RESULTS_VERSION}
    return atomic_write_json(path, record)


def stop_with_parent(every: float = 2.0, parent: int | None = None) -> None:
    """A worker pool's initializer: end this worker once its parent process is gone, rather
    than train on for nobody.

    A benchmark stopped by a signal (SIGTERM, or SIGKILL from a job scheduler) used to leave
    its workers training to the end of their current run, holding the CPU and writing into
    its folders. Runs save their training state as they go, so a rerun continues where a
    worker stopped. ``every``: seconds between checks; ``parent``: the pid to watch, by
    default this worker's parent when it starts (the benchmark under fork and spawn; under
    forkserver the server, which ends with the benchmark).
    """
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)  # no cleanup to run: the parent that would take the result is gone

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


def seed_everything(seed: int) -> None:
    """The seeding block: Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def divergence_phrase(retries: int | None, stopped: int | None) -> str:
    """How a report names one training run's divergences (safety_bhn.fit): ``retries`` epochs
    trained again, ``stopped`` the epoch where training gave up (None: it did not)."""
    return f"{retries or 0} retries" + ("" if stopped is None else f", stopped at epoch {stopped}")


def write_csv(rows: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write tidy rows (one dict per row) as CSV, atomically.

    The columns are every key in order of first appearance; a row without a column (e.g. one
    computed before that column was recorded) leaves its cell empty.
    """
    buffer = io.StringIO()
    fields = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def _cell(text: str) -> Any:
    """A CSV cell as the value :func:`write_csv` wrote: an int, else a float, else the text
    (Python writes floats as their shortest repr, so they read back exactly)."""
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(text)
    return text


def read_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows that :func:`write_csv` wrote, with numbers as numbers; an empty cell (a column the
    row did not have) is left out of its row, as it was before writing.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = write_csv([{"method": "bhn", "seed": 0, "auroc": 0.1 + 0.2}, {"seed": 1}], path)
    >>> read_csv(path)
    [{'method': 'bhn', 'seed': 0, 'auroc': 0.30000000000000004}, {'seed': 1}]
    """
    with open(path, newline="") as f:
        return [{k: _cell(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float], fmt: str = "{:.4f}") -> str:
    """``"mean ± std"`` over seeds (sample std); one value reads ``"value (one run)"``, since a
    "± 0" would claim a spread that was never measured."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 1:
        return f"{fmt.format(arr[0])} (one run)"
    return f"{fmt.format(arr.mean())} ± {fmt.format(arr.std(ddof=1))}"


def in_results(path: str | os.PathLike) -> bool:
    """Whether ``path`` is the committed results folder or lies inside it (however spelt:
    ``benchmarks/results``, ``./benchmarks/results/``, an absolute path)."""
    return Path(path).resolve().is_relative_to(RESULTS.resolve())


def quick_out(out: str) -> str:
    """Where a ``--quick`` run writes: never into the committed results. A path inside them
    moves to the same place under runs/bench-quick; any other path is kept.

    >>> quick_out(str(RESULTS / "ood")), quick_out("/tmp/smoke")
    ('runs/bench-quick/ood', '/tmp/smoke')
    """
    if not in_results(out):
        return out
    inside = Path(out).resolve().relative_to(RESULTS.resolve())
    return str(Path("runs/bench-quick") / inside) if inside.parts else "runs/bench-quick"


def quick_settings(args: T, **tiny: Any) -> T:
    """``args`` with a ``--quick`` run's ``tiny`` settings in place of the defaults; a setting
    the user gave on the command line (``args.given_flags``, from :func:`parse_args`; else one
    changed from its default) is kept, so a smoke test runs the rows, seeds or budgets the
    user named.

    >>> @dataclasses.dataclass
    ... class A:
    ...     seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    ...     epochs: int = 100
    >>> quick_settings(A(seeds=[7]), seeds=[0], epochs=1)
    A(seeds=[7], epochs=1)
    >>> quick_settings(A(), seeds=[0], epochs=1)
    A(seeds=[0], epochs=1)
    """
    defaults = type(args)()
    given = getattr(args, "given_flags", None)  # set by parse_args: flags typed, even at default
    kept = (lambda k: k in given) if given is not None else (
        lambda k: getattr(args, k) != getattr(defaults, k))  # fmt: skip
    tiny = {k: v for k, v in tiny.items() if not kept(k)}
    args = dataclasses.replace(args, **tiny)
    if given is not None:
        args.given_flags = given
    for name in ("out", "out_dir", "state"):  # a smoke test never writes into the results
        if isinstance(getattr(args, name, None), str):
            setattr(args, name, quick_out(getattr(args, name)))
    return args


def run_kind(args: Any, ignore: Sequence[str] = ("out", "progress")) -> str:
    """'full run', or a label saying which settings differ from the defaults (or a smoke test).

    ``args`` is a benchmark's argument dataclass with a ``quick`` field; fields in ``ignore``
    (where results go, progress bars) do not change a result and are not reported.
    """
    if args.quick:
        return "QUICK smoke test, not a result"
    defaults = type(args)()
    changed = [f.name for f in dataclasses.fields(args) if f.name not in ignore
               and getattr(args, f.name) != getattr(defaults, f.name)]  # fmt: skip
    return f"REDUCED run: {', '.join(changed)} changed from the defaults" if changed else "full run"


def run_label(args: Any, ignore: Sequence[str] = ("out", "progress")) -> str:
    """The word in a run's name: ``quick``, ``reduced`` (settings changed from the defaults,
    see :func:`run_kind`) or ``full``.

    >>> @dataclasses.dataclass
    ... class A:
    ...     seeds: int = 3
    ...     quick: bool = False
    >>> run_label(A()), run_label(A(seeds=1)), run_label(A(quick=True))
    ('full', 'reduced', 'quick')
    """
    kind = run_kind(args, ignore)
    return "quick" if args.quick else "full" if kind == "full run" else "reduced"
