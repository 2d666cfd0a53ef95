#!/usr/bin/env python3
"""Finds import cycles between the modules (files) of each crate: A → B when A's code names a path
`crate::…`/`super::…`/`self::…` that resolves into B's file. A parent's own `mod child;` and its
`pub use child::…` re-exports are containment, not imports, so they are not edges; a child that
names its parent (a trait defined in `kernels/mod.rs`) is. Prints the cycles, exit 1 if any.
Run from the repository root: python3 tools/module_cycles.py"""
import os, re, sys

def modules(src):
    """module path (tuple) → file"""
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            out[tuple(rel)] = os.path.join(root, f)
    return out

def resolve(mods, path):
    """deepest module that is a prefix of `path`"""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in mods:
            return tuple(path[:n])
    return None

def uses(text):
    """every path a file names: `use` trees expanded, plus inline crate::/super:: paths"""
    text = re.sub(r"//[^\n]*", "", text)
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text, re.S):
        stack = [("", m.group(1).replace("\n", " "))]
        while stack:
            prefix, tree = stack.pop()
            tree = tree.strip()
            b = tree.find("{")
            if b < 0:
                for part in tree.split(","):
                    part = part.strip().split(" as ")[0].strip()
                    if part:
                        paths.append(prefix + part)
                continue
            head, body = tree[:b], tree[b + 1 : tree.rfind("}")]
            depth, cur, items = 0, "", []
            for ch in body:
                if ch == "{":
                    depth += 1
                if ch == "}":
                    depth -= 1
                if ch == "," and depth == 0:
                    items.append(cur)
                    cur = ""
                else:
                    cur += ch
            items.append(cur)
            for it in items:
                stack.append((prefix + head, it))
    paths += re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text)
    return paths

def main():
    found = False
    crates = sorted(os.listdir("crates"))
    for crate in crates:
        src = os.path.join("crates", crate, "src")
        if not os.path.isdir(src):
            continue
        mods = modules(src)
        edges = {m: set() for m in mods}
        for m, f in mods.items():
            text = open(f).read()
            is_dir_mod = f.endswith(("mod.rs", "lib.rs", "main.rs"))
            children = {c[len(m)] for c in mods if len(c) == len(m) + 1 and c[: len(m)] == m}
            for p in uses(text):
                parts = p.split("::")
                base = list(m) if is_dir_mod else list(m[:-1])
                if parts[0] == "crate":
                    path = parts[1:]
                elif parts[0] in ("super", "self"):
                    cur = list(m) if is_dir_mod else list(m)
                    i = 0
                    while i < len(parts) and parts[i] in ("super", "self"):
                        if parts[i] == "super":
                            cur = cur[:-1]
                        i += 1
                    path = cur + parts[i:]
                elif is_dir_mod and parts[0] in children:
                    continue  # a parent's re-export of its own child
                else:
                    continue  # an external crate
                t = resolve(mods, path)
                if t is None or t == m:
                    continue
                if t[: len(m)] == m and is_dir_mod:
                    continue  # a parent naming its own descendants
                edges[m].add(t)
        # cycles by DFS
        color, stack, cycles = {}, [], []
        def dfs(u):
            color[u] = 1
            stack.append(u)
            for v in sorted(edges[u]):
                if color.get(v) == 1:
                    cycles.append(stack[stack.index(v):] + [v])
                elif not color.get(v):
                    dfs(v)
            stack.pop()
            color[u] = 2
        for m in sorted(mods):
            if not color.get(m):
                dfs(m)
        n_edges = sum(len(v) for v in edges.values())
        print(f"{crate}: {len(mods)} modules, {n_edges} import edges, {len(cycles)} cycles")
        for c in cycles:
            found = True
            print("   cycle: " + " → ".join("::".join(x) or "crate" for x in c))
    sys.exit(1 if found else 0)

main()
