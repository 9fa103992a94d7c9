#!/usr/bin/env python3
"""The import graph of src/ and the layer rules it must keep (ARCHITECTURE.md, "Layers").

Reads every `use crate::..` tree and every `crate::x::` / `super::` path in src/**/*.rs
(comments and `#[cfg(test)]` modules left out: tests may reach anywhere), reduces each to a
node (a top-level module, or a `kommo::*` submodule, since kommo is where a vendor adapter
and its callers used to mix), prints the graph, lists import cycles, and checks every edge
against LAYERS below. Exits 1 on a forbidden edge or a cycle, so CI fails on one.

    python3 .ci/layers.py            # graph, cycles, verdict
    python3 .ci/layers.py --quiet    # verdict only
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Modules split finer than the top level, to keep their inside honest too.
SPLIT = {"kommo"}

# Layers, top to bottom. A module may import any module in a LOWER layer, never one above or
# beside it, except the pairs in SAME_LAYER. `main`, `lib` and src/bin/* sit above all.
LAYERS = [
    # entry points: commands, start-up (builds the state, runs the duties)
    ["cli", "app"],
    # the router and its middleware: the only module that knows every route
    ["http"],
    # request edges for people and programs
    ["api", "web", "sandbox"],
    # what the edges share: extractors (caller's IP, access to the agency a path names), and
    # client account changes that reach the ingress cache and Kommo's subscription
    ["extract", "actions"],
    # what every handler can reach
    ["state"],
    # the webhook edge: runs on its own state, carried by `state` so actions can drop cache entries
    ["ingress"],
    # application services over vendors and store
    ["connections", "pipeline", "alerts"],
    ["tenants"],
    ["auth", "queue"],
    # mail and alert webhooks, written by the services above and delivered with retries
    ["outbox"],
    # vendor adapters
    ["kommo", "flutterwave"],
    # cross-cutting infrastructure
    ["telemetry", "background"],
    # errors: problem+json over the service error over the stores' errors
    ["problem"],
    ["error"],
    # settings, parsed into the types of the modules below
    ["config"],
    ["vault"],
    ["store"],
    ["money", "ids", "roles", "clock", "shutdown"],
]

SAME_LAYER = {
    ("cli", "app"),
}

# Edges that break a rule today and are known; each names why it is tolerated. Empty is the aim.
KNOWN = set()

TOP = {"main", "lib", "bin"}


def layer_of(node):
    node = node.split("::")[0]
    for i, layer in enumerate(LAYERS):
        if node in layer:
            return i
    return None


def allowed(src, dst):
    if src in TOP or src.startswith("bin"):
        return True
    if src.split("::")[0] == dst.split("::")[0]:
        # Inside one split module (kommo's client, tokens, limits..) parts use each other.
        return True
    if (src, dst) in SAME_LAYER or (src, dst) in KNOWN:
        return True
    a, b = layer_of(src), layer_of(dst)
    if a is None or b is None:
        return False
    return a < b


def strip(text):
    """Source without comments, string contents and #[cfg(test)] modules."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [re.split(r"\s+as\s+", tree)[0].strip()]
    head, body = tree[:brace], tree[brace + 1:tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    paths = []
    for p in parts:
        if p.strip():
            for sub in expand(p):
                paths.append((head + sub) if sub != "self" else head.rstrip(":"))
    return paths


def module_path(file):
    rel = os.path.relpath(file, ROOT)[:-3].split(os.sep)
    if rel[0] == "bin":
        return ["bin:" + rel[-1]]
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1] or [rel[-1]]
    return rel


def node_of(segments):
    if not segments:
        return None
    if segments[0] in SPLIT and len(segments) > 1 and \
            os.path.exists(os.path.join(ROOT, segments[0], segments[1] + ".rs")):
        return segments[0] + "::" + segments[1]
    return segments[0]


def resolve(path, here):
    """A path as written in module `here` -> absolute segments, or None if not in the crate."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("super", "self"):
        base = list(here)
        while segs and segs[0] in ("super", "self"):
            if segs.pop(0) == "super":
                base = base[:-1]
        return base + segs
    return None


def is_module(node):
    top = node.split("::")[0]
    return os.path.isdir(os.path.join(ROOT, top)) or os.path.exists(os.path.join(ROOT, top + ".rs"))


def graph():
    edges = {}
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            file = os.path.join(dirpath, name)
            here = module_path(file)
            src = node_of(here) if not here[0].startswith("bin:") else here[0]
            with open(file, encoding="utf-8") as f:
                text = strip(f.read())
            paths = []
            for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]*);", text):
                paths += expand(m.group(1))
            for m in re.finditer(r"(?<![\w:])((?:crate|super)(?:::\w+)+)", text):
                paths.append(m.group(1))
            for p in paths:
                segs = resolve(p, here if not here[0].startswith("bin:") else [])
                dst = node_of(segs) if segs else None
                if dst and dst != src and is_module(dst):
                    edges.setdefault(src, {}).setdefault(dst, set()).add(
                        os.path.relpath(file, ROOT))
    return edges


def cycles(edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
    for v in sorted(set(edges) | {w for d in edges.values() for w in d}):
        if v not in index:
            visit(v)
    return out


def main():
    quiet = "--quiet" in sys.argv
    edges = graph()
    bad = []
    if not quiet:
        print("# import graph (module -> modules it imports)")
    for src in sorted(edges):
        marks = []
        for dst in sorted(edges[src]):
            ok = allowed(src, dst)
            marks.append(dst if ok else dst + "!")
            if not ok:
                bad.append((src, dst, sorted(edges[src][dst])))
        if not quiet:
            print(f"{src} -> {', '.join(marks)}")
    # Cycles between top-level modules; a split module's parts may refer back to its root.
    top = {}
    for src, dsts in edges.items():
        for dst in dsts:
            a, b = src.split("::")[0], dst.split("::")[0]
            if a != b:
                top.setdefault(a, {})[b] = True
    found = cycles(top)
    print(f"# cycles: {len(found)}")
    for comp in found:
        print("  " + " <-> ".join(comp))
    print(f"# forbidden edges: {len(bad)}")
    for src, dst, files in bad:
        print(f"  {src} -> {dst}  ({', '.join(files)})")
    if bad or found:
        print("layers: FAIL (see ARCHITECTURE.md, Layers)")
        return 1
    print("layers: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
