using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace eMoE.Model.Jinja;

internal sealed partial class Interpreter
{
    private void DefineGlobals(Scope globals)
    {
        globals.Set("true", Value.True);
        globals.Set("false", Value.False);
        globals.Set("none", Value.None);
        globals.Set("True", Value.True);
        globals.Set("False", Value.False);
        globals.Set("None", Value.None);
        globals.Set("namespace", new FunctionValue((args, _) => Namespace(args)));
        globals.Set("raise_exception", new FunctionValue((args, _) =>
            throw new TemplateRaisedException(args.Positional.Count == 0 || args.Positional[0] is UndefinedValue ? "" : args.Positional[0].RawString())));
        globals.Set("range", new FunctionValue((args, _) => Range(args)));
        globals.Set("strftime_now", new FunctionValue((args, _) =>
            args.Get(0) is StringValue format ? Value.Str(Strftime(_clock.GetLocalNow(), format.Value)) : throw new ChatTemplateException("strftime_now(format) needs a format string")));
    }

    private static MapValue Namespace(Arguments args)
    {
        if (args.Positional.Count > 1) throw new ChatTemplateException($"namespace() takes at most 1 positional argument, got {args.Positional.Count}");
        var entries = new OrderedDictionary<string, Value>(StringComparer.Ordinal);
        if (args.Positional.Count == 1)
        {
            switch (args.Positional[0])
            {
                case MapValue { IsObject: true } source:
                    foreach (var (key, value) in source.Entries) entries[key] = value;
                    break;
                case ListValue pairs:
                    foreach (var pair in pairs.Items)
                    {
                        List<Value>? kv = pair switch
                        {
                            ListValue l => l.Items,
                            StringValue s => [.. CodePoints(s.Value).Select(Value.Str)],
                            _ => null,
                        };
                        if (kv is not { Count: 2 }) throw new ChatTemplateException("namespace() expects a dict or a list of [key, value] pairs");
                        if (kv[0] is not StringValue key) throw new ChatTemplateException("namespace() keys must be strings");
                        entries[key.Value] = kv[1];
                    }
                    break;
                case var other:
                    throw new ChatTemplateException($"namespace() cannot take {Article(other)}");
            }
        }
        foreach (var (key, value) in args.Keywords) entries[key] = value;
        return new MapValue(entries, MapKind.Namespace);
    }

    private static ListValue Range(Arguments args)
    {
        var numbers = args.Positional.Select(a => a is NumberValue n ? n.Value : throw new ChatTemplateException($"range() takes integers, not {Article(a)}")).ToList();
        if (numbers.Count is 0 or > 3) throw new ChatTemplateException("range() takes 1 to 3 arguments");
        double start = numbers.Count == 1 ? 0 : numbers[0], stop = numbers.Count == 1 ? numbers[0] : numbers[1], step = numbers.Count == 3 ? numbers[2] : 1;
        if (step == 0) throw new ChatTemplateException("range() step must not be zero");
        var items = new List<Value>();
        for (double i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            items.Add(new NumberValue(i, i % 1 == 0));
            if (items.Count > 1_000_000) throw new ChatTemplateException("range() of more than a million items");
        }
        return new ListValue(items);
    }

    /// <summary>The oracle's strftime: %Y %m %d %b %B %H %M %% (English month names); other directives stay as they are.</summary>
    internal static string Strftime(DateTimeOffset now, string format) => StrftimeDirective().Replace(format, m => m.Value switch
    {
        "%Y" => now.Year.ToString(CultureInfo.InvariantCulture),
        "%m" => now.Month.ToString("00", CultureInfo.InvariantCulture),
        "%d" => now.Day.ToString("00", CultureInfo.InvariantCulture),
        "%b" => CultureInfo.InvariantCulture.DateTimeFormat.GetAbbreviatedMonthName(now.Month),
        "%B" => CultureInfo.InvariantCulture.DateTimeFormat.GetMonthName(now.Month),
        "%H" => now.Hour.ToString("00", CultureInfo.InvariantCulture),
        "%M" => now.Minute.ToString("00", CultureInfo.InvariantCulture),
        _ => "%",
    });

    [GeneratedRegex("%[YmdbBHM%]")]
    private static partial Regex StrftimeDirective();

    /// <summary>The tests of <c>x is name</c> (and of select/selectattr); the second argument is the test's argument, if any.</summary>
    private static readonly Dictionary<string, Func<Value, Value?, bool>> Tests = new(StringComparer.Ordinal)
    {
        ["boolean"] = (v, _) => v is BoolValue,
        ["callable"] = (v, _) => v is FunctionValue,
        ["odd"] = (v, _) => v is NumberValue { IsInteger: true } n ? n.Value % 2 != 0 : throw new ChatTemplateException($"cannot test odd on {Article(v)}"),
        ["even"] = (v, _) => v is NumberValue { IsInteger: true } n ? n.Value % 2 == 0 : throw new ChatTemplateException($"cannot test even on {Article(v)}"),
        ["false"] = (v, _) => v is BoolValue { Value: false },
        ["true"] = (v, _) => v is BoolValue { Value: true },
        ["none"] = (v, _) => v is NoneValue,
        ["string"] = (v, _) => v is StringValue,
        ["number"] = (v, _) => v is NumberValue,
        ["integer"] = (v, _) => v is NumberValue { IsInteger: true },
        ["iterable"] = (v, _) => v is ListValue { IsTuple: false } or StringValue,
        ["mapping"] = (v, _) => v is MapValue { IsObject: true },
        ["sequence"] = (v, _) => v is ListValue or MapValue { IsObject: true } or StringValue,
        ["lower"] = (v, _) => v is StringValue s && s.Value == s.Value.ToLowerInvariant(),
        ["upper"] = (v, _) => v is StringValue s && s.Value == s.Value.ToUpperInvariant(),
        ["defined"] = (v, _) => v is not UndefinedValue,
        ["undefined"] = (v, _) => v is UndefinedValue,
        ["equalto"] = (v, other) => StrictEquals(v, other ?? Value.Undefined),
        ["eq"] = (v, other) => StrictEquals(v, other ?? Value.Undefined),
    };

    /// <summary>A method or property of a string: <c>s.strip()</c>, <c>s.length</c>.</summary>
    private static Value? StringMethod(StringValue s, string name)
    {
        string v = s.Value;
        // upper/lower: .NET's invariant (simple) case mapping; JavaScript's full mapping differs for a
        // few characters ('ß'.upper() is "SS" there, "ß" here).
        return name switch
        {
            "upper" => Method(_ => Value.Str(v.ToUpperInvariant())),
            "lower" => Method(_ => Value.Str(v.ToLowerInvariant())),
            // As in the oracle, strip/lstrip/rstrip take white space only, whatever characters are passed.
            "strip" => Method(_ => Value.Str(Js.Trim(v))),
            "lstrip" => Method(_ => Value.Str(Js.TrimStart(v))),
            "rstrip" => Method(_ => Value.Str(Js.TrimEnd(v))),
            "title" => Method(_ => Value.Str(TitleCase(v))),
            "capitalize" => Method(_ => Value.Str(Capitalize(v))),
            "length" => Value.Int(v.Length),
            "startswith" => Method(args => Value.Bool(Affix(v, args, "startswith", (s1, p) => s1.StartsWith(p, StringComparison.Ordinal)))),
            "endswith" => Method(args => Value.Bool(Affix(v, args, "endswith", (s1, p) => s1.EndsWith(p, StringComparison.Ordinal)))),
            "split" => Method(args => Split(v, args)),
            "replace" => Method(args => Replace(v, args)),
            "format" => Method(args => Value.Str(Format(v, args))),
            _ => null,
        };
    }

    private static FunctionValue Method(Func<Arguments, Value> body) => new((args, _) => body(args));

    /// <summary>The oracle's title case: each ASCII word character after a non-word one upper-cased, the rest left as is.</summary>
    internal static string TitleCase(string s)
    {
        var chars = s.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
        {
            if (Js.IsWordChar(chars[i]) && (i == 0 || !Js.IsWordChar(chars[i - 1]))) chars[i] = char.ToUpperInvariant(chars[i]);
        }
        return new string(chars);
    }

    internal static string Capitalize(string s) => s.Length == 0 ? s : s[..1].ToUpperInvariant() + s[1..];

    private static bool Affix(string s, Arguments args, string name, Func<string, string, bool> test)
    {
        return args.Get(0) switch
        {
            null => throw new ChatTemplateException($"{name}() needs an argument"),
            StringValue p => test(s, p.Value),
            ListValue list => list.Items.Any(item => item is StringValue p ? test(s, p.Value) : throw new ChatTemplateException($"{name}() takes strings")),
            var other => throw new ChatTemplateException($"{name}() takes a string or a tuple of strings, not {Article(other)}"),
        };
    }

    /// <summary>Python's <c>str.split(sep=None, maxsplit=-1)</c>.</summary>
    private static ListValue Split(string s, Arguments args)
    {
        var sep = args.Get(0, "sep") ?? Value.None;
        var max = args.Get(1, "maxsplit") ?? Value.Int(-1);
        if (max is not NumberValue { IsInteger: true } maxNumber) throw new ChatTemplateException("split(): maxsplit must be an integer");
        int maxsplit = (int)maxNumber.Value;
        var parts = new List<string>();
        switch (sep)
        {
            case NoneValue:
                string text = Js.TrimStart(s);
                int i = 0;
                while (i < text.Length)
                {
                    while (i < text.Length && Js.IsSpace(text[i])) i++;
                    if (i >= text.Length) break;
                    int start = i;
                    while (i < text.Length && !Js.IsSpace(text[i])) i++;
                    if (maxsplit != -1 && parts.Count >= maxsplit)
                    {
                        parts.Add(text[start..]);
                        break;
                    }
                    parts.Add(text[start..i]);
                }
                break;
            case StringValue separator:
                if (separator.Value.Length == 0) throw new ChatTemplateException("split(): empty separator");
                parts.AddRange(s.Split(separator.Value));
                if (maxsplit != -1 && parts.Count > maxsplit)
                {
                    string rest = string.Join(separator.Value, parts.Skip(maxsplit));
                    parts.RemoveRange(maxsplit, parts.Count - maxsplit);
                    parts.Add(rest);
                }
                break;
            default:
                throw new ChatTemplateException($"split(): the separator must be a string or none, not {Article(sep)}");
        }
        return new ListValue([.. parts.Select(Value.Str)]);
    }

    /// <summary>Python's <c>str.replace(old, new, count=-1)</c>.</summary>
    private static StringValue Replace(string s, Arguments args)
    {
        if (args.Get(0) is not StringValue old || args.Get(1) is not StringValue replacement)
            throw new ChatTemplateException("replace() takes two strings");
        var countValue = args.Get(2, "count") ?? Value.None;
        if (countValue is not (NumberValue { IsInteger: true } or NoneValue)) throw new ChatTemplateException("replace(): count must be an integer or none");
        double count = countValue is NumberValue n ? n.Value : -1;
        if (count == 0) return Value.Str(s);
        double remaining = count < 0 ? double.PositiveInfinity : count;
        var sb = new StringBuilder();
        if (old.Value.Length == 0)
        {
            foreach (string codePoint in CodePoints(s))
            {
                if (remaining-- > 0) sb.Append(replacement.Value);
                sb.Append(codePoint);
            }
            if (remaining > 0) sb.Append(replacement.Value);
            return Value.Str(sb.ToString());
        }
        int at = 0;
        while (remaining > 0)
        {
            int found = s.IndexOf(old.Value, at, StringComparison.Ordinal);
            if (found < 0) break;
            sb.Append(s, at, found - at).Append(replacement.Value);
            at = found + old.Value.Length;
            remaining--;
        }
        return Value.Str(sb.Append(s, at, s.Length - at).ToString());
    }

    /// <summary>
    /// Python's <c>str.format</c> for <c>{}</c>, <c>{0}</c> and <c>{name}</c> fields and <c>{{ }}</c>
    /// escapes (no format specs). Not in @huggingface/jinja; Jinja2 has it.
    /// </summary>
    private static string Format(string format, Arguments args)
    {
        var sb = new StringBuilder();
        int auto = 0;
        for (int i = 0; i < format.Length; i++)
        {
            char c = format[i];
            if (c == '{' && i + 1 < format.Length && format[i + 1] == '{') { sb.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < format.Length && format[i + 1] == '}') { sb.Append('}'); i++; continue; }
            if (c == '}') throw new ChatTemplateException("format(): single '}' in the format string");
            if (c != '{')
            {
                sb.Append(c);
                continue;
            }
            int close = format.IndexOf('}', i + 1);
            if (close < 0) throw new ChatTemplateException("format(): '{' without '}'");
            string field = format[(i + 1)..close];
            if (field.Contains(':') || field.Contains('!')) throw new ChatTemplateException($"format(): format specs are not supported ('{{{field}}}')");
            Value? value = field.Length == 0 ? args.Get(auto++)
                : int.TryParse(field, NumberStyles.None, CultureInfo.InvariantCulture, out int index) ? args.Get(index)
                : args.Keywords.TryGetValue(field, out var named) ? named : null;
            if (value is null) throw new ChatTemplateException($"format(): no argument for '{{{field}}}'");
            sb.Append(value.Render());
            i = close;
        }
        return sb.ToString();
    }

    /// <summary>A method of a dict: get, items, keys, values, dictsort.</summary>
    private static Value? DictMethod(MapValue map, string name) => name switch
    {
        "get" => Method(args => args.Get(0) is StringValue key
            ? map.Entries.TryGetValue(key.Value, out var v) ? v : args.Get(1) ?? Value.None
            : throw new ChatTemplateException($"get(): the key must be a string, not {(args.Get(0) is { } k ? Article(k) : "missing")}")),
        "items" => Method(_ => Items(map)),
        "keys" => Method(_ => new ListValue([.. map.Entries.Keys.Select(Value.Str)])),
        "values" => Method(_ => new ListValue([.. map.Entries.Values])),
        "dictsort" => Method(args => DictSort(map, args)),
        _ => null,
    };

    private static ListValue Items(MapValue map) => new([.. map.Entries.Select(e => (Value)new ListValue([Value.Str(e.Key), e.Value]))]);

    private static ListValue DictSort(MapValue map, Arguments args)
    {
        bool caseSensitive = Flag(args.Get(0, "case_sensitive"), "case_sensitive");
        var by = args.Get(1, "by") ?? Value.Str("key");
        if (by is not StringValue { Value: "key" or "value" } byName) throw new ChatTemplateException("dictsort(): by must be 'key' or 'value'");
        bool reverse = Flag(args.Get(2, "reverse"), "reverse");
        int index = byName.Value == "key" ? 0 : 1;
        var items = Items(map).Items;
        var sorted = items.Order(Comparer<Value>.Create((a, b) =>
        {
            int c = Compare(((ListValue)a).Items[index], ((ListValue)b).Items[index], caseSensitive);
            return reverse ? -c : c;
        }));
        return new ListValue([.. sorted]);
    }

    private static bool Flag(Value? value, string name) => value switch
    {
        null => false,
        BoolValue b => b.Value,
        _ => throw new ChatTemplateException($"{name} must be a boolean, not {Article(value)}"),
    };
}
