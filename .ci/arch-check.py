#!/usr/bin/env python3
"""Architecture limits of src/ (docs/architecture.md): no file over 600 lines,
no function over 100 lines, no import cycle between modules, action-state
literals only in the state enum and the store's mapping (a line that uses the
same word for something else says so in a comment: "not an action state").

Import edges: every `crate::a::b` and `super::` path in a file. Cycles are looked
for between top-level modules (a file counts for its top-level module) and
between sibling modules inside each parent (a file counts for the sibling that
holds it). A parent's use of its own children is structure, not a cycle.

Usage: python3 .ci/arch-check.py [--report]   (exit 1 when a limit is broken)
"""
import os, re, sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
MAX_FILE, MAX_FN = 600, 100
STATES = ["planned", "pending", "approved", "ready", "executing", "done", "already_done",
          "refused", "failed", "rejected", "expired", "skipped", "carried_over"]
STATE_HOMES = ("domain/state.rs", "store/")


def strip(text):
    """Source with comments, strings and char literals blanked (lines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        m = re.match(r'b?r(#*)"', text[i:i + 10])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('"' + re.sub(r"[^\n]", " ", text[i + 1:j]) + '"')
            i = j + 1
            continue
        m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12])
        if c == "'" and m:
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def files():
    for root, _, names in os.walk(SRC):
        for f in sorted(names):
            if f.endswith(".rs"):
                p = os.path.join(root, f)
                yield os.path.relpath(p, SRC), p


def module_of(rel):
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def functions(clean):
    lines = clean.split("\n")
    res = []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            for ch in lines[j]:
                if ch == "{":
                    depth += 1
                    started = True
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not started and depth == 0:
                    j = -1
                    break
            if j < 0 or (started and depth == 0):
                break
            j += 1
        if j >= 0:
            res.append((m.group(7), i + 1, j - i + 1))
    return res


def edges(mod, clean):
    out = set()
    for m in re.finditer(r"\bcrate((?:::\w+)+)", clean):
        out.add(tuple(m.group(1).split("::")[1:]))
    for m in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+)", clean):
        ups = m.group(1).count("super::")
        base = mod[:len(mod) - ups] if ups <= len(mod) else []
        out.add(tuple(base) + tuple(m.group(2).split("::")))
    return out


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, res, k = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = k[0]
        k[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                res.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return res


def main():
    report = "--report" in sys.argv
    problems, mods, longest_fn, longest_file = [], {}, ("", 0), ("", 0)
    for rel, path in files():
        text = open(path, encoding="utf-8").read()
        clean = strip(text)
        n = text.count("\n")
        longest_file = max(longest_file, (rel, n), key=lambda x: x[1])
        if n > MAX_FILE:
            problems.append(f"src/{rel}: {n} lines (limit {MAX_FILE})")
        for name, line, length in functions(clean):
            if length > longest_fn[1]:
                longest_fn = (f"src/{rel}:{line} {name}", length)
            if length > MAX_FN:
                problems.append(f"src/{rel}:{line}: fn {name} is {length} lines (limit {MAX_FN})")
            elif report and length > 80:
                print(f"note: src/{rel}:{line}: fn {name} is {length} lines")
        if not rel.startswith(STATE_HOMES) and not rel.startswith("bin"):
            code = text.split("#[cfg(test)]")[0]
            lines = code.split("\n")
            for s in STATES:
                for m in re.finditer('"' + s + '"', code):
                    ln = code[:m.start()].count("\n") + 1
                    if "not an action state" in lines[ln - 1]:
                        continue  # a run outcome or a counter that shares the word
                    problems.append(f"src/{rel}:{ln}: state literal \"{s}\" outside the state enum and the store")
        mods[tuple(module_of(rel))] = clean
    known = set(mods)

    def resolve(path):
        for i in range(len(path), 0, -1):
            if tuple(path[:i]) in known:
                return tuple(path[:i])
        return None

    top, sib = {}, {}
    for mod, clean in mods.items():
        for e in edges(list(mod), clean):
            tgt = resolve(e)
            if not tgt or not mod or tgt == mod:
                continue
            if tgt[0] != mod[0]:
                top.setdefault(mod[0], set()).add(tgt[0])
            # deepest common parent; a path inside it makes a sibling edge
            c = 0
            while c < min(len(mod), len(tgt)) and mod[c] == tgt[c]:
                c += 1
            if c < len(mod) and c < len(tgt):
                a, b = mod[:c + 1], tgt[:c + 1]
                if a != b and c > 0:
                    sib.setdefault(a, set()).add(b)
    for comp in cycles(top):
        problems.append("import cycle between top-level modules: " + " -> ".join(comp))
    for comp in cycles(sib):
        problems.append("import cycle between sibling modules: " + ", ".join("::".join(c) for c in comp))
    for p in problems:
        print(p)
    print(f"longest file: src/{longest_file[0]} ({longest_file[1]} lines); longest fn: {longest_fn[0]} ({longest_fn[1]} lines)")
    if problems:
        print(f"arch-check: {len(problems)} problem(s)")
        return 1
    print("arch-check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
