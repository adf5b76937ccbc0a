using System.Globalization;
using System.Text.Json;

namespace eMoE.Server;

/// <summary>
/// Typed reads of a JSON object's fields; a field of the wrong type or out of range is a 400 naming
/// it (with its path: <c>messages[1].role</c>). Absent and null fields read as null. Fields nobody
/// reads are ignored.
/// </summary>
internal readonly struct JsonFields(JsonElement element, string path = "")
{
    public JsonElement Element => element;

    public string PathOf(string name) => path.Length == 0 ? name : $"{path}.{name}";

    public static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => "nothing",
    };

    /// <summary>The field's value, or null when absent or JSON null.</summary>
    public JsonElement? Get(string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind != JsonValueKind.Null ? value : null;

    public ApiException WrongType(string name, string expected, JsonElement value) =>
        ApiException.BadRequest($"'{PathOf(name)}' must be {expected}, got {Describe(value.ValueKind)}", PathOf(name), "invalid_type");

    public string? String(string name)
    {
        if (Get(name) is not { } v) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw WrongType(name, "a string", v);
    }

    public bool? Bool(string name)
    {
        if (Get(name) is not { } v) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw WrongType(name, "a boolean", v),
        };
    }

    /// <summary>An integer in [min, max]; a number with a fraction, or beyond the range, is refused.</summary>
    public long? Integer(string name, long min, long max)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number) throw WrongType(name, "an integer", v);
        if (!v.TryGetInt64(out long i))
        {
            double d = v.GetDouble();
            if (d != Math.Floor(d)) throw WrongType(name, "an integer", v);
            throw OutOfRange(name, min, max, v.GetRawText());
        }
        if (i < min || i > max) throw OutOfRange(name, min, max, v.GetRawText());
        return i;
    }

    /// <summary>Below the minimum of an open-ended range: "at least"; otherwise the whole range.</summary>
    private ApiException OutOfRange(string name, long min, long max, string got)
    {
        bool below = long.TryParse(got, NumberStyles.Integer, CultureInfo.InvariantCulture, out long value) && value < min;
        return ApiException.BadRequest(below && max >= int.MaxValue
            ? $"'{PathOf(name)}' must be at least {min}, got {got}"
            : $"'{PathOf(name)}' must be between {min} and {max}, got {got}", PathOf(name), "invalid_value");
    }

    /// <summary>A finite number; <paramref name="valid"/> checks its range, described by <paramref name="range"/>.</summary>
    public double? Number(string name, Func<double, bool> valid, string range)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number) throw WrongType(name, "a number", v);
        double d = v.GetDouble();
        if (!double.IsFinite(d) || !valid(d))
            throw ApiException.BadRequest($"'{PathOf(name)}' must be {range}, got {d.ToString(CultureInfo.InvariantCulture)}", PathOf(name), "invalid_value");
        return d;
    }

    /// <summary>A nested object's fields, or null when absent.</summary>
    public JsonFields? Object(string name)
    {
        if (Get(name) is not { } v) return null;
        return v.ValueKind == JsonValueKind.Object ? new JsonFields(v, PathOf(name)) : throw WrongType(name, "an object", v);
    }
}
