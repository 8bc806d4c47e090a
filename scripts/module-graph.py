#!/usr/bin/env python3
"""Lists the file -> file imports of a crate and checks that they form no circle.

Usage: scripts/module-graph.py crates/partcache-redis [--layers]

An import is any `crate::…` or `super::…` path in code (comments and doc comments
are left out: an intra-doc link is not a dependency). A path is resolved to the
longest module prefix that is a file of the crate. Exits 1 and prints the circle
if the graph of files, or the graph of top-level modules, has one. Unit tests (an
inline `mod tests`, any inline `#[cfg(test)] mod …`, or a `tests.rs`/`tests/` module
file) are left out.
"""

import os
import re
import sys

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
# A path through a child module (`mod puts;` then `puts::turn`, `pub use store::X`).
CHILD = re.compile(r"(?<![A-Za-z0-9_:])([a-z_][a-z0-9_]*)::")


def modules(src):
    """Module path (tuple) -> file, for every .rs file under `src`."""
    found = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, src)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if "tests" in parts:
                # A file of unit tests (`mod tests;`) is test code, like an inline
                # `mod tests`: it may use everything above it.
                continue
            found[tuple(parts)] = path
    return found


def imports(src):
    mods = modules(src)
    edges = {}
    for module, path in mods.items():
        targets = set()
        in_tests = False
        after_cfg_test = False
        for line in open(path, encoding="utf-8"):
            code = line.split("//", 1)[0]
            if re.match(r"\s*mod tests\b", code) or (
                after_cfg_test and re.match(r"\s*mod [a-z_0-9]+\s*\{", code)
            ):
                in_tests = True
            if code.strip():
                after_cfg_test = code.strip() == "#[cfg(test)]"
            # `use super::{a, b}` / `use crate::{a::b, c}`: one path per item.
            for root, group in re.findall(r"\b(crate|super)::\{([^}]*)\}", code):
                code += " " + " ".join(
                    f"{root}::{item.strip()}" for item in group.split(",") if item.strip()
                )
            # `mod child;`: the parent stands above its child.
            declared = re.match(r"\s*(?:pub(?:\([a-z]+\))? )?mod ([a-z_][a-z0-9_]*);", code)
            # (A file's `mod tests;` is its unit tests, which import it as they must.)
            if declared and declared.group(1) != "tests" and module + (declared.group(1),) in mods:
                targets.add(module + (declared.group(1),))
            for root, rest in PATH.findall(code):
                names = rest.split("::")[1:]
                if root == "crate":
                    base = ()
                elif in_tests:
                    # `super` in a file's `mod tests` is the file itself.
                    base = module
                else:
                    base = module[:-1]
                full = base + tuple(names)
                for cut in range(len(full), -1, -1):
                    if full[:cut] in mods:
                        if full[:cut] != module:
                            targets.add(full[:cut])
                        break
            for child in CHILD.findall(code):
                if child not in ("crate", "super", "self") and module + (child,) in mods:
                    targets.add(module + (child,))
        edges[module] = targets
    return mods, edges


def circles(edges):
    """The groups of nodes that import each other (strongly connected components of
    more than one node), by Tarjan's algorithm."""
    index, low, on, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layers(edges):
    """Each node's layer: 0 for one that imports nothing, else 1 + its highest import."""
    level = {}

    def depth(node):
        if node not in level:
            level[node] = 0
            level[node] = 1 + max((depth(n) for n in edges.get(node, ())), default=-1)
        return level[node]

    for node in edges:
        depth(node)
    return level


def name(module):
    return "::".join(module) or "(lib.rs)"


def main():
    crate = sys.argv[1]
    _, edges = imports(os.path.join(crate, "src"))
    # Files: lib.rs only declares modules and re-exports; it is the top by definition.
    files = {m: t for m, t in edges.items() if m}
    files = {m: {t for t in ts if t} for m, ts in files.items()}
    tops = {}
    for m, ts in files.items():
        tops.setdefault(m[:1], set()).update(t[:1] for t in ts if t[:1] != m[:1])
    status = 0
    for title, graph in (("files", files), ("top-level modules", tops)):
        found = circles(graph)
        for group in found:
            print(f"CIRCLE among {title}: " + " <-> ".join(name(n) for n in group))
            status = 1
        else:
            print(f"no circle among {len(graph)} {title}")
    if "--layers" in sys.argv and status == 0:
        for title, graph in (("files", files), ("top-level modules", tops)):
            print(f"\nlayers of {title} (a module imports only from lower layers):")
            level = layers(graph)
            for n in range(max(level.values()) + 1):
                members = sorted(name(m) for m, l in level.items() if l == n)
                print(f"  {n}: {', '.join(members)}")
    if "--edges" in sys.argv:
        for m in sorted(files):
            print(f"{name(m)} -> {', '.join(sorted(name(t) for t in files[m])) or '-'}")
    sys.exit(status)


if __name__ == "__main__":
    main()
