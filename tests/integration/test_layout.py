"""The engine's layout: no include cycles between its modules (a module is
a .c/.h pair), and every folder is one layer of the build. The compiler
already refuses a header from a higher layer (each library exposes only its
own folder); this catches cycles inside a layer, which it cannot."""
import os
import re

from conftest import ROOT

ENGINE = os.path.join(ROOT, "engine")
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def modules():
    """module name -> (folder, set of included module names)"""
    mods = {}
    for folder in sorted(os.listdir(ENGINE)):
        path = os.path.join(ENGINE, folder)
        if not os.path.isdir(path):
            continue
        for name in os.listdir(path):
            stem, ext = os.path.splitext(name)
            if ext not in (".c", ".h"):
                continue
            with open(os.path.join(path, name)) as f:
                deps = {os.path.splitext(os.path.basename(h))[0] for h in INCLUDE.findall(f.read())}
            entry = mods.setdefault(stem, (folder, set()))
            assert entry[0] == folder, f"module {stem} is split between {entry[0]} and {folder}"
            entry[1].update(deps - {stem})
    return mods


def test_every_engine_file_lives_in_a_layer_folder():
    loose = [n for n in os.listdir(ENGINE) if os.path.isfile(os.path.join(ENGINE, n))]
    assert loose == [], f"files outside a layer folder: {loose}"


def test_no_include_cycles_between_modules():
    mods = modules()
    graph = {m: {d for d in deps if d in mods} for m, (_, deps) in mods.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert cycles == [], "include cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_each_folder_is_a_library_in_the_build():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        cmake = f.read()
    layers = set(re.findall(r"^strata_layer\((\w+)", cmake, re.M))
    folders = {d for d in os.listdir(ENGINE) if os.path.isdir(os.path.join(ENGINE, d))}
    assert folders == layers, f"folders {sorted(folders)} vs libraries {sorted(layers)}"
