#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

Reads every `crate::a::b` path (and `super::` paths, resolved) in the Rust files of each
crate of the workspace, at the depth of the crate's top modules and one level below
(`models::resnet`, `train::checkpoint`), and reports each strongly connected component of
more than one module. Test code (`#[cfg(test)]` modules) is left out: tests may reach
anywhere. Run from the repository root: `python3 scripts/module_cycles.py`.
"""
import os
import re
import sys

# Edges that are allowed to close a cycle, each with its reason.
ALLOWED = {
    ("wsol-ops", "cpu", "conv"): "the AVX-512 wrappers in cpu/ compile conv's lane-wise generic "
    "functions (Winograd transforms) with target features and read conv's Geometry and panel taps; "
    "the generic code stays beside the algorithm it belongs to",
}

CRATES = {"wsol": "src", "wsol-ops": "crates/wsol-ops/src", "wsol-eval": "crates/wsol-eval/src"}
PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")


def module_of(root, path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def strip_tests(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks (brace matching on lines)."""
    out, skip, depth = [], False, 0
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not skip and line.strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*(pub(\(\w+\))? )?mod \w+ \{", lines[i + 1]):
            skip, depth = True, 0
            i += 1
            continue
        if skip:
            depth += line.count("{") - line.count("}")
            if depth <= 0 and "}" in line:
                skip = False
            i += 1
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def deps(root):
    edges = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            me = module_of(root, path)
            if not me:
                continue
            text = strip_tests(open(path, encoding="utf-8").read())
            text = re.sub(r"//.*", "", text)
            src = ".".join(me[:2])
            for kind, rest in PATH.findall(text):
                parts = rest.strip(":").split("::")
                if kind == "super":
                    base = me[:-1] if not path.endswith("mod.rs") else me[:-1]
                    target = base + [p for p in parts if p != "super"]
                else:
                    target = parts
                if not target:
                    continue
                dst = ".".join(target[:2]) if target[0] == me[0] else target[0]
                # Compare at the top level across top modules, one level deeper inside one.
                a = src if target[0] == me[0] else me[0]
                if a != dst and not dst.startswith(a + ".") and not a.startswith(dst + "."):
                    edges.setdefault(a, set()).add(dst)
    return edges


def cycles(edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main():
    bad = False
    for crate, root in CRATES.items():
        if not os.path.isdir(root):
            continue
        edges = deps(root)
        for (c, a, b) in ALLOWED:
            if c == crate and b in edges.get(a, set()):
                edges[a].discard(b)
        for comp in cycles(edges):
            bad = True
            detail = "; ".join(f"{a} -> {', '.join(sorted(b for b in edges.get(a, ()) if b in comp))}" for a in comp)
            print(f"{crate}: import cycle between {', '.join(comp)} ({detail})")
    if not bad:
        print("no import cycles between modules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
