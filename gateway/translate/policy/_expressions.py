"""
A safe subset of APIM policy expressions, compiled once to Python closures.

APIM policy expressions are C#: ``@(expression)`` or ``@{ statements }``.
Running arbitrary C# (or ``eval`` of anything a configuration carries) is
out of the question, so a small, documented subset is tokenized and parsed
here (recursive descent) into a tree of closures, each taking a
:class:`PolicyContext`. The closures are built once per configuration;
evaluating one on a request is a few Python calls, with no parsing.

The subset (``docs/policies.md`` is the user's copy of this list):

* ``context.Request.Method``, ``context.Request.IpAddress``,
  ``context.Request.Headers.GetValueOrDefault("name"[, "default"])``,
  ``context.Subscription.Id``, ``context.Variables["name"]``,
  ``context.Variables.GetValueOrDefault<T>("name"[, default])`` with ``T``
  one of ``string``, ``int``, ``bool``, ``context.Variables.ContainsKey("name")``,
  ``context.LastError.Source|Reason|Message|Section``,
  ``context.Response.StatusCode`` (an error before there is a response);
* string literals (C# escapes, ``@"verbatim"``), integers, ``true``,
  ``false``, ``null``;
* ``==`` ``!=`` ``<`` ``>`` ``<=`` ``>=`` ``&&`` ``||`` ``!``, parentheses,
  ``+`` (integer addition, or string concatenation when either side is a
  string), casts ``(string)``, ``(int)``, ``(bool)``;
* ``@{ return <expression>; }`` as the only statement form.

Everything else is refused when the configuration is compiled, with the
1-based column of the first token that is not understood. Types are
checked then too (C# is statically typed: ``"a" < 3`` never compiles
there either), so a type error never waits for a request.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, cast

__all__ = [
    "Expression",
    "ExpressionError",
    "ExpressionRuntimeError",
    "LastError",
    "PolicyContext",
    "compile_expression",
    "is_expression",
    "to_text",
]


class LastError(Protocol):
    """``context.LastError``: what went wrong, for the ``on-error`` section."""

    @property
    def source(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def message(self) -> str: ...

    @property
    def section(self) -> str: ...


class PolicyContext(Protocol):
    """
    What an expression can read of the request being handled; the executor
    in ``gateway/proxy`` provides it (one object per request).
    """

    @property
    def method(self) -> str: ...

    @property
    def ip_address(self) -> str: ...

    @property
    def subscription_id(self) -> str | None: ...

    @property
    def variables(self) -> Mapping[str, object]: ...

    @property
    def last_error(self) -> LastError | None: ...

    @property
    def response_status(self) -> int | None:
        """The response's status code (outbound, on-error, postponed increments); ``None`` before."""

    def header(self, name: str) -> str | None:
        """The request header's values joined with ``,`` (APIM's form), or ``None``."""


class ExpressionError(ValueError):
    """
    An expression outside the subset, or ill-typed.

    :ivar column: 1-based column in the attribute value or text.
    """

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.reason = message
        self.column = column


class ExpressionRuntimeError(Exception):
    """
    An expression failed on a request (a missing variable read with
    ``context.Variables[...]``, a failed cast): APIM raises, so the
    executor jumps to ``on-error``.
    """


Evaluator = Callable[["PolicyContext"], object]

STRING, INT, BOOL, OBJECT, NULL = "string", "int", "bool", "object", "null"


@dataclass(frozen=True, slots=True)
class Expression:
    """
    One compiled expression.

    :ivar source: as written (``@(...)``), for ``/config`` and golden files.
    :ivar type: the static type: ``string``, ``int``, ``bool`` or ``object``.
    :ivar evaluate: ``evaluate(context)`` → the value (``str``, ``int``,
        ``bool``, ``None`` or a variable's object); may raise
        :class:`ExpressionRuntimeError`.
    """

    source: str
    type: str
    evaluate: Evaluator = field(compare=False, repr=False)

    def text(self, context: PolicyContext) -> str:
        """The value as C# ``ToString`` would give it (where a string is wanted)."""
        return to_text(self.evaluate(context))


def to_text(value: object) -> str:
    """C#'s string form: ``null`` → ``""``, booleans ``True``/``False``."""
    if value is None:
        return ""
    if value is True:
        return "True"
    if value is False:
        return "False"
    return value if isinstance(value, str) else str(value)


def is_expression(value: str) -> bool:
    """Whether an attribute value or text is a policy expression (``@(`` or ``@{``)."""
    return value.startswith("@(") or value.startswith("@{")


# --- tokenizer -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "str", "int", "ident", "op", "end"
    value: str
    column: int  # 1-based


_OPERATORS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "+", "(", ")", "[", "]",
              ".", ",", ";", "{", "}", "@", "=")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        start = i
        if c == '"' or (c == "@" and text.startswith('@"', i)):
            value, i = _string(text, i)
            tokens.append(_Token("str", value, start + 1))
        elif c.isdigit():
            while i < n and text[i].isdigit():
                i += 1
            if i < n and (text[i].isalpha() or text[i] == "."):
                raise ExpressionError("only decimal integer literals are supported", start + 1)
            tokens.append(_Token("int", text[start:i], start + 1))
        elif c.isalpha() or c == "_":
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            tokens.append(_Token("ident", text[start:i], start + 1))
        else:
            for op in _OPERATORS:
                if text.startswith(op, i):
                    tokens.append(_Token("op", op, start + 1))
                    i += len(op)
                    break
            else:
                raise ExpressionError(f"unsupported character {c!r}", start + 1)
    tokens.append(_Token("end", "", n + 1))
    return tokens


def _string(text: str, i: int) -> tuple[str, int]:
    """A C# string literal starting at ``i``: its value and the index after it."""
    start = i
    verbatim = text[i] == "@"
    i += 2 if verbatim else 1
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == '"':
            if verbatim and text.startswith('""', i):
                out.append('"')
                i += 2
                continue
            return "".join(out), i + 1
        if c == "\\" and not verbatim:
            esc = text[i + 1 : i + 2]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                i += 2
                continue
            if esc == "u" and len(text) >= i + 6:
                digits = text[i + 2 : i + 6]
                try:
                    out.append(chr(int(digits, 16)))
                except ValueError:
                    raise ExpressionError("bad \\u escape", i + 1) from None
                i += 6
                continue
            raise ExpressionError(f"unsupported escape \\{esc}", i + 1)
        if c == "\n" and not verbatim:
            break
        out.append(c)
        i += 1
    raise ExpressionError("unterminated string literal", start + 1)


# --- parser → closures -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    evaluate: Evaluator
    type: str
    #: Set when the value is known at compile time (folded).
    constant: bool = False


def _const(value: object, type_: str) -> _Compiled:
    return _Compiled(lambda ctx: value, type_, constant=True)


_CAST_TYPES = {"string": STRING, "int": INT, "bool": BOOL}
_PY_TYPES: dict[str, type | tuple[type, ...]] = {STRING: str, INT: int, BOOL: bool}


def _check_type(value: object, type_: str, what: str) -> object:
    if value is None and type_ == STRING:
        return None
    if type_ == INT and isinstance(value, bool):
        raise ExpressionRuntimeError(f"{what}: expected int, found bool")
    if not isinstance(value, _PY_TYPES[type_]):
        raise ExpressionRuntimeError(f"{what}: expected {type_}, found {type(value).__name__}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    # helpers
    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def advance(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def accept(self, op: str) -> bool:
        if self.tok.kind == "op" and self.tok.value == op:
            self.pos += 1
            return True
        return False

    def expect(self, op: str) -> _Token:
        if not (self.tok.kind == "op" and self.tok.value == op):
            raise ExpressionError(f"expected {op!r}, found {self._shown(self.tok)}", self.tok.column)
        return self.advance()

    def expect_ident(self, what: str) -> _Token:
        if self.tok.kind != "ident":
            raise ExpressionError(f"expected {what}, found {self._shown(self.tok)}", self.tok.column)
        return self.advance()

    @staticmethod
    def _shown(token: _Token) -> str:
        if token.kind == "end":
            return "the end"
        if token.kind == "str":
            return "a string"
        return repr(token.value)

    # entry points
    def document(self) -> _Compiled:
        self.expect("@")
        if self.accept("("):
            node = self.expression()
            self.expect(")")
        elif self.accept("{"):
            word = self.tok
            if not (word.kind == "ident" and word.value == "return"):
                raise ExpressionError(
                    "only a single 'return <expression>;' is supported inside @{...}", word.column
                )
            self.advance()
            node = self.expression()
            self.expect(";")
            self.expect("}")
        else:
            raise ExpressionError("expected '(' or '{' after '@'", self.tok.column)
        if self.tok.kind != "end":
            raise ExpressionError(f"unexpected {self._shown(self.tok)} after the expression",
                                  self.tok.column)
        return node

    # precedence climbing, lowest first
    def expression(self) -> _Compiled:
        return self.or_()

    def or_(self) -> _Compiled:
        left = self.and_()
        while self.tok.kind == "op" and self.tok.value == "||":
            column = self.advance().column
            right = self.and_()
            self._need(BOOL, left, column, "||")
            self._need(BOOL, right, column, "||")
            left = _Compiled(_or(left.evaluate, right.evaluate), BOOL)
        return left

    def and_(self) -> _Compiled:
        left = self.equality()
        while self.tok.kind == "op" and self.tok.value == "&&":
            column = self.advance().column
            right = self.equality()
            self._need(BOOL, left, column, "&&")
            self._need(BOOL, right, column, "&&")
            left = _Compiled(_and(left.evaluate, right.evaluate), BOOL)
        return left

    def equality(self) -> _Compiled:
        left = self.relational()
        while self.tok.kind == "op" and self.tok.value in ("==", "!="):
            token = self.advance()
            right = self.relational()
            if not _comparable(left.type, right.type):
                raise ExpressionError(
                    f"operator {token.value} cannot compare {left.type} with {right.type}",
                    token.column,
                )
            left = _Compiled(_equality(left.evaluate, right.evaluate, token.value == "=="), BOOL)
        return left

    def relational(self) -> _Compiled:
        left = self.additive()
        while self.tok.kind == "op" and self.tok.value in ("<", ">", "<=", ">="):
            token = self.advance()
            right = self.additive()
            self._need(INT, left, token.column, token.value)
            self._need(INT, right, token.column, token.value)
            left = _Compiled(
                _relational(_RELATIONAL[token.value], left.evaluate, right.evaluate), BOOL)
        return left

    def additive(self) -> _Compiled:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.value == "+":
            token = self.advance()
            right = self.unary()
            if STRING in (left.type, right.type):
                node = _Compiled(_concatenate(left.evaluate, right.evaluate), STRING)
            elif left.type == INT and right.type == INT:
                node = _Compiled(_add(left.evaluate, right.evaluate), INT)
            else:
                raise ExpressionError(
                    f"operator + cannot be applied to {left.type} and {right.type}", token.column
                )
            left = _fold(node, left, right)
        return left

    def unary(self) -> _Compiled:
        if self.tok.kind == "op" and self.tok.value == "!":
            column = self.advance().column
            operand = self.unary()
            self._need(BOOL, operand, column, "!")
            return _fold(_Compiled(_not(operand.evaluate), BOOL), operand)
        return self.primary()

    def primary(self) -> _Compiled:
        token = self.tok
        if token.kind == "str":
            self.advance()
            return _const(token.value, STRING)
        if token.kind == "int":
            self.advance()
            return _const(int(token.value), INT)
        if token.kind == "op" and token.value == "(":
            # A cast ``(string)x`` or a parenthesized expression.
            after = self.tokens[self.pos + 1]
            closing = self.tokens[self.pos + 2]
            if (after.kind == "ident" and after.value in _CAST_TYPES
                    and closing.kind == "op" and closing.value == ")"):
                self.pos += 3
                operand = self.unary()
                return self.cast_to(_CAST_TYPES[after.value], operand, after.column)
            self.advance()
            node = self.expression()
            self.expect(")")
            return node
        if token.kind == "ident":
            if token.value in ("true", "false"):
                self.advance()
                return _const(token.value == "true", BOOL)
            if token.value == "null":
                self.advance()
                return _const(None, NULL)
            if token.value == "context":
                self.advance()
                node = self.context()
                if self.tok.kind == "op" and self.tok.value in (".", "[", "("):
                    raise ExpressionError(
                        f"{self.tok.value!r}: members, indexers and calls on a value are not in "
                        "the supported expression subset", self.tok.column)
                return node
            raise ExpressionError(f"unsupported name {token.value!r} (only context.… is available)",
                                  token.column)
        raise ExpressionError(f"unexpected {self._shown(token)}", token.column)

    # context members
    def member(self) -> _Token:
        self.expect(".")
        return self.expect_ident("a member name")

    def context(self) -> _Compiled:
        name = self.member()
        if name.value == "Request":
            return self.request()
        if name.value == "Subscription":
            field_ = self.member()
            if field_.value == "Id":
                return _Compiled(lambda ctx: ctx.subscription_id, STRING)
            raise _unsupported(f"context.Subscription.{field_.value}", field_)
        if name.value == "Variables":
            return self.variables()
        if name.value == "Response":
            field_ = self.member()
            if field_.value == "StatusCode":
                return _Compiled(_response_status, INT)
            raise _unsupported(f"context.Response.{field_.value}", field_)
        if name.value == "LastError":
            field_ = self.member()
            attribute = {"Source": "source", "Reason": "reason", "Message": "message",
                         "Section": "section"}.get(field_.value)
            if attribute is None:
                raise _unsupported(f"context.LastError.{field_.value}", field_)
            return _Compiled(_last_error(attribute), STRING)
        raise _unsupported(f"context.{name.value}", name)

    def request(self) -> _Compiled:
        name = self.member()
        if name.value == "Method":
            return _Compiled(lambda ctx: ctx.method, STRING)
        if name.value == "IpAddress":
            return _Compiled(lambda ctx: ctx.ip_address, STRING)
        if name.value == "Headers":
            if self.tok.kind == "op" and self.tok.value == "[":
                raise ExpressionError("context.Request.Headers[...] is not supported: use "
                                      "GetValueOrDefault(name, default)", self.tok.column)
            method = self.member()
            if method.value != "GetValueOrDefault":
                raise _unsupported(f"context.Request.Headers.{method.value}", method)
            args = self.arguments(method, 1, 2)
            for arg in args:
                self._need(STRING, arg, method.column, "GetValueOrDefault")
            header = args[0]
            default = args[1].evaluate if len(args) == 2 else (lambda ctx: None)
            if header.constant:
                constant_name = to_text(header.evaluate(None))  # type: ignore[arg-type]

                def by_name(ctx: PolicyContext, n: str = constant_name, d: Evaluator = default) -> object:
                    value = ctx.header(n)
                    return d(ctx) if value is None else value

                return _Compiled(by_name, STRING)
            h = header.evaluate

            def by_expression(ctx: PolicyContext, h: Evaluator = h, d: Evaluator = default) -> object:
                value = ctx.header(to_text(h(ctx)))
                return d(ctx) if value is None else value

            return _Compiled(by_expression, STRING)
        raise _unsupported(f"context.Request.{name.value}", name)

    def variables(self) -> _Compiled:
        if self.accept("["):
            key = self.expression()
            self._need(STRING, key, self.tok.column, "context.Variables[...]")
            self.expect("]")
            return _Compiled(_variable(key.evaluate), OBJECT)
        method = self.member()
        if method.value == "ContainsKey":
            (key,) = self.arguments(method, 1, 1)
            self._need(STRING, key, method.column, "ContainsKey")
            return _Compiled(_contains_key(key.evaluate), BOOL)
        if method.value == "GetValueOrDefault":
            type_ = OBJECT
            if self.accept("<"):
                name = self.expect_ident("a type")
                if name.value not in _CAST_TYPES:
                    raise ExpressionError(f"unsupported type {name.value!r} (string, int, bool)",
                                          name.column)
                type_ = _CAST_TYPES[name.value]
                self.expect(">")
            args = self.arguments(method, 1, 2)
            self._need(STRING, args[0], method.column, "GetValueOrDefault")
            if len(args) == 2 and type_ != OBJECT and not _comparable(type_, args[1].type):
                raise ExpressionError(
                    f"the default of GetValueOrDefault<{type_}> cannot be {args[1].type}",
                    method.column,
                )
            k = args[0].evaluate
            d = args[1].evaluate if len(args) == 2 else _default_of(type_)

            def get(ctx: PolicyContext, k: Evaluator = k, d: Evaluator = d, t: str = type_) -> object:
                name = to_text(k(ctx))
                variables = ctx.variables
                if name not in variables:
                    return d(ctx)
                value = variables[name]
                return value if t == OBJECT else _check_type(value, t, f"variable {name!r}")

            return _Compiled(get, type_)
        raise _unsupported(f"context.Variables.{method.value}", method)

    def arguments(self, method: _Token, least: int, most: int) -> list[_Compiled]:
        self.expect("(")
        args: list[_Compiled] = []
        if not self.accept(")"):
            args.append(self.expression())
            while self.accept(","):
                args.append(self.expression())
            self.expect(")")
        if not least <= len(args) <= most:
            wanted = str(least) if least == most else f"{least} or {most}"
            raise ExpressionError(f"{method.value} takes {wanted} arguments, not {len(args)}",
                                  method.column)
        return args

    def cast_to(self, type_: str, operand: _Compiled, column: int) -> _Compiled:
        if operand.type == type_:
            return operand
        if operand.type not in (OBJECT, NULL):
            raise ExpressionError(f"cannot cast {operand.type} to {type_}", column)
        return _Compiled(_cast(operand.evaluate, type_), type_)

    @staticmethod
    def _need(type_: str, node: _Compiled, column: int, what: str) -> None:
        if node.type == type_ or (type_ == STRING and node.type == NULL):
            return
        raise ExpressionError(f"{what} needs {type_}, not {node.type}"
                              + (" (cast it, e.g. (bool)...)" if node.type == OBJECT else ""),
                              column)


def _unsupported(what: str, token: _Token) -> ExpressionError:
    return ExpressionError(f"{what} is not in the supported expression subset", token.column)


def _comparable(left: str, right: str) -> bool:
    return left == right or OBJECT in (left, right) or (NULL in (left, right)
                                                       and STRING in (left, right, NULL))


def _equal(a: object, b: object) -> bool:
    # bool is an int in Python; in C# true != 1 (and the types never mix
    # statically except through object).
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _fold(node: _Compiled, *operands: _Compiled) -> _Compiled:
    """Evaluate now when every operand is a constant (``"a" + "b"``)."""
    if all(o.constant for o in operands):
        value = node.evaluate(None)  # type: ignore[arg-type]
        return _const(value, node.type)
    return node


def _default_of(type_: str) -> Evaluator:
    value: object = {INT: 0, BOOL: False}.get(type_)
    return lambda ctx: value


# --- the closures -------------------------------------------------------------
#
# One small factory per operation: each returns a closure over already
# compiled operands, so the parser never builds a lambda with default
# arguments (which mypy cannot type) and every closure has a checked type.


def _or(a: Evaluator, b: Evaluator) -> Evaluator:
    """``a || b``, short-circuit as in C#."""
    return lambda ctx: bool(a(ctx)) or bool(b(ctx))


def _and(a: Evaluator, b: Evaluator) -> Evaluator:
    """``a && b``, short-circuit as in C#."""
    return lambda ctx: bool(a(ctx)) and bool(b(ctx))


def _not(a: Evaluator) -> Evaluator:
    """``!a``."""
    return lambda ctx: not a(ctx)


def _equality(a: Evaluator, b: Evaluator, equal: bool) -> Evaluator:
    """``a == b`` (``equal``) or ``a != b``, with C#'s bool/int distinction."""
    if equal:
        return lambda ctx: _equal(a(ctx), b(ctx))
    return lambda ctx: not _equal(a(ctx), b(ctx))


#: The relational operators; both operands are ``int`` (checked at compile time).
_RELATIONAL: dict[str, Callable[[int, int], bool]] = {
    "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge,
}


def _relational(compare: Callable[[int, int], bool], a: Evaluator, b: Evaluator) -> Evaluator:
    """
    ``a < b`` and friends. The ``cast`` states what the compile-time type
    check proved (both sides are ``int``); it costs nothing at run time.
    """
    return lambda ctx: compare(cast(int, a(ctx)), cast(int, b(ctx)))


def _add(a: Evaluator, b: Evaluator) -> Evaluator:
    """Integer ``a + b`` (both ``int``, checked at compile time)."""
    return lambda ctx: cast(int, a(ctx)) + cast(int, b(ctx))


def _concatenate(a: Evaluator, b: Evaluator) -> Evaluator:
    """String ``a + b``: C#'s string forms of both sides."""
    return lambda ctx: to_text(a(ctx)) + to_text(b(ctx))


def _cast(a: Evaluator, type_: str) -> Evaluator:
    """``(type_)a`` of an ``object``: checked on the request, as C# does."""
    what = f"({type_})"
    return lambda ctx: _check_type(a(ctx), type_, what)


def _variable(key: Evaluator) -> Evaluator:
    """``context.Variables[key]``: raises on the request when the variable is unset (as APIM)."""

    def evaluate(ctx: PolicyContext) -> object:
        name = to_text(key(ctx))
        try:
            return ctx.variables[name]
        except KeyError:
            raise ExpressionRuntimeError(f"the variable {name!r} is not set") from None

    return evaluate


def _contains_key(key: Evaluator) -> Evaluator:
    """``context.Variables.ContainsKey(key)``."""
    return lambda ctx: to_text(key(ctx)) in ctx.variables


def _response_status(ctx: PolicyContext) -> object:
    """``context.Response.StatusCode``: the response's status; an error before there is one."""
    status = ctx.response_status
    if status is None:
        raise ExpressionRuntimeError("context.Response is not available before the response")
    return status


def _last_error(attribute: str) -> Evaluator:
    """``context.LastError.<attribute>``: ``null`` outside ``on-error``."""

    def evaluate(ctx: PolicyContext) -> object:
        error = ctx.last_error
        return None if error is None else getattr(error, attribute)

    return evaluate


def compile_expression(source: str) -> Expression:
    """
    Compile one ``@(...)`` or ``@{ return ...; }`` expression.

    :raises ExpressionError: outside the subset or ill-typed, with the
        1-based column in ``source``.
    """
    node = _Parser(source).document()
    type_ = OBJECT if node.type == NULL else node.type
    return Expression(source, type_, node.evaluate)
