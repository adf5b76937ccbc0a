using System.Collections;
using System.Globalization;
using System.Text.Json;

namespace eMoE.Model.Jinja;

/// <summary>Template values from .NET objects and JSON, as the oracle converts JavaScript values.</summary>
internal static class Values
{
    public static MapValue FromMessage(ChatMessage message) =>
        MapValue.Of(("role", Value.Str(message.Role)), ("content", message.Content is null ? Value.None : Value.Str(message.Content)));

    /// <summary>
    /// A JSON value as JavaScript's JSON.parse sees it: a number with an integral value is an
    /// integer (1.0 too), and an object lists integer-like keys first, in ascending order.
    /// </summary>
    public static Value FromJson(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return Value.Str(element.GetString()!);
            case JsonValueKind.Number:
                return Number(double.Parse(element.GetRawText(), NumberStyles.Float, CultureInfo.InvariantCulture));
            case JsonValueKind.True:
                return Value.True;
            case JsonValueKind.False:
                return Value.False;
            case JsonValueKind.Null:
                return Value.None;
            case JsonValueKind.Array:
                return new ListValue([.. element.EnumerateArray().Select(FromJson)]);
            case JsonValueKind.Object:
                var values = new Dictionary<string, Value>(StringComparer.Ordinal);
                var order = new List<string>();
                foreach (var property in element.EnumerateObject())
                {
                    if (!values.ContainsKey(property.Name)) order.Add(property.Name);
                    values[property.Name] = FromJson(property.Value);
                }
                var entries = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
                foreach (string key in order.Where(IsArrayIndex).OrderBy(k => uint.Parse(k, CultureInfo.InvariantCulture)).Concat(order.Where(k => !IsArrayIndex(k))))
                    entries[key] = values[key];
                return new MapValue(entries);
            default:
                throw new ArgumentException($"unexpected JSON {element.ValueKind}");
        }
    }

    // ECMAScript's array index: a canonical decimal integer below 2^32 - 1.
    private static bool IsArrayIndex(string key) =>
        key.Length is > 0 and <= 10 && key.All(char.IsAsciiDigit) && (key == "0" || key[0] != '0')
        && ulong.Parse(key, CultureInfo.InvariantCulture) < uint.MaxValue;

    private static NumberValue Number(double d) => new(d, double.IsFinite(d) && d % 1 == 0);

    /// <summary>A variable's value from .NET: null, strings, booleans, numbers, JSON, string-keyed dictionaries, sequences.</summary>
    public static Value FromObject(object? value, string name) => value switch
    {
        null => Value.None,
        Value v => v,
        string s => Value.Str(s),
        bool b => Value.Bool(b),
        char c => Value.Str(c.ToString()),
        sbyte or byte or short or ushort or int or uint or long or ulong => Value.Int(Convert.ToDouble(value, CultureInfo.InvariantCulture)),
        float or double or decimal => Number(Convert.ToDouble(value, CultureInfo.InvariantCulture)),
        JsonElement json => FromJson(json),
        JsonDocument document => FromJson(document.RootElement),
        ChatMessage message => FromMessage(message),
        IEnumerable<KeyValuePair<string, object?>> pairs => Map(pairs.Select(p => (p.Key, p.Value)), name),
        IDictionary dictionary => Map(dictionary.Keys.Cast<object>().Select(k => (k as string ?? throw Unsupported(name, value), dictionary[k])), name),
        IEnumerable items => new ListValue([.. items.Cast<object?>().Select(i => FromObject(i, name))]),
        _ => throw Unsupported(name, value),
    };

    private static MapValue Map(IEnumerable<(string Key, object? Value)> pairs, string name)
    {
        var entries = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
        foreach (var (key, item) in pairs) entries[key] = FromObject(item, name);
        return new MapValue(entries);
    }

    private static ArgumentException Unsupported(string name, object value) =>
        new($"template variable '{name}': cannot pass a {value.GetType().Name} (use strings, booleans, numbers, JSON, string-keyed dictionaries or sequences)");
}
