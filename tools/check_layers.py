#!/usr/bin/env python3
"""Fails (exit 1) when a source file includes a header of a folder its layer may not use.

Each layer folder (engine/, kernels/, data/, export/, dist/, serve/, tools/) has a header, folder.h,
whose line "// may include: a, b, c" lists the folders its files may include (docs/ARCHITECTURE.md,
"Layers"). Every `#include "X/..."` of a file under the folder, X one of those folders, must name an
allowed X. Run by every build (the tandem_layers target) and by ctest (label cpu).

  python3 tools/check_layers.py [REPO]
"""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"/]+)/[^"]*"')
SOURCES = (".h", ".hpp", ".cpp", ".cc", ".cu", ".cuh")


def rules():
    out = {}
    for entry in sorted(os.listdir(ROOT)):
        header = os.path.join(ROOT, entry, "folder.h")
        if not os.path.isfile(header):
            continue
        for line in open(header, encoding="utf-8"):
            m = re.match(r"^//\s*may include:\s*(.*)$", line)
            if m:
                out[entry] = {f.strip() for f in m.group(1).split(",") if f.strip()}
                break
        else:
            sys.exit(f"check_layers: {entry}/folder.h has no '// may include:' line")
    return out


def main():
    allowed = rules()
    layers = set(allowed)
    problems = []
    for folder, may in sorted(allowed.items()):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(files):
                if not name.endswith(SOURCES):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)
                for n, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
                    m = INCLUDE.match(line)
                    if m and m.group(1) in layers and m.group(1) not in may:
                        problems.append(f"{rel}:{n}: includes {line.split(chr(34))[1]}, but {folder}/ may include "
                                        f"{', '.join(sorted(may))} only ({folder}/folder.h)")
    for p in problems:
        print("check_layers: " + p, file=sys.stderr)
    if problems:
        print("  hint: move what is shared down to the layer that owns it (docs/ARCHITECTURE.md, Layers), or "
              "depend on an interface the lower layer declares", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
