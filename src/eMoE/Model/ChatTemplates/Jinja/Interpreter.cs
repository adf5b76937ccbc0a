using System.Text;

namespace eMoE.Model.Jinja;

/// <summary>Variables of one scope: the globals, the context, a loop body, a macro call.</summary>
internal sealed class Scope(Scope? parent)
{
    private readonly Dictionary<string, Value> _variables = new(StringComparer.Ordinal);

    public Value Lookup(string name)
    {
        for (var scope = this; scope is not null; scope = scope.Parent)
        {
            if (scope._variables.TryGetValue(name, out var value)) return value;
        }
        return Value.Undefined;
    }

    public Scope? Parent { get; } = parent;

    public void Set(string name, Value value) => _variables[name] = value;
}

/// <summary>
/// Renders a parsed template. The semantics are @huggingface/jinja's (0.5.11), so that prompts are
/// byte-identical to what transformers.js renders: <c>set</c> inside a loop stays in the loop,
/// none and undefined print nothing, booleans print as true/false, lists and dicts print as JSON,
/// <c>==</c> compares like JavaScript's (lists and dicts by identity).
/// </summary>
internal sealed partial class Interpreter
{
    private const int MaxCallDepth = 100;

    private readonly string _source;
    private readonly TimeProvider _clock;
    private int _callDepth;

    public Interpreter(string source, TimeProvider clock)
    {
        _source = source;
        _clock = clock;
    }

    public string Render(List<Node> program, IEnumerable<KeyValuePair<string, Value>> context)
    {
        var globals = new Scope(null);
        DefineGlobals(globals);
        foreach (var (name, value) in context) globals.Set(name, value);
        var output = new StringBuilder();
        try
        {
            Execute(program, globals, output);
        }
        catch (LoopControl control)
        {
            throw new ChatTemplateException($"{{% {(control.IsBreak ? "break" : "continue")} %}} outside a loop");
        }
        return output.ToString();
    }

    /// <summary>Thrown by <c>{% break %}</c> and <c>{% continue %}</c> to the enclosing loop.</summary>
    private sealed class LoopControl(bool isBreak) : Exception
    {
        public bool IsBreak { get; } = isBreak;
    }

    private void Execute(List<Node> nodes, Scope scope, StringBuilder output)
    {
        foreach (var node in nodes) Execute(node, scope, output);
    }

    private string RenderBlock(List<Node> nodes, Scope scope)
    {
        var output = new StringBuilder();
        Execute(nodes, scope, output);
        return output.ToString();
    }

    private void Execute(Node node, Scope scope, StringBuilder output)
    {
        switch (node)
        {
            case TextNode text:
                output.Append(text.Text);
                break;
            case CommentNode:
                break;
            case Expr expression:
                var value = Evaluate(expression, scope);
                try
                {
                    AppendValue(output, value);
                }
                catch (ChatTemplateException e) when (e.Line is null)
                {
                    throw Fail(expression, e.Message);
                }
                break;
            case IfNode ifNode:
                Execute(Evaluate(ifNode.Test, scope).IsTruthy ? ifNode.Body : ifNode.Else, scope, output);
                break;
            case ForNode forNode:
                ExecuteFor(forNode, scope, output);
                break;
            case SetNode set:
                ExecuteSet(set, scope);
                break;
            case MacroNode macro:
                DefineMacro(macro, scope);
                break;
            case CallBlockNode call:
                AppendValue(output, ExecuteCallBlock(call, scope));
                break;
            case FilterBlockNode filter:
                AppendValue(output, ApplyFilter(Value.Str(RenderBlock(filter.Body, scope)), filter.Filter, scope));
                break;
            case BreakNode:
                throw new LoopControl(isBreak: true);
            case ContinueNode:
                throw new LoopControl(isBreak: false);
            default:
                throw Fail(node, $"unknown node {node.GetType().Name}");
        }
    }

    private static void AppendValue(StringBuilder output, Value value)
    {
        if (!value.IsNullish) output.Append(value.Render());
    }

    private void ExecuteFor(ForNode node, Scope scope, StringBuilder output)
    {
        var loopScope = new Scope(scope);
        var iterableExpr = node.Iterable;
        Expr? condition = null;
        if (iterableExpr is SelectExpr select)
        {
            iterableExpr = select.Value;
            condition = select.Condition;
        }
        var iterable = Evaluate(iterableExpr, loopScope);
        List<Value> source = iterable switch
        {
            ListValue list => list.Items,
            MapValue { IsObject: true } map => [.. map.Entries.Keys.Select(Value.Str)],
            _ => throw Fail(node.Iterable, $"cannot loop over {Article(iterable)}"),
        };

        var items = new List<Value>();
        foreach (var item in source)
        {
            CheckUnpack(node.Target, item);
            if (condition is not null)
            {
                var testScope = new Scope(loopScope);
                Bind(node.Target, item, testScope);
                if (!Evaluate(condition, testScope).IsTruthy) continue;
            }
            items.Add(item);
        }

        bool noIteration = true;
        for (int i = 0; i < items.Count; i++)
        {
            loopScope.Set("loop", MapValue.Of(
                ("index", Value.Int(i + 1)), ("index0", Value.Int(i)),
                ("revindex", Value.Int(items.Count - i)), ("revindex0", Value.Int(items.Count - i - 1)),
                ("first", Value.Bool(i == 0)), ("last", Value.Bool(i == items.Count - 1)), ("length", Value.Int(items.Count)),
                ("previtem", i > 0 ? items[i - 1] : Value.Undefined), ("nextitem", i < items.Count - 1 ? items[i + 1] : Value.Undefined)));
            Bind(node.Target, items[i], loopScope);
            // An iteration's output counts only once it completes (break and continue drop it).
            var iteration = new StringBuilder();
            try
            {
                Execute(node.Body, loopScope, iteration);
            }
            catch (LoopControl control)
            {
                if (control.IsBreak) break;
                continue;
            }
            output.Append(iteration);
            noIteration = false;
        }
        if (noIteration) Execute(node.Else, loopScope, output);
    }

    private void CheckUnpack(Expr target, Value item)
    {
        if (target is not ListExpr names) return;
        if (item is not ListValue { IsTuple: false } list) throw Fail(target, $"cannot unpack {Article(item)} into {names.Items.Count} names");
        if (list.Items.Count != names.Items.Count)
            throw Fail(target, $"too {(names.Items.Count > list.Items.Count ? "few" : "many")} items to unpack ({list.Items.Count} into {names.Items.Count} names)");
    }

    private void Bind(Expr target, Value item, Scope scope)
    {
        if (target is NameExpr name)
        {
            scope.Set(name.Name, item);
            return;
        }
        var names = (ListExpr)target;
        var values = ((ListValue)item).Items;
        for (int i = 0; i < names.Items.Count; i++)
        {
            if (names.Items[i] is not NameExpr n) throw Fail(names.Items[i], "can only unpack into names");
            scope.Set(n.Name, values[i]);
        }
    }

    private void ExecuteSet(SetNode node, Scope scope)
    {
        var value = node.Value is not null ? Evaluate(node.Value, scope) : Value.Str(RenderBlock(node.Body, scope));
        switch (node.Target)
        {
            case NameExpr name:
                scope.Set(name.Name, value);
                break;
            case ListExpr { IsTuple: true } tuple:
                if (value is not ListValue list) throw Fail(node, $"cannot unpack {Article(value)} in set");
                if (list.Items.Count != tuple.Items.Count)
                    throw Fail(node, $"too {(tuple.Items.Count > list.Items.Count ? "few" : "many")} items to unpack in set");
                for (int i = 0; i < tuple.Items.Count; i++)
                {
                    if (tuple.Items[i] is not NameExpr n) throw Fail(tuple.Items[i], "can only unpack into names");
                    scope.Set(n.Name, list.Items[i]);
                }
                break;
            case MemberExpr member:
                var target = Evaluate(member.Object, scope);
                if (target is not MapValue { Kind: MapKind.Namespace } ns) throw Fail(node, $"cannot assign an attribute of {Article(target)}: only of a namespace()");
                if (member.Computed || member.Property is not NameExpr attribute) throw Fail(node, "a namespace attribute is assigned by name: ns.name = ...");
                ns.Entries[attribute.Name] = value;
                break;
            default:
                throw Fail(node, "cannot assign to this expression");
        }
    }

    private void DefineMacro(MacroNode node, Scope scope)
    {
        var special = SpecialMacroArguments(node.Parameters, node.Body);
        scope.Set(node.Name, new FunctionValue((args, callerScope) =>
        {
            var macroScope = new Scope(callerScope);
            BindMacroArguments($"'{node.Name}'", node.Parameters, special, args, macroScope);
            return Value.Str(RenderBlock(node.Body, macroScope));
        }));
    }

    private Value ExecuteCallBlock(CallBlockNode node, Scope scope)
    {
        var special = SpecialMacroArguments(node.CallerParameters, node.Body);
        var caller = new FunctionValue((args, _) =>
        {
            var callerScope = new Scope(scope);
            BindMacroArguments("caller", node.CallerParameters, special, args, callerScope);
            return Value.Str(RenderBlock(node.Body, callerScope));
        });
        var args = EvaluateArguments(node.Call.Arguments, scope);
        var function = Evaluate(node.Call.Callee, scope);
        if (function is not FunctionValue f) throw Fail(node, $"cannot call {Article(function)}");
        var callScope = new Scope(scope);
        callScope.Set("caller", caller);
        return Invoke(f, args, callScope, node);
    }

    private void BindMacroArguments(string name, List<Expr> parameters, (bool Kwargs, bool Varargs) special, Arguments args, Scope scope)
    {
        var keywords = new OrderedDictionary<string, Value>(args.Keywords, StringComparer.Ordinal);
        var pendingDefaults = new List<(string, Expr)>();
        for (int i = 0; i < parameters.Count; i++)
        {
            var (parameter, defaultValue) = parameters[i] switch
            {
                NameExpr n => (n.Name, (Expr?)null),
                KeywordArgumentExpr k => (k.Name, k.Value),
                var other => throw Fail(other, "expected a parameter name"),
            };
            Value? value = i < args.Positional.Count ? args.Positional[i] : null;
            if (value is null && keywords.Remove(parameter, out var named)) value = named;
            if (value is null && defaultValue is not null) pendingDefaults.Add((parameter, defaultValue));
            scope.Set(parameter, value ?? Value.Undefined);
        }
        if (special.Kwargs) scope.Set("kwargs", new MapValue(keywords));
        else if (keywords.Count > 0) throw new ChatTemplateException($"macro {name} takes no keyword argument '{keywords.GetAt(0).Key}'");
        if (special.Varargs) scope.Set("varargs", new ListValue([.. args.Positional.Skip(parameters.Count)]));
        else if (args.Positional.Count > parameters.Count) throw new ChatTemplateException($"macro {name} takes not more than {parameters.Count} argument(s)");
        foreach (var (parameter, defaultValue) in pendingDefaults) scope.Set(parameter, Evaluate(defaultValue, scope));
    }

    /// <summary>Whether a macro's body reads <c>kwargs</c> / <c>varargs</c> without declaring them (then it accepts extra arguments).</summary>
    private static (bool Kwargs, bool Varargs) SpecialMacroArguments(List<Expr> parameters, List<Node> body)
    {
        var declared = new HashSet<string>(parameters.Select(p => p switch { NameExpr n => n.Name, KeywordArgumentExpr k => k.Name, _ => "" }));
        var names = new HashSet<string>();
        void Visit(object? node)
        {
            switch (node)
            {
                case NameExpr n:
                    names.Add(n.Name);
                    break;
                case System.Collections.IEnumerable list and not string:
                    foreach (var item in list) Visit(item);
                    break;
                case System.Runtime.CompilerServices.ITuple tuple:
                    for (int i = 0; i < tuple.Length; i++) Visit(tuple[i]);
                    break;
                case Node other:
                    foreach (var property in other.GetType().GetProperties())
                    {
                        if (property.Name != "EqualityContract") Visit(property.GetValue(other));
                    }
                    break;
            }
        }
        Visit(body);
        return (names.Contains("kwargs") && !declared.Contains("kwargs"), names.Contains("varargs") && !declared.Contains("varargs"));
    }

    private Value Invoke(FunctionValue function, Arguments args, Scope scope, Node at)
    {
        if (++_callDepth > MaxCallDepth)
        {
            _callDepth = 0;
            throw Fail(at, $"calls nested more than {MaxCallDepth} deep (a macro calling itself without end?)");
        }
        try
        {
            return function.Call(args, scope);
        }
        finally
        {
            _callDepth = Math.Max(0, _callDepth - 1);
        }
    }

    private Value Evaluate(Expr? expression, Scope scope)
    {
        if (expression is null) return Value.Undefined;
        try
        {
            return EvaluateCore(expression, scope);
        }
        catch (ChatTemplateException e) when (e.Line is null && e is not TemplateRaisedException)
        {
            throw Fail(expression, e.Message);
        }
    }

    private Value EvaluateCore(Expr expression, Scope scope)
    {
        switch (expression)
        {
            case LiteralExpr literal:
                return literal.Value;
            case NameExpr name:
                return scope.Lookup(name.Name);
            case ListExpr list:
                return new ListValue([.. list.Items.Select(i => Evaluate(i, scope))], list.IsTuple);
            case DictExpr dict:
                {
                    var entries = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
                    foreach (var (keyExpr, valueExpr) in dict.Entries)
                    {
                        var key = Evaluate(keyExpr, scope);
                        if (key is not StringValue s) throw Fail(keyExpr, $"dict keys must be strings, not {Article(key)}");
                        entries[s.Value] = Evaluate(valueExpr, scope);
                    }
                    return new MapValue(entries);
                }
            case MemberExpr member:
                return EvaluateMember(member, scope);
            case CallExpr call:
                {
                    var args = EvaluateArguments(call.Arguments, scope);
                    var function = Evaluate(call.Callee, scope);
                    if (function is not FunctionValue f) throw Fail(call, $"cannot call {Article(function)}{(call.Callee is MemberExpr { Property: NameExpr p } ? $" ('{p.Name}')" : call.Callee is NameExpr n ? $" ('{n.Name}')" : "")}");
                    return Invoke(f, args, scope, call);
                }
            case UnaryExpr unary:
                return EvaluateUnary(unary, scope);
            case BinaryExpr binary:
                return EvaluateBinary(binary, scope);
            case FilterExpr filter:
                return ApplyFilter(Evaluate(filter.Operand, scope), filter.Filter, scope);
            case TestExpr test:
                {
                    var operand = Evaluate(test.Operand, scope);
                    if (!Tests.TryGetValue(test.Test, out var function)) throw Fail(test, $"unknown test '{test.Test}'");
                    bool result = function(operand, null);
                    return Value.Bool(test.Negate ? !result : result);
                }
            case SelectExpr select:
                return Evaluate(select.Condition, scope).IsTruthy ? Evaluate(select.Value, scope) : Value.Undefined;
            case TernaryExpr ternary:
                return Evaluate(ternary.Condition, scope).IsTruthy ? Evaluate(ternary.Then, scope) : Evaluate(ternary.Else, scope);
            case SliceExpr:
                throw Fail(expression, "a slice is only valid inside []");
            default:
                throw Fail(expression, $"cannot evaluate {expression.GetType().Name}");
        }
    }

    private Arguments EvaluateArguments(List<Expr> arguments, Scope scope)
    {
        var result = Arguments.Empty;
        foreach (var argument in arguments)
        {
            if (argument is SpreadExpr spread)
            {
                var value = Evaluate(spread.Value, scope);
                if (value is not ListValue list) throw Fail(argument, $"cannot unpack {Article(value)} with *");
                result.Positional.AddRange(list.Items);
            }
            else if (argument is not (KeywordArgumentExpr or KeywordSpreadExpr))
            {
                result.Positional.Add(Evaluate(argument, scope));
            }
        }
        foreach (var argument in arguments)
        {
            if (argument is KeywordArgumentExpr keyword)
            {
                AddKeyword(keyword.Name, Evaluate(keyword.Value, scope), argument);
            }
            else if (argument is KeywordSpreadExpr spread)
            {
                var value = Evaluate(spread.Value, scope);
                if (value is not MapValue { IsObject: true } map) throw Fail(argument, $"the argument after ** must be a mapping, not {Article(value)}");
                foreach (var (key, item) in map.Entries) AddKeyword(key, item, argument);
            }
        }
        return result;

        void AddKeyword(string name, Value value, Expr at)
        {
            if (!result.Keywords.TryAdd(name, value)) throw Fail(at, $"got multiple values for keyword argument '{name}'");
        }
    }

    private Value EvaluateMember(MemberExpr member, Scope scope)
    {
        var obj = Evaluate(member.Object, scope);
        Value property;
        if (member.Computed)
        {
            if (member.Property is SliceExpr slice) return EvaluateSlice(obj, slice, scope);
            property = Evaluate(member.Property, scope);
        }
        else
        {
            property = member.Property is LiteralExpr literal ? literal.Value : Value.Str(((NameExpr)member.Property).Name);
        }

        Value? value;
        switch (obj)
        {
            case MapValue map:
                if (property is not StringValue key) throw Fail(member, $"cannot look up {Article(property)} in a {map.TypeName}");
                value = map.Entries.TryGetValue(key.Value, out var entry) ? entry : map.IsObject ? DictMethod(map, key.Value) : null;
                break;
            case ListValue or StringValue:
                if (property is NumberValue { IsInteger: true } index)
                {
                    value = obj is ListValue list ? At(list.Items, index.Value) : At((StringValue)obj, index.Value);
                }
                else if (property is StringValue name)
                {
                    value = obj is StringValue s ? StringMethod(s, name.Value) : name.Value == "length" ? Value.Int(((ListValue)obj).Items.Count) : null;
                }
                else
                {
                    throw Fail(member, $"cannot index a {obj.TypeName} with {Article(property)}");
                }
                break;
            default:
                if (property is not StringValue) throw Fail(member, $"cannot look up {Article(property)} in {Article(obj)}");
                value = null;
                break;
        }
        return value ?? Value.Undefined;
    }

    private static Value? At(List<Value> items, double index)
    {
        long i = (long)index;
        if (i < 0) i += items.Count;
        return i >= 0 && i < items.Count ? items[(int)i] : null;
    }

    private static Value? At(StringValue s, double index)
    {
        long i = (long)index;
        if (i < 0) i += s.Value.Length;
        return i >= 0 && i < s.Value.Length ? Value.Str(s.Value[(int)i].ToString()) : null;
    }

    private Value EvaluateSlice(Value obj, SliceExpr slice, Scope scope)
    {
        if (obj is not (ListValue or StringValue)) throw Fail(slice, $"cannot slice {Article(obj)}");
        double? Bound(Expr? e, string what)
        {
            var v = Evaluate(e, scope);
            return v switch
            {
                UndefinedValue => null,
                NumberValue { IsInteger: true } n => n.Value,
                _ => throw Fail(slice, $"the slice {what} must be an integer, not {Article(v)}"),
            };
        }
        double? start = Bound(slice.Start, "start"), stop = Bound(slice.Stop, "stop"), step = Bound(slice.Step, "step");
        if (obj is ListValue list) return new ListValue(Slice(list.Items, start, stop, step));
        return Value.Str(string.Concat(Slice(CodePoints(((StringValue)obj).Value), start, stop, step)));
    }

    /// <summary>Python-style slicing as the oracle does it (with its one quirk: a stop of -1 with a negative step runs to the front).</summary>
    internal static List<T> Slice<T>(IReadOnlyList<T> items, double? start, double? stop, double? step)
    {
        double s = step ?? 1;
        int direction = Math.Sign(s);
        int n = items.Count;
        double from, to;
        if (direction >= 0)
        {
            from = start ?? 0;
            from = from < 0 ? Math.Max(n + from, 0) : Math.Min(from, n);
            to = stop ?? n;
            to = to < 0 ? Math.Max(n + to, 0) : Math.Min(to, n);
        }
        else
        {
            from = start ?? n - 1;
            from = from < 0 ? Math.Max(n + from, -1) : Math.Min(from, n - 1);
            to = stop ?? -1;
            to = to < -1 ? Math.Max(n + to, -1) : Math.Min(to, n - 1);
        }
        var result = new List<T>();
        for (double i = from; direction * i < direction * to; i += s) result.Add(items[(int)i]);
        return result;
    }

    /// <summary>A string's code points (a lone surrogate counts as one), as JavaScript's <c>Array.from(string)</c>.</summary>
    internal static List<string> CodePoints(string s)
    {
        var result = new List<string>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                result.Add(s.Substring(i, 2));
                i++;
            }
            else
            {
                result.Add(s[i].ToString());
            }
        }
        return result;
    }

    private Value EvaluateUnary(UnaryExpr unary, Scope scope)
    {
        var operand = Evaluate(unary.Operand, scope);
        if (unary.Operator == "not") return Value.Bool(!operand.IsTruthy);
        double sign = unary.Operator == "-" ? -1 : 1;
        return operand switch
        {
            NumberValue n => new NumberValue(sign * n.Value, n.IsInteger),
            BoolValue b => Value.Int(sign * (b.Value ? 1 : 0)),
            _ => throw Fail(unary, $"unary {unary.Operator} needs a number, not {Article(operand)}"),
        };
    }

    /// <summary>"a string", "an integer", "undefined", "none": for messages.</summary>
    internal static string Article(Value value) => value switch
    {
        UndefinedValue => "an undefined value",
        NoneValue => "none",
        NumberValue { IsInteger: true } => "an integer",
        _ => "a " + value.TypeName,
    };

    private ChatTemplateException Fail(Node node, string message)
    {
        var (line, column) = ChatTemplateException.LineAndColumn(_source, node.Position);
        return new ChatTemplateException(message, line, column);
    }
}
