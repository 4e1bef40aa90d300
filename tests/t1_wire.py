"""The wire formats between the library and the daemon have one definition, the C header the
library compiles with, which daxfuse/views/wire.py reads: the two must agree on
every constant, every field's offset and every structure's size, as a C
compiler lays them out."""
import os
import re
import struct
import subprocess

from daxfuse.views import wire


def test_python_reads_the_header_as_the_compiler_does(tmp_path):
    lines = []
    for name, (layout, fields) in wire.STRUCTS.items():
        lines.append(f'printf("sizeof {name} %zu\\n", sizeof(struct {name}));')
        for field in fields._fields:
            lines.append(f'printf("offsetof {name}.{field} %zu\\n", offsetof(struct {name}, {field}));')
    for name in wire.CONSTANTS:
        lines.append(f'printf("{name} %lld\\n", (long long)({name}));')
    source = tmp_path / "layout.c"
    source.write_text("#include <stddef.h>\n#include <stdio.h>\n#include \"daxfuse_wire.h\"\n"
                      "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", os.path.dirname(wire.HEADER), "-o", str(exe), str(source)],
                   check=True)
    compiled = dict(line.rsplit(" ", 1) for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                                   check=True).stdout.splitlines())
    python = {}
    for name, (layout, fields) in wire.STRUCTS.items():
        python[f"sizeof {name}"] = layout.size
        offset = 0
        for field, code in zip(fields._fields, re.findall(r"\d*[a-zA-Z]", layout.format.lstrip("<"))):
            python[f"offsetof {name}.{field}"] = offset
            offset += struct.calcsize("<" + code)
    python.update((name, value) for name, value in wire.CONSTANTS.items())
    assert {k: int(v) for k, v in compiled.items()} == python
