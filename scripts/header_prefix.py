#!/usr/bin/env python3
"""Fails when the public C header declares anything outside libtshm's namespace.

    header_prefix.py HEADER     exit 0 when every macro, type, tag, enumerator, function and
                                 function-pointer type the header declares at file scope starts
                                 with tshm_ or TSHM_ (or is the handle type, tshm);
                                 otherwise lists the others, exit 1
    header_prefix.py --self-test HEADER
                                 plants one unprefixed name of each kind in a copy of HEADER
                                 (before its last #endif) and exits 1 unless each is found

A program that includes tshm.h must be free to use every other name.
"""

import re
import sys


def file_scope_names(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    # the C++ linkage wrapper (extern "C" { ... }) is not a scope of its own: its two braces go,
    # whatever else a __cplusplus block holds stays and is checked
    text = re.sub(r'\bextern\s*"C"\s*\{', " ", text)
    text = re.sub(r"^(\s*#\s*ifdef\s+__cplusplus\b[^\n]*\n)\s*\}", r"\1 ", text, flags=re.M)
    names = set(re.findall(r"^\s*#\s*define\s+(\w+)", text, flags=re.M))
    code = re.sub(r"^\s*#[^\n]*", " ", text, flags=re.M)
    names |= set(re.findall(r"\b(?:struct|union|enum)\s+(\w+)", code))
    names |= set(re.findall(r"\(\s*\*\s*(\w+)\s*\)\s*\(", code))  # function-pointer types
    depth, start, top = 0, 0, []
    for i, c in enumerate(code):  # top-level declarations: the text outside braces, up to ';'
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == ";" and depth == 0:
            top.append(code[start:i])
            start = i + 1
    top.append(code[start:])  # a last declaration without ';' (a function definition)
    for decl in top:
        flat = re.sub(r"\{[^{}]*\}", " ", decl)
        while re.search(r"\{[^{}]*\}", flat):
            flat = re.sub(r"\{[^{}]*\}", " ", flat)
        fn = re.match(r"[^()]*?\b(\w+)\s*\(", flat)
        if fn and not flat.lstrip().startswith("typedef"):
            names.add(fn.group(1))  # a function
        else:
            last = re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*$", flat)
            if last:
                names.add(last[0])  # a typedef name or an object
    for body in re.findall(r"\benum\b[^{;]*\{([^}]*)\}", code):
        names |= {m.strip().split("=")[0].strip() for m in body.split(",") if m.strip()}
    return names


# One unprefixed name of each kind, and the name the check must report for it.
PLANTS = [
    ("#define PLANT_MACRO 1", "PLANT_MACRO"),
    ("#  define  plant_fnmacro(x) (x)", "plant_fnmacro"),
    ("#define TSHM_PLANT_OK \\\n    1\n#define PLANT_AFTER_CONTINUATION 2", "PLANT_AFTER_CONTINUATION"),
    ("#if 0\n#define PLANT_DISABLED 1\n#endif", "PLANT_DISABLED"),
    ("#ifdef __cplusplus\n#define PLANT_CPLUSPLUS 1\n#endif", "PLANT_CPLUSPLUS"),
    ("typedef int plant_int;", "plant_int"),
    ("typedef struct { int a; } plant_anon;", "plant_anon"),
    ("struct plant_tag;", "plant_tag"),
    ("enum tshm_plant { TSHM_PLANT_A, PLANT_ENUMERATOR };", "PLANT_ENUMERATOR"),
    ("typedef void (*plant_fn)(void);", "plant_fn"),
    ("extern int plant_object;", "plant_object"),
    ("int plant_function(void);", "plant_function"),
    ("static inline int plant_inline(void) { return 0; }", "plant_inline"),
]


def self_test(text):
    at = text.rindex("#endif")
    missed = [
        name
        for plant, name in PLANTS
        if name not in file_scope_names(text[:at] + plant + "\n" + text[at:])
    ]
    if missed:
        print(f"header_prefix.py: planted names not found: {', '.join(missed)}")
        sys.exit(1)
    print(f"header_prefix.py: finds each of {len(PLANTS)} planted unprefixed names")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--self-test":
        with open(sys.argv[2]) as f:
            self_test(f.read())
        return
    if len(sys.argv) != 2:
        sys.exit("usage: header_prefix.py [--self-test] HEADER")
    with open(sys.argv[1]) as f:
        names = file_scope_names(f.read())
    # `tshm` itself is the handle type (`struct tshm`), as `sqlite3` is SQLite's
    bad = sorted(n for n in names if n != "tshm" and not n.startswith(("tshm_", "TSHM_")))
    if bad:
        print(f"{sys.argv[1]}: names outside tshm_/TSHM_: {', '.join(bad)}")
        sys.exit(1)
    print(f"{sys.argv[1]}: {len(names)} file-scope names, all prefixed tshm_ or TSHM_")


if __name__ == "__main__":
    main()
