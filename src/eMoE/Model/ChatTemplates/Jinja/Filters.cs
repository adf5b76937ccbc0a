namespace eMoE.Model.Jinja;

internal sealed partial class Interpreter
{
    /// <summary><c>operand | name</c> or <c>operand | name(args)</c>.</summary>
    private Value ApplyFilter(Value operand, Expr filter, Scope scope)
    {
        if (filter is NameExpr name) return ApplyFilter(operand, name.Name, Arguments.Empty, filter, called: false);
        if (filter is CallExpr { Callee: NameExpr callee } call)
        {
            // selectattr and rejectattr take their arguments as written: string literals only.
            if (callee.Name is "selectattr" or "rejectattr" && operand is ListValue && call.Arguments.Any(a => a is not LiteralExpr { Value: StringValue }))
                throw Fail(call, $"the arguments of {callee.Name} must be strings");
            return ApplyFilter(operand, callee.Name, EvaluateArguments(call.Arguments, scope), filter, called: true);
        }
        throw Fail(filter, "expected a filter name");
    }

    private Value ApplyFilter(Value operand, string name, Arguments args, Expr at, bool called)
    {
        switch (name)
        {
            case "safe":
                return operand;
            case "tojson":
                return Value.Str(ToJson(operand, args));
            case "default" when called:
                {
                    var fallback = args.Get(0) ?? Value.Str("");
                    bool boolean = Flag(args.Get(1, "boolean"), "boolean");
                    return operand is UndefinedValue || boolean && !operand.IsTruthy ? fallback : operand;
                }
            case "join" when called:
                {
                    IEnumerable<string> parts = operand switch
                    {
                        StringValue s => CodePoints(s.Value),
                        ListValue l => l.Items.Select(JoinPart),
                        _ => throw Unsupported(),
                    };
                    var separator = args.Get(0, "separator") ?? Value.Str("");
                    if (separator is not StringValue sep) throw Fail(at, "join(): the separator must be a string");
                    return Value.Str(string.Join(sep.Value, parts));
                }
            case "int" or "float" when called:
                {
                    bool isInt = name == "int";
                    var fallback = args.Get(0, "default") ?? new NumberValue(0, isInt);
                    return operand switch
                    {
                        StringValue s => (isInt ? Js.ParseInt(s.Value) : Js.ParseFloat(s.Value)) is var d && double.IsNaN(d) ? fallback : new NumberValue(d, isInt),
                        NumberValue => operand,
                        BoolValue b => new NumberValue(b.Value ? 1 : 0, isInt),
                        _ => throw Unsupported(),
                    };
                }
        }

        switch (operand)
        {
            case ListValue list:
                return ListFilter(list, name, args, at, called) ?? throw Unsupported();
            case StringValue s:
                return StringFilter(s, name, args, at, called) ?? throw Unsupported();
            case NumberValue n when !called:
                return name switch
                {
                    "abs" => new NumberValue(Math.Abs(n.Value), n.IsInteger),
                    "int" => Value.Int(Math.Floor(n.Value)),
                    "float" => Value.Float(n.Value),
                    "string" => Value.Str(n.Render()),
                    "round" => Value.Float(Round(n.Value, 0, "common")),
                    _ => throw Unsupported(),
                };
            case NumberValue n when name == "round":
                {
                    var precision = args.Get(0, "precision") ?? Value.Int(0);
                    var method = args.Get(1, "method") ?? Value.Str("common");
                    if (precision is not NumberValue { IsInteger: true } p || method is not StringValue { Value: "common" or "floor" or "ceil" } m)
                        throw Fail(at, "round(precision=0, method='common'|'floor'|'ceil')");
                    return Value.Float(Round(n.Value, (int)p.Value, m.Value));
                }
            case MapValue { IsObject: true } map:
                if (!called && name == "items") return Items(map);
                if (!called && name == "length") return Value.Int(map.Entries.Count);
                if (DictMethod(map, name) is FunctionValue dictMethod) return dictMethod.Call(called ? args : Arguments.Empty, null!);
                throw Unsupported();
            case BoolValue b when !called:
                return name switch
                {
                    "bool" => b,
                    "int" => Value.Int(b.Value ? 1 : 0),
                    "float" => Value.Float(b.Value ? 1 : 0),
                    "string" => Value.Str(b.Value ? "true" : "false"),
                    _ => throw Unsupported(),
                };
        }
        throw Unsupported();

        ChatTemplateException Unsupported() => Fail(at, $"the filter '{name}' does not apply to {Article(operand)}");
    }

    private Value? ListFilter(ListValue list, string name, Arguments args, Expr at, bool called)
    {
        var items = list.Items;
        if (!called)
        {
            switch (name)
            {
                case "list": return list;
                case "first": return items.Count > 0 ? items[0] : Value.Undefined;
                case "last": return items.Count > 0 ? items[^1] : Value.Undefined;
                case "length": return Value.Int(items.Count);
                case "reverse": return new ListValue([.. Enumerable.Reverse(items)]);
                case "join": return Value.Str(string.Concat(items.Select(JoinPart)));
                case "string": return Value.Str(Json.Serialize(list, JsonOptions.Default, undefinedAsNull: false));
                case "unique":
                    {
                        var seen = new List<Value>();
                        var output = new List<Value>();
                        foreach (var item in items)
                        {
                            if (seen.Any(s => SameValueZero(s, item))) continue;
                            seen.Add(item);
                            output.Add(item);
                        }
                        return new ListValue(output);
                    }
            }
        }
        switch (name)
        {
            case "sort":
                {
                    bool reverse = Flag(args.Get(0, "reverse"), "reverse");
                    bool caseSensitive = Flag(args.Get(1, "case_sensitive"), "case_sensitive");
                    var attribute = args.Get(2, "attribute") ?? Value.None;
                    string? path = attribute switch
                    {
                        StringValue s => s.Value,
                        NumberValue { IsInteger: true } n => Js.NumberToString(n.Value),
                        NoneValue => null,
                        _ => throw Fail(at, "sort(): attribute must be a string, an integer or none"),
                    };
                    var comparer = Comparer<Value>.Create((a, b) =>
                    {
                        int c = Compare(path is null ? a : Attribute(a, path), path is null ? b : Attribute(b, path), caseSensitive);
                        return reverse ? -c : c;
                    });
                    return new ListValue([.. items.Order(comparer)]);
                }
            case "selectattr" or "rejectattr" when called:
                {
                    bool select = name == "selectattr";
                    if (items.Any(i => i is not MapValue)) throw Fail(at, $"{name} applies to a list of dicts");
                    if (args.Get(0) is not StringValue attribute) throw Fail(at, $"{name} needs an attribute name");
                    var test = TestFunction(args.Get(1), at);
                    var argument = args.Get(2);
                    // As in the oracle, an item without the attribute never passes the test.
                    return new ListValue([.. items.Where(item =>
                {
                    bool result = ((MapValue)item).Entries.TryGetValue(attribute.Value, out var v) && test(v, argument);
                    return select ? result : !result;
                })]);
                }
            case "select" or "reject":
                {
                    // Not in @huggingface/jinja: Jinja2's select/reject with a test name (or truthiness).
                    bool select = name == "select";
                    var test = TestFunction(args.Get(0), at);
                    var argument = args.Get(1);
                    return new ListValue([.. items.Where(item => test(item, argument) == select)]);
                }
            case "map" when called:
                {
                    if (args.Keywords.TryGetValue("attribute", out var attribute))
                    {
                        if (attribute is not StringValue path) throw Fail(at, "map(): attribute must be a string");
                        args.Keywords.TryGetValue("default", out var fallback);
                        return new ListValue([.. items.Select(item =>
                    {
                        if (item is not MapValue) throw Fail(at, "map(attribute=...) applies to a list of dicts");
                        var value = Attribute(item, path.Value);
                        return value is UndefinedValue ? fallback ?? Value.Undefined : value;
                    })]);
                    }
                    // Not in @huggingface/jinja: Jinja2's map('filter', args...).
                    if (args.Get(0) is StringValue filterName)
                    {
                        var rest = new Arguments([.. args.Positional.Skip(1)], args.Keywords);
                        return new ListValue([.. items.Select(item => ApplyFilter(item, filterName.Value, rest, at, called: rest.Positional.Count + rest.Keywords.Count > 0))]);
                    }
                    throw Fail(at, "map() needs attribute=... or a filter name");
                }
        }
        return null;
    }

    private Value? StringFilter(StringValue s, string name, Arguments args, Expr at, bool called)
    {
        if (!called)
        {
            switch (name)
            {
                case "length" or "upper" or "lower" or "title" or "capitalize":
                    return StringMethod(s, name) is FunctionValue f ? f.Call(Arguments.Empty, null!) : StringMethod(s, name);
                case "trim": return Value.Str(Js.Trim(s.Value));
                case "indent": return Value.Str(Indent(s.Value, 4, first: false, blank: false));
                case "join" or "string": return s;
                case "int": return Value.Int(Js.ParseInt(s.Value) is var i && double.IsNaN(i) ? 0 : i);
                case "float": return Value.Float(Js.ParseFloat(s.Value) is var d && double.IsNaN(d) ? 0 : d);
                // Not in @huggingface/jinja: Jinja2's escape (e) and list of a string.
                case "escape" or "e": return Value.Str(HtmlEscape(s.Value));
                case "list": return new ListValue([.. CodePoints(s.Value).Select(Value.Str)]);
            }
            return null;
        }
        switch (name)
        {
            case "indent":
                {
                    var width = args.Get(0, "width") ?? Value.Int(4);
                    if (width is not NumberValue { IsInteger: true } w) throw Fail(at, "indent(): width must be an integer");
                    return Value.Str(Indent(s.Value, (int)w.Value, (args.Get(1, "first") ?? Value.False).IsTruthy, (args.Get(2, "blank") ?? Value.False).IsTruthy));
                }
            case "replace":
                return StringMethod(s, "replace") is FunctionValue replace ? replace.Call(args, null!) : null;
        }
        return null;
    }

    // MarkupSafe's escape: & < > " '.
    private static string HtmlEscape(string s) => s.Replace("&", "&amp;", StringComparison.Ordinal).Replace("<", "&lt;", StringComparison.Ordinal)
        .Replace(">", "&gt;", StringComparison.Ordinal).Replace("\"", "&#34;", StringComparison.Ordinal).Replace("'", "&#39;", StringComparison.Ordinal);

    private static string Indent(string s, int width, bool first, bool blank)
    {
        string pad = new(' ', Math.Max(0, width));
        return string.Join("\n", s.Split('\n').Select((line, i) => (!first && i == 0) || (!blank && line.Length == 0) ? line : pad + line));
    }

    private static double Round(double value, int precision, string method)
    {
        double scale = Math.Pow(10, precision);
        return method switch
        {
            "floor" => Math.Floor(value * scale) / scale,
            "ceil" => Math.Ceiling(value * scale) / scale,
            _ => Math.Round(value * scale, MidpointRounding.AwayFromZero) / scale,
        };
    }

    private Func<Value, Value?, bool> TestFunction(Value? name, Expr at)
    {
        if (name is null) return (v, _) => v.IsTruthy;
        if (name is not StringValue s) throw Fail(at, "expected a test name");
        return Tests.TryGetValue(s.Value, out var test) ? test : throw Fail(at, $"unknown test '{s.Value}'");
    }

    /// <summary>A dotted attribute path (<c>function.name</c>, <c>items.0</c>) into dicts and lists.</summary>
    private static Value Attribute(Value item, string path)
    {
        var value = item;
        foreach (string part in path.Split('.'))
        {
            switch (value)
            {
                case MapValue map:
                    value = map.Get(part);
                    break;
                case ListValue list:
                    double index = Js.ParseInt(part);
                    if (double.IsNaN(index) || index < 0 || index >= list.Items.Count) return Value.Undefined;
                    value = list.Items[(int)index];
                    break;
                default:
                    return Value.Undefined;
            }
        }
        return value;
    }

    // Array.prototype.join: none and undefined items are empty.
    private static string JoinPart(Value item) => item.IsNullish ? "" : item.RawString();

    // The oracle's unique keeps the first of items that a JavaScript Set holds once.
    private static bool SameValueZero(Value a, Value b) => a is NumberValue x && b is NumberValue y
        ? x.Value == y.Value || (double.IsNaN(x.Value) && double.IsNaN(y.Value))
        : StrictEquals(a, b);

    private string ToJson(Value operand, Arguments args)
    {
        var indent = args.Keywords.GetValueOrDefault("indent") ?? Value.None;
        if (indent is not (NumberValue { IsInteger: true } or NoneValue)) throw new ChatTemplateException("tojson(): indent must be an integer");
        bool ensureAscii = Flag(args.Keywords.GetValueOrDefault("ensure_ascii"), "ensure_ascii");
        bool sortKeys = Flag(args.Keywords.GetValueOrDefault("sort_keys"), "sort_keys");
        string? itemSeparator = null, keySeparator = null;
        switch (args.Keywords.GetValueOrDefault("separators") ?? Value.None)
        {
            case ListValue { Items: [StringValue item, StringValue key] }:
                (itemSeparator, keySeparator) = (item.Value, key.Value);
                break;
            case NoneValue:
                break;
            default:
                throw new ChatTemplateException("tojson(): separators must be a pair of strings");
        }
        var options = new JsonOptions(indent is NumberValue n ? (int)n.Value : null, ensureAscii, sortKeys, itemSeparator, keySeparator);
        return Json.Serialize(operand, options, undefinedAsNull: true);
    }
}
