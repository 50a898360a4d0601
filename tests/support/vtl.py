"""The subset of Velocity (VTL) that API Gateway mapping templates in cloud/template.yaml use.

The stand-in renders the template's own text with this, so a change to the mapping (a
renamed key, a dropped header loop) reaches the function exactly as it would in AWS.
Covered: text, ``$ref`` chains of properties and method calls (``$a.b.get($c)``),
``#set($x = ref)``, ``#foreach($x in ref) ... #end`` with ``$foreach.hasNext``,
``#if(ref) ... #else ... #end``, string literals as arguments. Anything else is a
``TemplateError`` naming what is not modelled, so a template using more fails loudly
here instead of being rendered wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class TemplateError(ValueError):
    pass


_DIRECTIVE = re.compile(r"#(set|foreach|if|else|end)\b")
_REFERENCE = re.compile(r"\$!?\{?([A-Za-z][\w-]*)")
_IDENT = re.compile(r"\.([A-Za-z][\w]*)(\()?")


def escape_javascript(text: str) -> str:
    """$util.escapeJavaScript: JavaScript string rules (Commons Lang), which escape the
    single quote as \\' (not valid JSON, as AWS's documentation warns) and the slash."""
    out = []
    for ch in str(text):
        if ch in "\"'\\/":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ord(ch) < 0x20 or ord(ch) > 0x7E:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


class KeyedMap(dict[str, Any]):
    """A Java Map as VTL sees it: .keySet(), .get(k), and properties read as keys."""

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "keySet" and not args:
            return list(self.keys())
        if name == "get" and len(args) == 1:
            return self.get(args[0])
        if name == "size" and not args:
            return len(self)
        raise TemplateError(f"Map.{name}() is not modelled")


@dataclass
class Loop:
    has_next: bool
    index: int

    def attribute(self, name: str) -> Any:
        if name == "hasNext":
            return self.has_next
        if name in ("index", "count"):
            return self.index + (name == "count")
        raise TemplateError(f"$foreach.{name} is not modelled")


@dataclass
class Methods:
    """An object with methods only ($input, $util): name -> callable."""

    name: str
    methods: Mapping[str, Callable[..., Any]]
    properties: Mapping[str, Any]

    def call(self, name: str, args: list[Any]) -> Any:
        if name not in self.methods:
            raise TemplateError(f"${self.name}.{name}() is not modelled")
        return self.methods[name](*args)

    def attribute(self, name: str) -> Any:
        if name not in self.properties:
            raise TemplateError(f"${self.name}.{name} is not modelled")
        return self.properties[name]


def _attribute(value: Any, name: str) -> Any:
    if isinstance(value, KeyedMap | dict):
        return value.get(name)
    if isinstance(value, Loop | Methods):
        return value.attribute(name)
    raise TemplateError(f"cannot read .{name} of {type(value).__name__}")


def _call(value: Any, name: str, args: list[Any]) -> Any:
    if isinstance(value, KeyedMap | Methods):
        return value.call(name, args)
    if isinstance(value, dict):
        return KeyedMap(value).call(name, args)
    raise TemplateError(f"cannot call .{name}() on {type(value).__name__}")


def _render_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_render_value(v)}" for k, v in value.items()) + "}"
    return str(value)


class _Renderer:
    def __init__(self, template: str, variables: dict[str, Any]) -> None:
        self.text = template
        self.variables = variables

    # -- references --------------------------------------------------------------
    def reference(self, pos: int, live: bool = True) -> tuple[Any, int, bool]:
        """Evaluates $name(.attr | .method(args))* at pos: (value, end, defined).
        Not live (a block being skipped), it is only parsed."""
        m = _REFERENCE.match(self.text, pos)
        if not m:
            raise TemplateError(f"a reference expected at offset {pos}")
        braced = "{" in self.text[m.start() : m.start(1)]
        name = m.group(1)
        defined = name in self.variables
        value = self.variables.get(name)
        pos = m.end()
        while True:
            step = _IDENT.match(self.text, pos)
            if not step:
                break
            if step.group(2):  # a method call
                args, pos = self.arguments(step.end(), live)
                value = _call(value, step.group(1), args) if live else None
            else:
                value = _attribute(value, step.group(1)) if live else None
                pos = step.end()
        if braced:
            if not self.text.startswith("}", pos):
                raise TemplateError(f"an unclosed ${{ at offset {m.start()}")
            pos += 1
        return value, pos, defined

    def arguments(self, pos: int, live: bool) -> tuple[list[Any], int]:
        args: list[Any] = []
        while True:
            pos = self.skip_space(pos)
            if self.text.startswith(")", pos):
                return args, pos + 1
            if self.text[pos] in "'\"":
                quote = self.text[pos]
                end = self.text.index(quote, pos + 1)
                args.append(self.text[pos + 1 : end])
                pos = end + 1
            elif self.text[pos] == "$":
                value, pos, _ = self.reference(pos, live)
                args.append(value)
            else:
                raise TemplateError(f"an argument form at offset {pos} is not modelled")
            pos = self.skip_space(pos)
            if self.text.startswith(",", pos):
                pos += 1

    def skip_space(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in " \t":
            pos += 1
        return pos

    def expect(self, pos: int, token: str) -> int:
        pos = self.skip_space(pos)
        if not self.text.startswith(token, pos):
            raise TemplateError(f"{token!r} expected at offset {pos}")
        return pos + len(token)

    # -- blocks --------------------------------------------------------------------
    def block(self, pos: int, out: list[str] | None, stop: tuple[str, ...]) -> tuple[int, str]:
        """Renders until one of the stop directives (not consumed); out=None skips."""
        while pos < len(self.text):
            ch = self.text[pos]
            if ch == "#":
                d = _DIRECTIVE.match(self.text, pos)
                if d and d.group(1) in stop:
                    return pos, d.group(1)
                if d:
                    pos = self.directive(d.group(1), d.end(), out)
                    continue
            elif ch == "$" and _REFERENCE.match(self.text, pos):
                start = pos
                value, pos, defined = self.reference(pos, out is not None)
                if out is not None:
                    # An undefined reference renders as itself, as Velocity does.
                    out.append(_render_value(value) if defined else self.text[start:pos])
                continue
            if out is not None:
                out.append(ch)
            pos += 1
        if stop:
            raise TemplateError(f"#{'/#'.join(stop)} expected before the end of the template")
        return pos, ""

    def directive(self, name: str, pos: int, out: list[str] | None) -> int:
        if name == "set":
            variable, pos = self.assignment(name, pos, "=")
            value, pos, _ = self.reference(self.skip_space(pos), out is not None)
            pos = self.expect(pos, ")")
            if out is not None:
                self.variables[variable] = value
            return pos
        if name == "foreach":
            variable, pos = self.assignment(name, pos, "in")
            items, pos, _ = self.reference(self.skip_space(pos), out is not None)
            body = self.expect(pos, ")")
            items = list(items or []) if out is not None else []
            end = self.skip_block(body)
            saved = self.variables.get("foreach")
            for i, item in enumerate(items):
                self.variables[variable] = item
                self.variables["foreach"] = Loop(i + 1 < len(items), i)
                self.block(body, out, ("end",))
            self.variables["foreach"] = saved
            return end
        if name == "if":
            pos = self.expect(pos, "(")
            value, pos, _ = self.reference(self.skip_space(pos), out is not None)
            pos = self.expect(pos, ")")
            truth = bool(value) if out is not None else False
            pos, stopped = self.block(pos, out if truth else None, ("else", "end"))
            if stopped == "else":
                pos, _ = self.block(pos + len("#else"), out if (out is not None and not truth) else None, ("end",))
            return pos + len("#end")
        raise TemplateError(f"#{name} without its opening directive")

    def assignment(self, directive: str, pos: int, separator: str) -> tuple[str, int]:
        """``($name <separator>`` of #set and #foreach: the variable, and where its value starts."""
        pos = self.expect(pos, "(")
        target = _REFERENCE.match(self.text, self.skip_space(pos))
        if not target:
            raise TemplateError(f"#{directive} needs a variable at offset {pos}")
        return target.group(1), self.expect(target.end(), separator)

    def skip_block(self, pos: int) -> int:
        """The offset after the #end closing a block that starts at pos."""
        end, _ = self.block(pos, None, ("end",))
        return end + len("#end")


def render(template: str, variables: dict[str, Any]) -> str:
    out: list[str] = []
    _Renderer(template, dict(variables)).block(0, out, ())
    return "".join(out)
