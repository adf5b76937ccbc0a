using System.Text;

namespace eMoE.Model.Jinja;

/// <summary>
/// A template value: undefined, none, a boolean, a number, a string, a list (or tuple), a mapping
/// (an object, a namespace, or the keyword arguments of a call) or a callable.
/// </summary>
internal abstract class Value
{
    /// <summary>The type's name in error messages.</summary>
    public abstract string TypeName { get; }

    /// <summary>Truthiness in <c>if</c>, <c>and</c>, <c>or</c>, <c>not</c>.</summary>
    public virtual bool IsTruthy => true;

    /// <summary>True for undefined and none: neither prints in a block.</summary>
    public virtual bool IsNullish => false;

    /// <summary>What <c>{{ value }}</c> prints (the oracle's <c>toString</c>).</summary>
    public abstract string Render();

    /// <summary>
    /// The string JavaScript makes of the oracle's underlying value, which <c>+</c> and <c>~</c>
    /// concatenate: a float 2.0 is "2", a list is its items' renderings joined by commas.
    /// </summary>
    public virtual string RawString() => Render();

    public static readonly UndefinedValue Undefined = UndefinedValue.Instance;
    public static readonly NoneValue None = NoneValue.Instance;
    public static readonly BoolValue True = new(true);
    public static readonly BoolValue False = new(false);

    public static BoolValue Bool(bool value) => value ? True : False;

    public static NumberValue Int(double value) => new(value, isInteger: true);

    public static NumberValue Float(double value) => new(value, isInteger: false);

    public static StringValue Str(string value) => new(value);
}

internal sealed class UndefinedValue : Value
{
    public static readonly UndefinedValue Instance = new();

    private UndefinedValue() { }

    public override string TypeName => "undefined";
    public override bool IsTruthy => false;
    public override bool IsNullish => true;
    public override string Render() => "undefined";
}

internal sealed class NoneValue : Value
{
    public static readonly NoneValue Instance = new();

    private NoneValue() { }

    public override string TypeName => "none";
    public override bool IsTruthy => false;
    public override bool IsNullish => true;
    public override string Render() => "null";
}

internal sealed class BoolValue(bool value) : Value
{
    public bool Value { get; } = value;
    public override string TypeName => "boolean";
    public override bool IsTruthy => Value;
    public override string Render() => Value ? "true" : "false";
}

/// <summary>A number; integers and floats are both doubles underneath, as in the oracle.</summary>
internal sealed class NumberValue(double value, bool isInteger) : Value
{
    public double Value { get; } = value;
    public bool IsInteger { get; } = isInteger;
    public override string TypeName => IsInteger ? "integer" : "float";
    public override bool IsTruthy => Value != 0 && !double.IsNaN(Value);
    public override string Render() => IsInteger ? Js.NumberToString(Value) : Js.FloatToString(Value);
    public override string RawString() => Js.NumberToString(Value);
}

internal sealed class StringValue(string value) : Value
{
    public string Value { get; } = value;
    public override string TypeName => "string";
    public override bool IsTruthy => Value.Length > 0;
    public override string Render() => Value;
}

internal sealed class ListValue(List<Value> items, bool isTuple = false) : Value
{
    public List<Value> Items { get; } = items;
    public bool IsTuple { get; } = isTuple;
    public override string TypeName => IsTuple ? "tuple" : "list";
    public override bool IsTruthy => Items.Count > 0;
    public override string Render() => Json.Serialize(this, JsonOptions.Default, undefinedAsNull: false);
    public override string RawString() => string.Join(",", Items.Select(i => i.Render()));
}

internal enum MapKind
{
    /// <summary>A dict: from JSON, a literal, <c>loop</c>.</summary>
    Object,

    /// <summary><c>namespace(...)</c>: the one mapping whose attributes <c>set</c> can assign.</summary>
    Namespace,

    /// <summary>The keyword arguments of a call, passed on to a callable as its last argument.</summary>
    Keywords,
}

internal sealed class MapValue(OrderedDictionary<string, Value> entries, MapKind kind = MapKind.Object) : Value
{
    public OrderedDictionary<string, Value> Entries { get; } = entries;
    public MapKind Kind { get; } = kind;

    /// <summary>Objects and keyword arguments are mappings (<c>is mapping</c>, filters, <c>in</c>); namespaces are not.</summary>
    public bool IsObject => Kind != MapKind.Namespace;

    public override string TypeName => Kind switch { MapKind.Namespace => "namespace", MapKind.Keywords => "keyword arguments", _ => "dict" };

    // The oracle's namespace wraps a JavaScript Map, which is always truthy.
    public override bool IsTruthy => Kind == MapKind.Namespace || Entries.Count > 0;
    public override string Render() => Json.Serialize(this, JsonOptions.Default, undefinedAsNull: false);
    public override string RawString() => "[object Map]";

    public Value Get(string key) => Entries.TryGetValue(key, out var v) ? v : Undefined;

    public static MapValue Of(params (string Key, Value Value)[] entries)
    {
        var map = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
        foreach (var (key, value) in entries) map[key] = value;
        return new MapValue(map);
    }
}

/// <summary>The arguments of a call: positional, then keyword.</summary>
internal sealed record Arguments(List<Value> Positional, OrderedDictionary<string, Value> Keywords)
{
    public static Arguments Empty => new([], new OrderedDictionary<string, Value>(StringComparer.Ordinal));

    /// <summary>The n-th positional argument, else the keyword argument <paramref name="name"/>, else null.</summary>
    public Value? Get(int position, string? name = null) =>
        position < Positional.Count ? Positional[position] : name is not null && Keywords.TryGetValue(name, out var v) ? v : null;
}

internal sealed class FunctionValue(Func<Arguments, Scope, Value> call) : Value
{
    public Func<Arguments, Scope, Value> Call { get; } = call;
    public override string TypeName => "function";
    public override string Render() => "function";
}

/// <summary>Options of tojson.</summary>
internal sealed record JsonOptions(int? Indent = null, bool EnsureAscii = false, bool SortKeys = false, string? ItemSeparator = null, string? KeySeparator = null)
{
    public static readonly JsonOptions Default = new();
}

/// <summary>tojson, and how lists and dicts print: the oracle's layout (", " and ": " unless indented).</summary>
internal static class Json
{
    public static string Serialize(Value value, JsonOptions options, bool undefinedAsNull)
    {
        var sb = new StringBuilder();
        Write(sb, value, options, 0, undefinedAsNull);
        return sb.ToString();
    }

    private static void Write(StringBuilder sb, Value value, JsonOptions o, int depth, bool undefinedAsNull)
    {
        string itemSeparator = o.ItemSeparator ?? (o.Indent is > 0 ? "," : ", ");
        string keySeparator = o.KeySeparator ?? ": ";
        switch (value)
        {
            case NoneValue:
                sb.Append("null");
                return;
            case UndefinedValue:
                sb.Append(undefinedAsNull ? "null" : "undefined");
                return;
            case BoolValue b:
                sb.Append(b.Value ? "true" : "false");
                return;
            case NumberValue n:
                sb.Append(Js.JsonNumber(n.Value));
                return;
            case StringValue s:
                sb.Append(o.EnsureAscii ? Js.AsciiSafe(Js.JsonString(s.Value)) : Js.JsonString(s.Value));
                return;
            case ListValue { IsTuple: true }:
                // As in the oracle, which has no JSON form for tuples.
                throw new ChatTemplateException("cannot convert a tuple to JSON (or print it)");
            case ListValue or MapValue:
                break;
            default:
                throw new ChatTemplateException($"cannot convert a {value.TypeName} to JSON");
        }

        string indent = o.Indent is > 0 ? new string(' ', o.Indent.Value) : "";
        string basePadding = "\n" + string.Concat(Enumerable.Repeat(indent, depth));
        string childPadding = basePadding + indent;
        bool pretty = o.Indent is > 0;
        if (value is ListValue list)
        {
            sb.Append('[');
            for (int i = 0; i < list.Items.Count; i++)
            {
                if (i > 0) sb.Append(itemSeparator);
                if (pretty) sb.Append(childPadding);
                Write(sb, list.Items[i], o, depth + 1, undefinedAsNull);
            }
            if (pretty && list.Items.Count > 0) sb.Append(basePadding);
            sb.Append(']');
            return;
        }

        var map = (MapValue)value;
        IEnumerable<KeyValuePair<string, Value>> entries = map.Entries;
        if (o.SortKeys) entries = entries.OrderBy(e => e.Key, StringComparer.InvariantCulture);
        sb.Append('{');
        bool first = true;
        foreach (var (key, item) in entries)
        {
            if (!first) sb.Append(itemSeparator);
            first = false;
            if (pretty) sb.Append(childPadding);
            sb.Append(o.EnsureAscii ? Js.AsciiSafe(Js.JsonString(key)) : Js.JsonString(key)).Append(keySeparator);
            Write(sb, item, o, depth + 1, undefinedAsNull);
        }
        if (pretty && map.Entries.Count > 0) sb.Append(basePadding);
        sb.Append('}');
    }
}
