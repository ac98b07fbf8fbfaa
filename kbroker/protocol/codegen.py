"""Generate Python source for the decoder and encoder of one message version.

Walking the spec field by field at run time costs an interpreter dispatch per field; instead
each (message class, version) gets straight-line functions, one per struct, compiled once
on first use. Consecutive fixed-width values (ints, bools, uuids, and the int16/int32
length prefixes of non-flexible strings, bytes and arrays) are read and written with one
precompiled ``struct.Struct`` per run.

Generated decoders have the signature ``d_<Struct>(buf, p, end) -> (obj, p)``: ``buf`` is
a memoryview of the whole frame, ``p`` the cursor, ``end`` the limit for length checks (a tagged field's
end inside its section). Out-of-range reads surface as CorruptFrame, struct.error or
IndexError; codec.py turns the latter two into CorruptFrame.

Generated encoders have the signature ``e_<Struct>(o, b, big)``: they append to the
bytearray ``b``; ``records`` values that are FileRegions or larger than INLINE_RECORDS_MAX
are not copied but noted in ``big`` as ``(offset in b, value)`` for the caller to splice in.
"""

from __future__ import annotations

import linecache
import struct
import uuid
from contextlib import contextmanager

from kbroker.protocol.exceptions import CorruptFrame
from kbroker.protocol.messages import Field, Struct
from kbroker.protocol.primitives import read_uvarint, write_uvarint
from kbroker.protocol.region import FileRegion
from kbroker.protocol.specs import in_range

# Records values above this size are sent as their own buffer instead of being copied.
INLINE_RECORDS_MAX = 1024

FIXED_FORMATS = {
    "bool": "?", "int8": "b", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I",
    "int64": "q", "float64": "d", "uuid": "16s",
}


def records_size(value) -> int:
    """Wire length of a records value: -1 for null, a FileRegion's size, else its length
    (records buffers are bytes, bytearrays or byte-format memoryviews)."""
    if value is None:
        return -1
    if type(value) is FileRegion:
        return value.size
    return len(value)


class _Lines:
    """Source text with indentation handling."""

    def __init__(self, indent: int = 1):
        self.lines: list[str] = []
        self.indent = indent

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    @contextmanager
    def block(self, header: str):
        self.emit(header)
        self.indent += 1
        yield
        self.indent -= 1


class _Run:
    """Consecutive fixed-width values waiting to be read or written with one struct.Struct.

    ``before`` lines must run before the pack (encoders: computing lengths); ``after`` lines
    after the unpack (decoders: converting uuids).
    """

    def __init__(self, module: _Module, out: _Lines):
        self.module = module
        self.out = out
        self.formats: list[str] = []
        self.items: list[str] = []
        self.before: list[str] = []
        self.after: list[str] = []

    def add(self, fmt: str, item: str) -> None:
        self.formats.append(fmt)
        self.items.append(item)

    def flush_read(self) -> None:
        if self.formats:
            packer = self.module.packer(self.formats)
            targets = ", ".join(self.items) + ("," if len(self.items) == 1 else "")
            self.out.emit(f"{targets} = {packer}.unpack_from(buf, p)")
            self.out.emit(f"p += {struct.calcsize('>' + ''.join(self.formats))}")
        for line in self.after:
            self.out.emit(line)
        self._reset()

    def flush_write(self, buf: str) -> None:
        for line in self.before:
            self.out.emit(line)
        if self.formats == ["B"]:
            self.out.emit(f"{buf}.append({self.items[0]})")
        elif self.formats:
            packer = self.module.packer(self.formats)
            self.out.emit(f"{buf} += {packer}.pack({', '.join(self.items)})")
        self._reset()

    def _reset(self) -> None:
        self.formats, self.items, self.before, self.after = [], [], [], []


def _struct(f: Field) -> type[Struct]:
    """The class of a struct-typed field (set for every field whose type is "struct")."""
    assert f.struct is not None, f.name
    return f.struct


def _tag(f: Field) -> int:
    """The tag of a tagged field (set for every field in a tagged position)."""
    assert f.tag is not None, f.name
    return f.tag


class _Module:
    """One generated source module: all struct functions of a message at one version."""

    def __init__(self, cls: type[Struct], version: int):
        self.version = version
        self.flexible = in_range(cls._flexible_versions, version)
        self.env = {
            "new": object.__new__, "unpack_from": struct.unpack_from, "pack": struct.pack,
            "UUID": uuid.UUID, "CorruptFrame": CorruptFrame, "read_uvarint": read_uvarint,
            "write_uvarint": write_uvarint, "records_size": records_size, "FileRegion": FileRegion,
            "INLINE_RECORDS_MAX": INLINE_RECORDS_MAX,
        }
        self.functions: list[str] = []
        self.seen: set[type[Struct]] = set()
        self.todo: list[type[Struct]] = []
        self.counter = 0
        self.packers: dict[str, str] = {}

    # -- helpers shared by both directions ------------------------------------------------

    def var(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value) -> str:
        name = self.var("K")
        self.env[name] = value
        return name

    def packer(self, formats: list[str]) -> str:
        fmt = ">" + "".join(formats)
        if fmt not in self.packers:
            self.packers[fmt] = self.const(struct.Struct(fmt))
        return self.packers[fmt]

    def class_ref(self, cls: type[Struct]) -> str:
        name = f"C_{cls.__name__}"
        self.env[name] = cls
        return name

    def struct_function(self, prefix: str, cls: type[Struct]) -> str:
        """Name of the function for struct ``cls``, generated later if not yet done."""
        if cls not in self.seen:
            self.seen.add(cls)
            self.todo.append(cls)
            self.class_ref(cls)
        return f"{prefix}_{cls.__name__}"

    def split_fields(self, cls: type[Struct]) -> tuple[list[Field], list[Field], list[Field]]:
        """(inline fields in wire order, tagged fields by tag, fields absent from this version)."""
        inline, tagged, absent = [], [], []
        for f in cls._fields:
            if not in_range(f.versions, self.version):
                absent.append(f)
            elif f.tag is not None and in_range(f.tagged_versions, self.version):
                tagged.append(f)
            else:
                inline.append(f)
        tagged.sort(key=_tag)
        return inline, tagged, absent

    def nullable(self, f: Field) -> bool:
        """Whether a value (not an array element) of ``f`` may be null in this version."""
        return in_range(f.nullable_versions, self.version)

    def compact(self, f: Field) -> bool:
        """Whether lengths use uvarint N+1 (flexible) rather than int16/int32."""
        if f.flexible_override:
            return in_range(f.flexible_versions, self.version)
        return self.flexible

    def default_expr(self, f: Field) -> str:
        if f.fresh_default is list:
            return "[]"
        if f.fresh_default is not None:
            return f"{self.class_ref(_struct(f))}()"
        if f.default is None or isinstance(f.default, (bool, int, float, str, bytes)):
            return repr(f.default)
        return self.const(f.default)

    def compile(self, entry: str, build) -> object:
        """Generate functions until every reachable struct has one; return the entry function.

        The source is registered with linecache so tracebacks and inspect show generated lines.
        """
        while self.todo:
            build(self.todo.pop())
        source = "\n\n".join(self.functions) + "\n"
        filename = f"<kbroker.protocol.codegen {entry} v{self.version}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), self.env)
        return self.env[entry]


class _DecoderModule(_Module):
    def build(self, cls: type[Struct]) -> None:
        out = _Lines()
        run = _Run(self, out)
        out.emit(f"o = new(C_{cls.__name__})")
        inline, tagged, absent = self.split_fields(cls)
        for f in inline:
            self.read_field(f, f"o.{f.attr}", run, "end", cls.__name__)
        run.flush_read()
        for f in absent + tagged:
            out.emit(f"o.{f.attr} = {self.default_expr(f)}")
        if self.flexible:
            self.read_tagged(tagged, out, cls.__name__)
        out.emit("return o, p")
        header = f"def d_{cls.__name__}(buf, p, end):\n"
        self.functions.append(header + "\n".join(out.lines))

    def corrupt(self, out: _Lines, where: str, what: str) -> None:
        out.emit(f"raise CorruptFrame({f'{where}: {what}'!r})")

    def read_uvarint(self, out: _Lines, target: str) -> None:
        out.emit(f"{target} = buf[p]")
        with out.block(f"if {target} < 128:"):
            out.emit("p += 1")
        with out.block("else:"):
            out.emit(f"{target}, p = read_uvarint(buf, p)")

    def read_length(self, f: Field, fmt: str, run: _Run, compact: bool) -> str:
        """Read a length or count into a fresh variable: -1 means null."""
        n = self.var("n")
        if compact:
            run.flush_read()
            self.read_uvarint(run.out, n)
            run.out.emit(f"{n} -= 1")
        else:
            run.add(fmt, n)
            run.flush_read()
        return n

    def null_or(self, f: Field, n: str, target: str, out: _Lines, where: str, nullable: bool, compact: bool):
        """Emit the branch for a negative length ``n``; return the block for the non-null case."""
        with out.block(f"if {n} < 0:"):
            if not nullable:
                self.corrupt(out, where, f"null in non-nullable {f.name}")
            else:
                if not compact:
                    with out.block(f"if {n} != -1:"):
                        self.corrupt(out, where, f"negative length in {f.name}")
                out.emit(f"{target} = None")
        return out.block("else:")

    def read_field(self, f: Field, target: str, run: _Run, end: str, where: str) -> None:
        if f.array:
            self.read_array(f, target, run, end, where)
        else:
            self.read_value(f, target, run, end, where)

    def read_array(self, f: Field, target: str, run: _Run, end: str, where: str) -> None:
        out = run.out
        compact = self.compact(f)
        n = self.read_length(f, "i", run, compact)
        with self.null_or(f, n, target, out, where, self.nullable(f), compact):
            with out.block(f"if {n} > {end} - p:"):
                self.corrupt(out, where, f"array {f.name} longer than the frame")
            fmt = FIXED_FORMATS.get(f.type)
            if fmt is not None and f.type != "uuid":
                out.emit(f"{target} = list(unpack_from('>%d{fmt}' % {n}, buf, p))")
                out.emit(f"p += {n} * {struct.calcsize(fmt)}")
                return
            items = self.var("l")
            item = self.var("x")
            out.emit(f"{items} = []")
            with out.block(f"for _ in range({n}):"):
                inner = _Run(self, out)
                self.read_value(f, item, inner, end, where)
                inner.flush_read()
                out.emit(f"{items}.append({item})")
            out.emit(f"{target} = {items}")

    def read_value(self, f: Field, target: str, run: _Run, end: str, where: str) -> None:
        """Read one non-array value (or one array element) of ``f``'s type into ``target``."""
        out = run.out
        if f.type == "uuid":
            raw = self.var("u")
            run.add("16s", raw)
            run.after.append(f"{target} = UUID(bytes={raw})")
        elif f.type in FIXED_FORMATS:
            run.add(FIXED_FORMATS[f.type], target)
        elif f.type == "struct":
            function = self.struct_function("d", _struct(f))
            if self.nullable(f) and not f.array:
                flag = self.var("f")
                run.add("b", flag)
                run.flush_read()
                with out.block(f"if {flag} < 0:"):
                    out.emit(f"{target} = None")
                with out.block("else:"):
                    out.emit(f"{target}, p = {function}(buf, p, {end})")
            else:
                run.flush_read()
                out.emit(f"{target}, p = {function}(buf, p, {end})")
        else:
            self.read_sized(f, target, run, end, where)

    def read_sized(self, f: Field, target: str, run: _Run, end: str, where: str) -> None:
        """string, bytes, records: a length then that many bytes."""
        out = run.out
        compact = self.compact(f)
        n = self.read_length(f, "h" if f.type == "string" else "i", run, compact)
        convert = {
            "string": "str(buf[p:{q}], 'utf-8')",
            "bytes": "bytes(buf[p:{q}])",
            "records": "buf[p:{q}]",  # buf is a memoryview: a zero-copy slice
        }[f.type]
        # Array elements are never null; only the array itself may be.
        with self.null_or(f, n, target, out, where, self.nullable(f) and not f.array, compact):
            q = self.var("q")
            out.emit(f"{q} = p + {n}")
            with out.block(f"if {q} > {end}:"):
                self.corrupt(out, where, f"{f.name} runs past the end")
            out.emit(f"{target} = {convert.format(q=q)}")
            out.emit(f"p = {q}")

    def read_tagged(self, tagged: list[Field], out: _Lines, where: str) -> None:
        count, tag, size, stop = self.var("nt"), self.var("tg"), self.var("sz"), self.var("qt")
        self.read_uvarint(out, count)
        with out.block(f"if {count} > end - p:"):
            self.corrupt(out, where, "too many tagged fields")
        with out.block(f"for _ in range({count}):"):
            self.read_uvarint(out, tag)
            self.read_uvarint(out, size)
            out.emit(f"{stop} = p + {size}")
            with out.block(f"if {stop} > end:"):
                self.corrupt(out, where, "tagged field runs past the end")
            for i, f in enumerate(tagged):
                with out.block(f"{'if' if i == 0 else 'elif'} {tag} == {f.tag}:"):
                    run = _Run(self, out)
                    self.read_field(f, f"o.{f.attr}", run, stop, where)
                    run.flush_read()
                    with out.block(f"if p != {stop}:"):
                        self.corrupt(out, where, f"tagged field {f.name} has the wrong size")
            out.emit(f"p = {stop}")  # also skips unknown tags


class _EncoderModule(_Module):
    def build(self, cls: type[Struct]) -> None:
        out = _Lines()
        run = _Run(self, out)
        inline, tagged, _ = self.split_fields(cls)
        for f in inline:
            self.write_field(f, f"o.{f.attr}", run, "b")
        if self.flexible:
            if tagged:
                run.flush_write("b")
                self.write_tagged(tagged, out)
            else:
                run.add("B", "0")  # empty tagged-field section
        run.flush_write("b")
        if not out.lines:
            out.emit("pass")
        header = f"def e_{cls.__name__}(o, b, big):\n"
        self.functions.append(header + "\n".join(out.lines))

    def write_uvarint(self, out: _Lines, buf: str, value: str) -> None:
        n = self.var("n")
        out.emit(f"{n} = {value}")
        with out.block(f"if {n} < 128:"):
            out.emit(f"{buf}.append({n})")
        with out.block("else:"):
            out.emit(f"{buf} += write_uvarint({n})")

    def write_length(self, f: Field, fmt: str, run: _Run, buf: str, length: str, compact: bool) -> None:
        """Write a length already adjusted so that null is -1 (compact adds 1)."""
        if compact:
            run.flush_write(buf)
            self.write_uvarint(run.out, buf, f"({length}) + 1")
        else:
            run.add(fmt, length)
            run.flush_write(buf)

    def write_field(self, f: Field, value: str, run: _Run, buf: str) -> None:
        if f.array:
            self.write_array(f, value, run, buf)
        else:
            self.write_value(f, value, run, buf)

    def write_array(self, f: Field, value: str, run: _Run, buf: str) -> None:
        out = run.out
        items = self.var("l")
        nullable = self.nullable(f)
        run.before.append(f"{items} = {value}")
        length = f"-1 if {items} is None else len({items})" if nullable else f"len({items})"
        self.write_length(f, "i", run, buf, length, self.compact(f))
        with out.block(f"if {items}:"):
            fmt = FIXED_FORMATS.get(f.type)
            if fmt is not None and f.type != "uuid":
                out.emit(f"{buf} += pack('>%d{fmt}' % len({items}), *{items})")
                return
            item = self.var("x")
            with out.block(f"for {item} in {items}:"):
                inner = _Run(self, out)
                self.write_value(f, item, inner, buf)
                inner.flush_write(buf)

    def write_value(self, f: Field, value: str, run: _Run, buf: str) -> None:
        out = run.out
        if f.type == "uuid":
            run.add("16s", f"{value}.bytes")
        elif f.type in FIXED_FORMATS:
            run.add(FIXED_FORMATS[f.type], value)
        elif f.type == "struct":
            function = self.struct_function("e", _struct(f))
            run.flush_write(buf)
            if self.nullable(f) and not f.array:
                with out.block(f"if {value} is None:"):
                    out.emit(f"{buf}.append(255)")
                with out.block("else:"):
                    out.emit(f"{buf}.append(1)")
                    out.emit(f"{function}({value}, {buf}, big)")
            else:
                out.emit(f"{function}({value}, {buf}, big)")
        elif f.type == "records":
            self.write_records(f, value, run, buf)
        else:
            self.write_sized(f, value, run, buf)

    def write_sized(self, f: Field, value: str, run: _Run, buf: str) -> None:
        """string and bytes: a length, then the bytes."""
        data = self.var("s")
        encode = ".encode()" if f.type == "string" else ""
        nullable = self.nullable(f) and not f.array
        if nullable:
            run.before.append(f"{data} = None if {value} is None else {value}{encode}")
            length = f"-1 if {data} is None else len({data})"
        else:
            run.before.append(f"{data} = {value}{encode}")
            length = f"len({data})"
        self.write_length(f, "h" if f.type == "string" else "i", run, buf, length, self.compact(f))
        if nullable:
            with run.out.block(f"if {data} is not None:"):
                run.out.emit(f"{buf} += {data}")
        else:
            run.out.emit(f"{buf} += {data}")

    def write_records(self, f: Field, value: str, run: _Run, buf: str) -> None:
        """records: large values and FileRegions are spliced in by the caller, never copied.

        Offsets in ``big`` are positions in ``b``; no schema puts records inside a tagged field
        (which is written to a scratch buffer first).
        """
        data, size = self.var("r"), self.var("z")
        run.before.append(f"{data} = {value}")
        run.before.append(f"{size} = records_size({data})")
        self.write_length(f, "i", run, buf, size, self.compact(f))
        out = run.out
        with out.block(f"if {size} > INLINE_RECORDS_MAX or type({data}) is FileRegion:"):
            out.emit(f"big.append((len(b), {data}))")
        with out.block(f"elif {size} > 0:"):
            out.emit(f"b += {data}")

    def write_tagged(self, tagged: list[Field], out: _Lines) -> None:
        """Count the non-default tagged fields, then write each as tag, size, value."""
        present = []
        for f in tagged:
            flag = self.var("w")
            out.emit(f"{flag} = {self.differs_from_default(f, f'o.{f.attr}')}")
            present.append(flag)
        out.emit(f"b.append({' + '.join(present)})")  # a struct never has 128 known tags
        for f, flag in zip(tagged, present):
            with out.block(f"if {flag}:"):
                fmt = FIXED_FORMATS.get(f.type)
                if fmt is not None and not f.array:
                    # Fixed width: the size is known, so write straight into b.
                    size = struct.calcsize(">" + fmt)
                    out.emit(f"b += {self.const(write_uvarint(_tag(f)) + write_uvarint(size))}")
                    run = _Run(self, out)
                    self.write_value(f, f"o.{f.attr}", run, "b")
                    run.flush_write("b")
                    continue
                value = self.var("vb")
                out.emit(f"{value} = bytearray()")
                run = _Run(self, out)
                self.write_field(f, f"o.{f.attr}", run, value)
                run.flush_write(value)
                out.emit(f"b += {self.const(write_uvarint(_tag(f)))}")
                self.write_uvarint(out, "b", f"len({value})")
                out.emit(f"b += {value}")

    def differs_from_default(self, f: Field, value: str) -> str:
        """An expression true when ``value`` is not ``f``'s default (Java's rule for writing tags).

        Struct defaults are compared field by field inline: a call to __eq__ per tagged
        struct would dominate the cost of encoding a FetchResponse partition.
        """
        if f.fresh_default is list:
            return f"{value} != []"
        if f.fresh_default is not None:
            parts = [self.differs_from_default(sub, f"{value}.{sub.attr}") for sub in _struct(f)._fields]
            return f"({' or '.join(parts)})" if parts else "False"
        return f"{value} != {self.default_expr(f)}"


def build_decoder(cls: type[Struct], version: int):
    """Compile ``d_<cls>(buf, p, end) -> (obj, p)`` for ``cls`` at ``version``."""
    module = _DecoderModule(cls, version)
    entry = module.struct_function("d", cls)
    return module.compile(entry, module.build)


def build_encoder(cls: type[Struct], version: int):
    """Compile ``e_<cls>(obj, b, big)`` for ``cls`` at ``version``."""
    module = _EncoderModule(cls, version)
    entry = module.struct_function("e", cls)
    return module.compile(entry, module.build)
