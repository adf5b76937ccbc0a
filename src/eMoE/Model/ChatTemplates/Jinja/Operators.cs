namespace eMoE.Model.Jinja;

internal sealed partial class Interpreter
{
    private Value EvaluateBinary(BinaryExpr node, Scope scope)
    {
        var left = Evaluate(node.Left, scope);
        switch (node.Operator)
        {
            case "and":
                return left.IsTruthy ? Evaluate(node.Right, scope) : left;
            case "or":
                return left.IsTruthy ? left : Evaluate(node.Right, scope);
        }
        var right = Evaluate(node.Right, scope);
        string op = node.Operator;
        switch (op)
        {
            case "==":
                return Value.Bool(LooseEquals(left, right));
            case "!=":
                return Value.Bool(!LooseEquals(left, right));
        }

        if (left is UndefinedValue || right is UndefinedValue)
        {
            if (right is UndefinedValue && op is "in" or "not in") return Value.Bool(op == "not in");
            throw Fail(node, $"cannot apply '{op}' to an undefined value{UndefinedName(left is UndefinedValue ? node.Left : node.Right)}");
        }
        if (left is NoneValue || right is NoneValue) throw Fail(node, $"cannot apply '{op}' to none");
        if (op == "~") return Value.Str(left.RawString() + right.RawString());
        if (op == "**" && NumericLike(left) is double a0 && NumericLike(right) is double b0)
        {
            if (a0 == 0 && b0 < 0) throw Fail(node, "0.0 cannot be raised to a negative power");
            double result = Math.Pow(a0, b0);
            if (!double.IsFinite(result)) throw Fail(node, "the power is not a finite real number");
            bool isFloat = left is NumberValue { IsInteger: false } || right is NumberValue { IsInteger: false } || b0 < 0;
            return new NumberValue(result, !isFloat);
        }
        if (left is NumberValue ln && right is NumberValue rn)
        {
            double a = ln.Value, b = rn.Value;
            bool isFloat = !ln.IsInteger || !rn.IsInteger;
            switch (op)
            {
                case "+": return new NumberValue(a + b, !isFloat);
                case "-": return new NumberValue(a - b, !isFloat);
                case "*": return new NumberValue(a * b, !isFloat);
                case "/": return Value.Float(a / b);
                case "//": return new NumberValue(Math.Floor(a / b), !isFloat);
                case "%": return new NumberValue(a % b, !isFloat);
                case "<": return Value.Bool(a < b);
                case ">": return Value.Bool(a > b);
                case ">=": return Value.Bool(a >= b);
                case "<=": return Value.Bool(a <= b);
            }
        }
        else if (left is ListValue ll && right is ListValue rl)
        {
            if (op == "+") return new ListValue([.. ll.Items, .. rl.Items]);
        }
        else if (right is ListValue haystack)
        {
            bool member = haystack.Items.Any(x => StrictEquals(x, left));
            switch (op)
            {
                case "in": return Value.Bool(member);
                case "not in": return Value.Bool(!member);
            }
        }
        if (op == "+" && (left is StringValue || right is StringValue)) return Value.Str(left.RawString() + right.RawString());
        if (left is StringValue ls && right is StringValue rs)
        {
            switch (op)
            {
                case "in": return Value.Bool(rs.Value.Contains(ls.Value, StringComparison.Ordinal));
                case "not in": return Value.Bool(!rs.Value.Contains(ls.Value, StringComparison.Ordinal));
            }
        }
        if (left is StringValue key && right is MapValue { IsObject: true } map)
        {
            switch (op)
            {
                case "in": return Value.Bool(map.Entries.ContainsKey(key.Value));
                case "not in": return Value.Bool(!map.Entries.ContainsKey(key.Value));
            }
        }
        throw Fail(node, $"cannot apply '{op}' to {Article(left)} and {Article(right)}");
    }

    private static string UndefinedName(Expr expr) => expr switch
    {
        NameExpr n => $" ('{n.Name}')",
        MemberExpr { Property: NameExpr p } => $" ('{p.Name}')",
        _ => "",
    };

    private static double? NumericLike(Value v) => v switch
    {
        NumberValue n => n.Value,
        BoolValue b => b.Value ? 1 : 0,
        _ => null,
    };

    /// <summary>JavaScript's <c>==</c> on the underlying values, as the oracle compares: lists and dicts by identity.</summary>
    internal static bool LooseEquals(Value a, Value b)
    {
        if (a.IsNullish || b.IsNullish) return a.IsNullish && b.IsNullish;
        if (a is BoolValue ab) return LooseEquals(Value.Int(ab.Value ? 1 : 0), b);
        if (b is BoolValue bb) return LooseEquals(a, Value.Int(bb.Value ? 1 : 0));
        switch (a, b)
        {
            case (NumberValue x, NumberValue y):
                return x.Value == y.Value;
            case (StringValue x, StringValue y):
                return x.Value == y.Value;
            case (NumberValue x, StringValue y):
                return x.Value == Js.ToNumber(y.Value);
            case (StringValue x, NumberValue y):
                return Js.ToNumber(x.Value) == y.Value;
        }
        bool aObject = a is ListValue or MapValue or FunctionValue, bObject = b is ListValue or MapValue or FunctionValue;
        if (aObject && bObject) return SameObject(a, b);
        // An object against a string or number: JavaScript compares the object's string form.
        return aObject ? LooseEquals(Value.Str(a.RawString()), b) : LooseEquals(a, Value.Str(b.RawString()));
    }

    /// <summary>JavaScript's <c>===</c> on the underlying values (<c>in</c> on lists, the equalto test).</summary>
    internal static bool StrictEquals(Value a, Value b) => (a, b) switch
    {
        (UndefinedValue, UndefinedValue) or (NoneValue, NoneValue) => true,
        (BoolValue x, BoolValue y) => x.Value == y.Value,
        (NumberValue x, NumberValue y) => x.Value == y.Value,
        (StringValue x, StringValue y) => x.Value == y.Value,
        _ => SameObject(a, b),
    };

    private static bool SameObject(Value a, Value b) => (a, b) switch
    {
        (ListValue x, ListValue y) => ReferenceEquals(x.Items, y.Items),
        (MapValue x, MapValue y) => ReferenceEquals(x.Entries, y.Entries),
        (FunctionValue x, FunctionValue y) => ReferenceEquals(x.Call, y.Call),
        _ => false,
    };

    /// <summary>Ordering for sort and dictsort: numbers (and booleans) by value, strings (case-folded unless asked), else an error.</summary>
    internal static int Compare(Value a, Value b, bool caseSensitive)
    {
        if (a is NoneValue && b is NoneValue) return 0;
        if (a is UndefinedValue && b is UndefinedValue) return 0;
        if (a.IsNullish || b.IsNullish) throw new ChatTemplateException($"cannot compare {Article(a)} with {Article(b)}");
        if (NumericLike(a) is double x && NumericLike(b) is double y) return x < y ? -1 : x > y ? 1 : 0;
        if (a is StringValue s && b is StringValue t)
        {
            string l = caseSensitive ? s.Value : s.Value.ToLowerInvariant(), r = caseSensitive ? t.Value : t.Value.ToLowerInvariant();
            return Math.Sign(string.CompareOrdinal(l, r));
        }
        throw new ChatTemplateException(a.GetType() != b.GetType() ? $"cannot compare {Article(a)} with {Article(b)}" : $"cannot order values of type {a.TypeName}");
    }
}
