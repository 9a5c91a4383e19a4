"""mutmut's verdicts kept in a file of the repository, so that a mutation run can stop and go
on in another checkout (a complete run of faucet_core takes longer than a working day's
sitting on two cores).

    python scripts/mutation_verdicts.py save     mutants/ -> mutation-verdicts.json
    python scripts/mutation_verdicts.py restore  mutation-verdicts.json -> mutants/

A function's verdicts are restored only where its mutants are the ones judged: the same
mutated source, text for text, under the same numbers. (mutmut keeps a verdict while the
function's own source is unchanged; but it mutates only the lines the tests cover, so tests
added since can make other mutants under the same numbers.) Only the verdicts that tests
added since cannot change are restored: killed, caught by the type check, crashed. The
others run again: survivors and mutants no test covered (tests added since may kill them),
and timeouts (a survivor whose tests ran slowly on a busy machine, as often as a mutant that
hangs). A killed mutant stays killed while its code is the same, which assumes its killing
test was not weakened since: run ``scripts/mutation --fresh`` after weakening or removing
tests.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from pathlib import Path

VERDICTS = Path("mutation-verdicts.json")
MUTANTS = Path("mutants")
#: mutmut's exit codes restored: killed (1, and 3: pytest's internal error), caught by the
#: type check (37), segfault (-11).
KEPT = {1, 3, 37, -11}
_MUTANT = re.compile(r"^(?P<function>x_.+|xǁ.+)__mutmut_(?P<number>\d+)$")


def fingerprints(mutated: Path) -> dict[str, str]:
    """Per mutated function of the mutmut copy ``mutated``: a digest of all its mutants'
    source, keyed as mutmut names the function (``module.function``)."""
    text = mutated.read_text(encoding="utf-8")
    lines = text.splitlines()
    module = ".".join(mutated.relative_to(MUTANTS).with_suffix("").parts)
    sources: dict[str, list[tuple[int, str]]] = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            match = _MUTANT.match(node.name)
            if match:
                source = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                entry = (int(match["number"]), source)
                sources.setdefault(f"{module}.{match['function']}", []).append(entry)
    return {
        function: hashlib.sha256("\n".join(s for _, s in sorted(found)).encode()).hexdigest()[:16]
        for function, found in sources.items()
    }


def _metas() -> list[tuple[Path, Path]]:
    """Each results file of mutants/ with its mutated copy."""
    return [
        (meta, meta.with_suffix(""))
        for meta in sorted(MUTANTS.rglob("*.py.meta"))
        if meta.with_suffix("").is_file()
    ]


def _split(name: str) -> tuple[str, int]:
    function, _, number = name.rpartition("__mutmut_")
    return function, int(number)


def save() -> None:
    """Write every decided verdict of mutants/ to :data:`VERDICTS`, one function a line."""
    prints_of: dict[str, str] = {}
    verdicts_of: dict[str, dict[str, int]] = {}
    for meta, mutated in _metas():
        prints = fingerprints(mutated)
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        for name, code in codes.items():
            function, number = _split(name)
            if code is not None and function in prints:
                prints_of[function] = prints[function]
                verdicts_of.setdefault(function, {})[str(number)] = code
    lines = [
        f"  {json.dumps(f)}: "
        + json.dumps({"fingerprint": prints_of[f], "verdicts": verdicts_of[f]}, sort_keys=True)
        for f in sorted(verdicts_of)
    ]
    VERDICTS.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    decided = sum(len(verdicts) for verdicts in verdicts_of.values())
    print(f"saved {decided} verdicts of {len(verdicts_of)} functions to {VERDICTS}")


def restore() -> None:
    """Give the undecided mutants of mutants/ the verdicts :data:`VERDICTS` holds for them."""
    if not VERDICTS.is_file():
        print(f"no {VERDICTS}: nothing to restore")
        return
    saved = json.loads(VERDICTS.read_text(encoding="utf-8"))
    restored = stale = 0
    for meta, mutated in _metas():
        prints = fingerprints(mutated)
        data = json.loads(meta.read_text(encoding="utf-8"))
        codes = data["exit_code_by_key"]
        for name, code in codes.items():
            function, number = _split(name)
            entry = saved.get(function)
            if code is not None or entry is None:
                continue
            if entry["fingerprint"] != prints.get(function):
                stale += 1
                continue
            verdict = entry["verdicts"].get(str(number))
            if verdict in KEPT:
                codes[name] = verdict
                restored += 1
        meta.write_text(json.dumps(data, indent=4), encoding="utf-8")
    print(f"restored {restored} verdicts; {stale} mutants of changed functions run again")


if __name__ == "__main__":
    commands = {"save": save, "restore": restore}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} save|restore")
    commands[sys.argv[1]]()
