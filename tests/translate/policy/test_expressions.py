"""
The policy expression subset: each construct evaluated against a fake
context, and what lies outside the subset refused with its column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.trial.unittest import SynchronousTestCase

from gateway.translate.policy import (
    ExpressionError,
    ExpressionRuntimeError,
    PolicyContext,
    compile_expression,
    is_expression,
    to_text,
)


@dataclass
class FakeError:
    """A ``context.LastError``."""

    source: str = "forward-request"
    reason: str = "Timeout"
    message: str = "backend timed out"
    section: str = "backend"


@dataclass
class FakeContext:
    """A request as expressions see it."""

    method: str = "GET"
    ip_address: str = "192.0.2.7"
    subscription_id: str | None = "sub-1"
    variables: Mapping[str, object] = field(default_factory=dict)
    last_error: FakeError | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return {k.lower(): v for k, v in self.headers.items()}.get(name.lower())


def run(source: str, context: PolicyContext | None = None) -> object:
    return compile_expression(source).evaluate(context or FakeContext())


class ExpressionTests(SynchronousTestCase):
    """Each construct of the subset, evaluated."""

    def test_request_members(self) -> None:
        """Method and IpAddress read the context."""
        context = FakeContext(method="POST", ip_address="10.0.0.1")
        self.assertEqual(run("@(context.Request.Method)", context), "POST")
        self.assertEqual(run("@(context.Request.IpAddress)", context), "10.0.0.1")

    def test_headers(self) -> None:
        """GetValueOrDefault reads a header case-insensitively, with or without a default."""
        context = FakeContext(headers={"X-Tenant": "a,b"})
        self.assertEqual(run('@(context.Request.Headers.GetValueOrDefault("x-tenant", "none"))',
                             context), "a,b")
        self.assertEqual(run('@(context.Request.Headers.GetValueOrDefault("x-other", "none"))',
                             context), "none")
        self.assertIsNone(run('@(context.Request.Headers.GetValueOrDefault("x-other"))', context))
        self.assertEqual(run('@(context.Request.Headers.GetValueOrDefault("x-" + "tenant"))',
                             context), "a,b")

    def test_subscription_and_last_error(self) -> None:
        """Subscription.Id and the LastError fields are read; no error reads as null."""
        context = FakeContext(last_error=FakeError())
        self.assertEqual(run("@(context.Subscription.Id)", context), "sub-1")
        self.assertEqual(run("@(context.LastError.Reason)", context), "Timeout")
        self.assertEqual(run("@(context.LastError.Section)", context), "backend")
        self.assertIsNone(run("@(context.LastError.Message)"))

    def test_variables(self) -> None:
        """Indexing, typed GetValueOrDefault with defaults, ContainsKey and casts."""
        context = FakeContext(variables={"name": "x", "n": 3, "flag": True})
        self.assertEqual(run('@(context.Variables["name"])', context), "x")
        self.assertEqual(run('@(context.Variables.GetValueOrDefault<string>("gone", "d"))',
                             context), "d")
        self.assertEqual(run('@(context.Variables.GetValueOrDefault<int>("n", 0) + 1)', context), 4)
        self.assertEqual(run('@(context.Variables.GetValueOrDefault<int>("gone"))', context), 0)
        self.assertIs(run('@(context.Variables.ContainsKey("flag"))', context), True)
        self.assertIs(run('@((bool)context.Variables["flag"] && true)', context), True)

    def test_variable_errors_at_run_time(self) -> None:
        """A missing variable read by index, or a failed cast, raises ExpressionRuntimeError."""
        context = FakeContext(variables={"n": 3})
        self.assertRaises(ExpressionRuntimeError, run, '@(context.Variables["gone"])', context)
        self.assertRaises(ExpressionRuntimeError, run, '@((string)context.Variables["n"])', context)
        self.assertRaises(ExpressionRuntimeError, run,
                          '@(context.Variables.GetValueOrDefault<string>("n", ""))', context)

    def test_literals(self) -> None:
        """Strings with escapes and verbatim strings, integers, booleans, null."""
        self.assertEqual(run(r'@("a\"b\n\u0041")'), 'a"b\nA')
        self.assertEqual(run('@(@"c:\\x""y")'), 'c:\\x"y')
        self.assertEqual(run("@(42)"), 42)
        self.assertIs(run("@(false)"), False)
        self.assertIs(run("@(null == null)"), True)

    def test_comparisons(self) -> None:
        """==, != on strings; <, >, <=, >= on integers."""
        self.assertIs(run('@(context.Request.Method == "GET")'), True)
        self.assertIs(run('@(context.Request.Method != "GET")'), False)
        self.assertIs(run("@(1 < 2)"), True)
        self.assertIs(run("@(2 > 2)"), False)
        self.assertIs(run("@(2 <= 2)"), True)
        self.assertIs(run("@(1 >= 2)"), False)
        self.assertIs(run('@(context.Request.Headers.GetValueOrDefault("x") == null)'), True)

    def test_logic_and_precedence(self) -> None:
        """! binds tighter than &&, which binds tighter than ||; parentheses group."""
        self.assertIs(run("@(true || false && false)"), True)
        self.assertIs(run("@((true || false) && false)"), False)
        self.assertIs(run("@(!false && !(1 > 2))"), True)

    def test_short_circuit(self) -> None:
        """&& and || do not evaluate their right side when the left decides."""
        context = FakeContext()
        self.assertIs(run('@(false && (bool)context.Variables["gone"])', context), False)
        self.assertIs(run('@(true || (bool)context.Variables["gone"])', context), True)

    def test_concatenation(self) -> None:
        """+ concatenates when a side is a string (C# ToString forms), adds integers."""
        self.assertEqual(run('@("n=" + 1 + 2)'), "n=12")
        self.assertEqual(run('@(1 + 2 + "")'), "3")
        self.assertEqual(run('@("b=" + true + null)'), "b=True")
        self.assertEqual(run('@(context.Request.Method + "/" + context.Subscription.Id)'),
                         "GET/sub-1")

    def test_statement_block(self) -> None:
        """@{ return <expression>; } is the one statement form."""
        self.assertEqual(run('@{ return "a" + "b"; }'), "ab")

    def test_constants_are_folded(self) -> None:
        """A constant sub-expression is computed once, when compiled."""
        expression = compile_expression('@("a" + "b")')
        self.assertEqual(expression.evaluate(None), "ab")  # type: ignore[arg-type]

    def test_static_type(self) -> None:
        """The compiled expression knows its type (a condition must be bool)."""
        self.assertEqual(compile_expression("@(1 < 2)").type, "bool")
        self.assertEqual(compile_expression('@(context.Variables["x"])').type, "object")
        self.assertEqual(compile_expression('@("x" + 1)').type, "string")

    def test_equality_ignores_the_closure(self) -> None:
        """Two compilations of the same source are equal (pipelines compare by source)."""
        self.assertEqual(compile_expression("@(1 < 2)"), compile_expression("@(1 < 2)"))

    def test_helpers(self) -> None:
        """is_expression spots @( and @{; to_text gives C#'s string forms."""
        self.assertTrue(is_expression("@(x)"))
        self.assertTrue(is_expression("@{ return 1; }"))
        self.assertFalse(is_expression("user@example.com"))
        self.assertEqual([to_text(v) for v in (None, True, False, 3, "s")],
                         ["", "True", "False", "3", "s"])


class RefusedTests(SynchronousTestCase):
    """What lies outside the subset is refused when compiled, with its column."""

    def refused(self, source: str, column: int, fragment: str) -> None:
        with self.assertRaises(ExpressionError) as caught:
            compile_expression(source)
        self.assertEqual(caught.exception.column, column, str(caught.exception))
        self.assertIn(fragment, str(caught.exception))

    def test_unsupported_members(self) -> None:
        """Members outside the subset name themselves and their column."""
        self.refused("@(context.Request.Body)", 19, "context.Request.Body is not in the supported")
        self.refused("@(context.Product.Name)", 11, "context.Product")
        self.refused('@(context.Request.Headers["x"])', 26, "use GetValueOrDefault")
        self.refused('@(context.Variables.Remove("x"))', 21, "context.Variables.Remove")

    def test_other_names_and_calls(self) -> None:
        """Free names, method calls on values and lambdas are refused."""
        self.refused('@(DateTime.UtcNow)', 3, "unsupported name 'DateTime'")
        self.refused('@(context.Request.Method.ToUpper())', 25, "calls on a value are not")
        self.refused('@(x => x)', 3, "unsupported name 'x'")

    def test_statements(self) -> None:
        """Statements other than one return are refused."""
        self.refused('@{ var x = 1; return x; }', 4, "only a single 'return")
        self.refused('@{ return 1 }', 13, "expected ';'")
        self.refused('@context.Request.Method', 2, "expected '(' or '{'")

    def test_syntax(self) -> None:
        """Dangling operators, unbalanced parentheses, bad literals and characters."""
        self.refused("@(1 +)", 6, "unexpected ')'")
        self.refused("@((1 < 2)", 10, "expected ')'")
        self.refused('@("open)', 3, "unterminated string")
        self.refused("@(1.5)", 3, "only decimal integer")
        self.refused("@(1 * 2)", 5, "unsupported character '*'")
        self.refused("@('c')", 3, "unsupported character")
        self.refused('@("a") x', 8, "after the expression")

    def test_types(self) -> None:
        """Ill-typed operations are refused as C# would refuse to compile them."""
        self.refused('@("a" < 3)', 7, "< needs int, not string")
        self.refused('@(1 == "1")', 5, "cannot compare int with string")
        self.refused('@(!"x")', 3, "! needs bool")
        self.refused('@(true + 1)', 8, "cannot be applied to bool and int")
        self.refused('@(context.Variables["x"] && true)', 26, "(cast it")
        self.refused('@((int)"x")', 4, "cannot cast string to int")
        self.refused('@(context.Variables.GetValueOrDefault<double>("x"))', 39, "unsupported type")
        self.refused('@(context.Request.Headers.GetValueOrDefault())', 27, "takes 1 or 2 arguments")
