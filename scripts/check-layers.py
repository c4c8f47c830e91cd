#!/usr/bin/env python3
"""Checks that the modules of tether-core import each other without cycles, and that its
unix-only calls are behind `#[cfg(unix)]` (the core builds for Windows and macOS by construction).

Reads every .rs file under core/src (tests and the simulated server excepted: they may reach
anywhere), takes the `crate::a::b` and `super::x` paths outside comments and strings, and
builds two graphs: the crate's top-level modules (`crate::store` from `engine/mod.rs` is
engine -> store), and the sibling files of each folder (`super::control` in `store/messages.rs`
is messages -> control). Any cycle in either fails with the cycle named. The direction that
ARCHITECTURE.md states is what this checks. Standard library only; `python3 scripts/check-layers.py`.
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "core", "src")
SKIP = {"tests.rs", "sim.rs"}


def strip(src):
    """The code of a Rust file without comments and string literals (enough for paths)."""
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)
    return "\n".join(line.split("//", 1)[0] for line in src.splitlines())


def module_of(rel):
    """(top-level module, folder, file's module) of a path relative to core/src."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    top = parts[0] if parts[0] not in ("lib", "main") else None
    folder = os.sep.join(rel.split(os.sep)[:-1])
    name = parts[-1] if parts else None
    return top, folder, name


def cycles(graph):
    """Every elementary cycle found by a depth-first search (one per back edge)."""
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


UNIX_ONLY = re.compile(r"std::os::unix|tokio::signal::unix|\blibc::")


def unix_only_outside_cfg():
    """Lines of the core (tests included) that use a unix-only API without a `#[cfg(unix)]` on
    the item or block around it (within the eight lines above, the item's own attribute)."""
    found = []
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            lines = open(path, encoding="utf-8").read().splitlines()
            for i, line in enumerate(lines):
                code = line.split("//", 1)[0]
                if UNIX_ONLY.search(code):
                    above = lines[max(0, i - 8):i]
                    if not any("cfg(unix)" in a for a in above):
                        found.append(f"{os.path.relpath(path, ROOT)}:{i + 1}")
    return found


def main():
    top_graph, sibling_graphs = {}, {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs") or f in SKIP or dirpath.endswith(os.sep + "bin"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, ROOT)
            top, folder, name = module_of(rel)
            code = strip(open(path, encoding="utf-8").read())
            if top:
                for m in re.findall(r"\bcrate::([a-z_]+)", code):
                    if m != top:
                        top_graph.setdefault(top, set()).add(m)
            if folder and name and name != top:
                siblings = {os.path.splitext(s)[0] for s in os.listdir(dirpath) if s.endswith(".rs")}
                for m in re.findall(r"\bsuper::([a-z_]+)", code):
                    if m in siblings and m not in ("mod", name):
                        sibling_graphs.setdefault(folder, {}).setdefault(name, set()).add(m)
    unguarded = unix_only_outside_cfg()
    for where in unguarded:
        print(f"unix-only code outside #[cfg(unix)]: {where}", file=sys.stderr)
    bad = [("crate", c) for c in cycles(top_graph)]
    for folder, g in sorted(sibling_graphs.items()):
        bad += [(folder, c) for c in cycles(g)]
    edges = sum(len(v) for v in top_graph.values())
    if bad or unguarded:
        for where, c in bad:
            print(f"import cycle in {where}: {' -> '.join(c)}", file=sys.stderr)
        sys.exit(1)
    print(f"core: no import cycle ({len(top_graph)} modules, {edges} edges between top-level modules; "
          f"{len(sibling_graphs)} folders of sibling files)")
    for n in sorted(top_graph):
        print(f"  {n} -> {', '.join(sorted(top_graph[n]))}")


if __name__ == "__main__":
    main()
